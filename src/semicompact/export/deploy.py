"""``semicompact deploy``: the most accurate deployable variant of trained runs within a budget.

For every run (a run folder, or every run under a bench folder) and every variant that applies
(fp32 and int8 ONNX; 25 % and 50 % structured pruning, fp32 and int8; low-rank), the variant is
built once and its macro-F1 measured on the run's test images (validation when it has no test
split) with onnxruntime; results are cached in ``OUT/variants/`` so an interrupted search resumes
where it stopped. Latency is then measured for all variants together, interleaved, on this CPU
(batch 1, ``threads``), so that load from other processes hits them alike. The most accurate variant
within ``max_latency_ms`` (and ``max_size_mb``) is written as ``OUT/model.onnx`` with its model card
(``model_card.json``, ``MODEL_CARD.md``), the table of every variant (``deploy.json``) and an
accuracy-latency Pareto plot (``pareto.png``). An impossible budget is one line naming the fastest
variant.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..io import write_json, write_text

VARIANTS = ("fp32", "int8", "prune25", "prune25-int8", "prune50", "prune50-int8", "lowrank")
_PRUNE = {"prune25": 0.25, "prune50": 0.5}


def find_runs(sources: list[Path]) -> list[Path]:
    """Run folders among ``sources``: each is a run, or a folder (e.g. a bench result) holding runs."""
    runs: list[Path] = []
    for source in sources:
        if not source.exists():
            raise ConfigError(f"'{source}' does not exist; give run folders or a bench folder holding runs")
        if _is_run(source):
            runs.append(source)
            continue
        found = sorted(p.parent for p in source.rglob("best.safetensors") if _is_run(p.parent))
        if not found:
            raise ConfigError(
                f"'{source}' holds no trained run (a folder with best.safetensors, config.json, split.json)"
            )
        runs.extend(found)
    return list(dict.fromkeys(runs))


def _is_run(path: Path) -> bool:
    return all((path / name).is_file() for name in ("best.safetensors", "config.json", "split.json"))


def _variant_id(run: Path, variant: str) -> str:
    return f"{run.resolve().parent.name}__{run.name}__{variant}".replace("/", "_")


def build_variant(
    run: Path,
    variant: str,
    folder: Path,
    *,
    target: str,
    finetune_epochs: int,
    kd_alpha: float,
    max_test: int | None,
    seed: int = 0,
) -> dict[str, Any]:
    """Build one variant's ONNX file in ``folder`` and measure its macro-F1 (cached in result.json)."""
    import tempfile

    from ..artifacts import load_model
    from ..compress.quant_common import calibration_batches, held_out_batches, numpy_batches
    from ..compress.run import evaluate_module, run_compression, test_entries
    from ..training.run import load_run_data
    from .int8 import choose_int8
    from .onnx import OrtModule, export_onnx, staged_file

    cached = folder / "result.json"
    if cached.is_file():
        return json.loads(cached.read_text(encoding="utf-8"))
    start = time.perf_counter()
    model, card = load_model(run / "best.safetensors")
    dm = load_run_data(run)
    base = variant.removesuffix("-int8")
    notes: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as work:
        if base in _PRUNE or base == "lowrank":
            method, options = ("prune", {"ratio": _PRUNE[base]}) if base in _PRUNE else ("lowrank", {})
            result = run_compression(
                method,
                run,
                Path(work) / "compressed",
                options,
                finetune_epochs=finetune_epochs,
                kd_alpha=kd_alpha if finetune_epochs else 0.0,
                evaluate=False,
                datamodule=dm,
                seed=seed,
            )
            model = result["module"].eval()
            notes.update(method=method, options=options, finetune_epochs=finetune_epochs, kd_alpha=kd_alpha)
        fp32 = export_onnx(model, card, Path(work) / "fp32.onnx", deploy_variant=variant)
        path = folder / "model.onnx"
        folder.mkdir(parents=True, exist_ok=True)
        if variant.endswith("int8"):
            calib = numpy_batches(calibration_batches(dm, "deploy", "train", 256))
            notes["int8_choice"] = choose_int8(
                fp32,
                path,
                calib,
                target=target,
                agreement_batches=held_out_batches(dm, "deploy"),
                agreement_source="the run's unlabelled pool",
            )
        else:
            with staged_file(path, ".onnx") as tmp:
                shutil.copyfile(fp32, tmp)
    entries = test_entries(dm, max_test, seed)
    subset = "test"
    if not entries:
        entries, subset = [e for e in dm.manifest.val if e[1] is not None], "validation"
    if not entries:
        raise ConfigError(f"run '{run}' has no labelled test or validation images to measure macro-F1 on")
    metrics = evaluate_module(OrtModule(path, threads=1), dm.loader_for(entries), list(card.classes))
    result = {
        "id": folder.name,
        "run": str(run),
        "model": card.model,
        "image_size": card.image_size,
        "variant": variant,
        "file": str(path),
        "size_bytes": path.stat().st_size,
        "subset": subset,
        "macro_f1": metrics["macro_f1"],
        "accuracy": metrics["accuracy"],
        "n": metrics["n"],
        "build_seconds": round(time.perf_counter() - start, 1),
        "card": asdict(card),
        "notes": notes,
    }
    write_json(cached, result)
    return result


def measure_latency(results: list[dict[str, Any]], threads: int, runs: int, warmup: int = 3) -> None:
    """Batch-1 latency of every variant's file, interleaved in one pass (adds ``latency_ms``)."""
    import numpy as np

    from .onnx_predict import make_session
    from .timing import time_interleaved

    fns = {}
    for r in results:
        session = make_session(r["file"], threads, spin=threads == 1)
        x = np.random.default_rng(0).random((1, 3, r["image_size"], r["image_size"]), dtype=np.float32)
        fns[r["id"]] = lambda s=session, x=x: s.run(None, {"images": x})
    stats = time_interleaved(fns, runs, warmup)
    for r in results:
        r["latency_ms"] = stats[r["id"]]["median_ms"]
        r["latency_p90_ms"] = stats[r["id"]]["p90_ms"]


def pareto_front(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Variants no other variant beats on both latency and macro-F1, fastest first."""
    front, best = [], -1.0
    for r in sorted(results, key=lambda r: (r["latency_ms"], -r["macro_f1"])):
        if r["macro_f1"] > best:
            front.append(r)
            best = r["macro_f1"]
    return front


def pick(
    results: list[dict[str, Any]], max_latency_ms: float, max_size_mb: float | None
) -> dict[str, Any] | None:
    """The most accurate variant within the budget (ties: the faster), or None."""
    fits = [
        r
        for r in results
        if r["latency_ms"] <= max_latency_ms and (max_size_mb is None or r["size_bytes"] <= max_size_mb * 1e6)
    ]
    return max(fits, key=lambda r: (r["macro_f1"], -r["latency_ms"])) if fits else None


def deploy_search(
    sources: list[Path],
    out: Path,
    max_latency_ms: float,
    *,
    max_size_mb: float | None = None,
    target: str = "auto",
    variants: tuple[str, ...] = VARIANTS,
    threads: int = 1,
    runs: int = 30,
    finetune_epochs: int = 2,
    kd_alpha: float = 0.5,
    max_test: int | None = None,
    log: Any = print,
) -> dict[str, Any]:
    """Build, measure and pick (see the module docstring); returns the summary written to deploy.json."""
    from .onnx import staged_file
    from .targets import resolve_target

    if max_latency_ms <= 0:
        raise ConfigError(f"--max-latency-ms {max_latency_ms}: use a positive budget in milliseconds")
    if max_size_mb is not None and max_size_mb <= 0:
        raise ConfigError(f"--max-size-mb {max_size_mb}: use a positive size in MB")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise ConfigError(f"--variants {','.join(variants)}: use one or more of {', '.join(VARIANTS)}")
    if threads < 1 or runs < 1:
        raise ConfigError("--threads and --runs must be at least 1")
    spec, _, how = resolve_target(target)
    runs_found = find_runs(sources)
    results = []
    for run in runs_found:
        for variant in variants:
            folder = out / "variants" / _variant_id(run, variant)
            r = build_variant(
                run,
                variant,
                folder,
                target=target,
                finetune_epochs=finetune_epochs,
                kd_alpha=kd_alpha,
                max_test=max_test,
            )
            log(f"{run.name} {variant}: macro-F1 {r['macro_f1']:.4f} on {r['n']} {r['subset']} images")
            results.append(r)
    measure_latency(results, threads, runs)
    chosen = pick(results, max_latency_ms, max_size_mb)
    front = pareto_front(results)
    summary = {
        "budget": {"max_latency_ms": max_latency_ms, "max_size_mb": max_size_mb},
        "target": spec.name,
        "target_how": how,
        "threads": threads,
        "latency": f"onnxruntime, batch 1, median of {runs} interleaved runs on this CPU",
        "variants": results,
        "pareto": [r["id"] for r in front],
        "chosen": chosen["id"] if chosen else None,
    }
    write_json(out / "deploy.json", summary)
    plot_pareto(results, front, chosen, max_latency_ms, out / "pareto.png")
    if chosen is None:
        fastest = min(results, key=lambda r: r["latency_ms"])
        size = f" and --max-size-mb {max_size_mb:g}" if max_size_mb is not None else ""
        raise ConfigError(
            f"no variant meets --max-latency-ms {max_latency_ms:g}{size} on this CPU: the fastest is "
            f"{fastest['id']} at {fastest['latency_ms']:.2f} ms ({fastest['size_bytes'] / 1e6:.2f} MB); "
            f"raise the budget (all variants in {out / 'deploy.json'})"
        )
    with staged_file(out / "model.onnx", ".onnx") as tmp:
        shutil.copyfile(chosen["file"], tmp)
    card = {
        **chosen["card"],
        "variant": chosen["variant"],
        "source_run": chosen["run"],
        "macro_f1": chosen["macro_f1"],
        "accuracy": chosen["accuracy"],
        "measured_on": f"{chosen['n']} {chosen['subset']} images",
        "latency_ms": chosen["latency_ms"],
        "threads": threads,
        "size_bytes": chosen["size_bytes"],
        "target": spec.name,
        "budget": summary["budget"],
        "int8_choice": chosen["notes"].get("int8_choice"),
    }
    write_json(out / "model_card.json", card)
    write_text(out / "MODEL_CARD.md", model_card_markdown(card, results, chosen))
    return summary


def model_card_markdown(card: dict[str, Any], results: list[dict[str, Any]], chosen: dict[str, Any]) -> str:
    lines = [
        f"# {card['model']} ({card['variant']}), chosen by `semicompact deploy`",
        "",
        f"- budget: {card['budget']['max_latency_ms']:g} ms"
        + (f", {card['budget']['max_size_mb']:g} MB" if card["budget"]["max_size_mb"] else "")
        + f" on {card['target']}, {card['threads']} thread(s), batch 1",
        f"- macro-F1 {card['macro_f1']:.4f}, accuracy {card['accuracy']:.4f} on {card['measured_on']}",
        f"- latency {card['latency_ms']:.2f} ms, file {card['size_bytes'] / 1e6:.2f} MB",
        f"- input: {card['image_size']} px RGB in [0, 1]; classes: {', '.join(card['classes'])}",
        f"- from run `{card['source_run']}`",
        "",
        "| variant | run | macro-F1 | latency ms | size MB |",
        "|---|---|---|---|---|",
    ]
    for r in sorted(results, key=lambda r: r["latency_ms"]):
        mark = " **(chosen)**" if r is chosen else ""
        lines.append(
            f"| {r['variant']}{mark} | {Path(r['run']).name} | {r['macro_f1']:.4f} | {r['latency_ms']:.2f} | "
            f"{r['size_bytes'] / 1e6:.2f} |"
        )
    return "\n".join(lines) + "\n"


def plot_pareto(
    results: list[dict[str, Any]],
    front: list[dict[str, Any]],
    chosen: dict[str, Any] | None,
    budget_ms: float,
    path: Path,
) -> None:
    """Macro-F1 against latency for every variant, the Pareto front joined, the budget as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io import atomic_open

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        ax.scatter(r["latency_ms"], 100 * r["macro_f1"], color="tab:blue", s=18)
        ax.annotate(
            f"{Path(r['run']).name}:{r['variant']}", (r["latency_ms"], 100 * r["macro_f1"]), fontsize=6
        )
    ax.plot(
        [r["latency_ms"] for r in front],
        [100 * r["macro_f1"] for r in front],
        color="tab:orange",
        label="Pareto",
    )
    ax.axvline(budget_ms, color="tab:red", linestyle="--", label=f"budget {budget_ms:g} ms")
    if chosen:
        ax.scatter(chosen["latency_ms"], 100 * chosen["macro_f1"], marker="*", s=180, color="tab:red")
    ax.set_xlabel("latency per image, ms (batch 1, this CPU)")
    ax.set_ylabel("macro-F1 (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=120)
    plt.close(fig)
