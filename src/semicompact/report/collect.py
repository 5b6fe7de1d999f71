"""Read a benchmark folder (or one run folder) into one row per run.

Nothing is recomputed: each row comes from the files a run left behind (``bench_spec.json``,
``bench_result.json``, ``metrics.json``, ``efficiency.json``, ``profile.json``, ``compress/*``).
Shards merge for free: the report reads whatever run folders exist.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError

METRICS = ("f1", "macro_f1", "accuracy")


@dataclass
class Collection:
    root: Path
    kind: str  # "bench" or "run"
    runs: list[dict[str, Any]]  # one row per run (every status)
    recipe: dict[str, Any] = field(default_factory=dict)
    baseline: str = "supervised"
    compress: list[dict[str, Any]] = field(default_factory=list)  # one row per compressed model

    @property
    def done(self) -> list[dict[str, Any]]:
        return [r for r in self.runs if r["status"] == "done" and r.get("f1") is not None]

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.runs if r["status"] == "failed"]


def _json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _family(model: str) -> str:
    try:
        from ..models import get_spec

        return get_spec(model).family
    except Exception:
        return "timm"


def _run_row(folder: Path, spec: dict[str, Any]) -> dict[str, Any]:
    result = _json(folder / "bench_result.json")
    metrics = _json(folder / "metrics.json")
    efficiency = _json(folder / "efficiency.json")
    profile = _json(folder / "profile.json")
    test = metrics.get("test", {}) if isinstance(metrics.get("test"), dict) else {}
    status = result.get("status") or ("done" if "test" in metrics else "unfinished")
    latency = profile.get("latency_ms", efficiency.get("latency_ms"))
    if isinstance(latency, dict):  # a profile may hold several statistics
        latency = latency.get("median", latency.get("mean"))
    return {
        "id": spec.get("id", folder.name),
        "dataset": spec.get("dataset", ""),
        "model": spec.get("model", metrics.get("model", "")),
        "model_name": spec.get("model_name", metrics.get("model", "")),
        "family": spec.get("family") or _family(str(metrics.get("model", ""))),
        "method": spec.get("method", metrics.get("method", "supervised")),
        "seed": spec.get("seed", 0),
        "status": status,
        "error": result.get("error"),
        "f1": test.get("f1"),
        "macro_f1": test.get("macro_f1"),
        "accuracy": test.get("accuracy"),
        "train_time_per_epoch_s": metrics.get("train_time_per_epoch_s"),
        "elapsed_s": result.get("elapsed_s"),
        "size_mb": efficiency.get("size_mb"),
        "params_m": efficiency.get("params_m"),
        "latency_ms": latency,
        "run_dir": str(folder),
        "environment": environment_label(result.get("environment")),
        "pseudo_selected": _pseudo_selected(metrics),
        **_cost(metrics),
    }


COST_KEYS = (
    "optimizer_steps",
    "teacher_steps",
    "total_steps",
    "labelled_images_seen",
    "unlabelled_images_seen",
    "wall_time_s",
    "teacher_wall_time_s",
    "val_images",
    "val_source",
)


def _cost(metrics: dict[str, Any]) -> dict[str, Any]:
    """A run's training cost (``metrics.json`` ``cost``); None for runs from before it was recorded."""
    cost = metrics.get("cost") if isinstance(metrics.get("cost"), dict) else {}
    return {key: cost.get(key) for key in COST_KEYS}


def _pseudo_selected(metrics: dict[str, Any]) -> int | None:
    """Pseudo-labels a self-training run kept (None for methods without pseudo-labels)."""
    summary = metrics.get("pseudo_labels")
    selected = summary.get("selected") if isinstance(summary, dict) else None
    return int(selected) if isinstance(selected, (int, float)) else None


def environment_label(env: Any) -> str | None:
    """A short name for a recorded environment (library versions, CPU, platform), or None if not
    recorded. The platform is part of it because the same versions on another machine can give
    different numbers."""
    if not isinstance(env, dict):
        return None
    packages = env.get("packages") or {}
    names = ("torch", "timm", "lightning", "kornia")
    versions = ", ".join(f"{n} {packages[n]}" for n in names if packages.get(n))
    cpu = env.get("cpu", "?")
    if env.get("cpu_capability"):
        cpu = f"{cpu} {env['cpu_capability']}"
    return f"{versions}; {cpu}, {env.get('torch_threads', '?')} threads; {env.get('platform', '?')}"


def _compress_rows(row: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for path in sorted(Path(row["run_dir"]).glob("compress/*/metrics.json")):
        m = _json(path)
        test = m.get("test", {})
        sizes = m.get("size_bytes", {})
        rows.append(
            {
                "id": row["id"],
                "dataset": row["dataset"],
                "model": row["model"],
                "method": row["method"],
                "seed": row["seed"],
                "compression": m.get("method", path.parent.name),
                "float_macro_f1": test.get("float", {}).get("macro_f1"),
                "compressed_macro_f1": test.get("compressed", {}).get("macro_f1"),
                "float_mb": sizes.get("float", 0) / 1e6 if sizes.get("float") else None,
                "compressed_mb": sizes.get("compressed", 0) / 1e6 if sizes.get("compressed") else None,
                "size_ratio": m.get("size_ratio"),
            }
        )
    return rows


def collect(path: str | Path) -> Collection:
    """A benchmark folder (``bench.json``) or a single run folder (``metrics.json``)."""
    root = Path(path)
    if (root / "bench.json").is_file():
        bench = _json(root / "bench.json")
        recipe = bench.get("recipe", {})
        wanted = bench.get("runs")
        runs = []
        for folder in sorted((root / "runs").glob("*")):
            spec = _json(folder / "bench_spec.json")
            if not spec or (wanted is not None and spec.get("id") not in wanted):
                continue
            runs.append(_run_row(folder, spec))
        known = {r["id"] for r in runs}
        for run_id in wanted or []:
            if run_id not in known:
                runs.append({"id": run_id, "status": "not started"})
        collection = Collection(root, "bench", runs, recipe, recipe.get("baseline", "supervised"))
    elif (root / "metrics.json").is_file() or (root / "config.json").is_file():
        config = _json(root / "config.json")
        spec = {
            "id": root.name,
            "dataset": Path(str(config.get("data", ""))).stem,
            "model": config.get("model", ""),
            "model_name": config.get("model", ""),
            "seed": config.get("seed", 0),
        }
        collection = Collection(root, "run", [_run_row(root, spec)])
    else:
        raise ConfigError(
            f"'{root}' is neither a benchmark folder (bench.json) nor a run folder (metrics.json); "
            "give the --out folder of `semicompact bench` or `semicompact train`"
        )
    collection.compress = [c for r in collection.done for c in _compress_rows(r)]
    return collection
