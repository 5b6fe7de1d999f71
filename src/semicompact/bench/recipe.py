"""A benchmark recipe: datasets x models x methods x seeds, read from YAML and expanded to runs.

The recipe is data only (``yaml.safe_load``). Paths are relative to the recipe's folder; ``${SHARED}``
is the ``shared`` folder beside the checkout (or ``$SEMICOMPACT_SHARED``) and any other ``${VAR}`` an
environment variable. Every problem is reported before the first run starts, naming the recipe, the
entry and the fix. Run ids are stable (``dataset__model__method__sSEED``) so that re-running, shards
and reports all agree on which folder holds which run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError, SemicompactError

TOP_KEYS = (
    "name",
    "description",
    "out",
    "datasets",
    "models",
    "methods",
    "seeds",
    "image_size",
    "epochs",
    "head_epochs",
    "train",
    "baseline",
    "budget",
    "compress",
    "profile",
)
BUDGET_KEYS = ("steps", "val_every", "early_stopping", "select")
MODEL_KEYS = ("name", "label", "pretrained", "weights", "small_input", "options")
DATASET_KEYS = ("name", "path", "unlabelled", "options")
METHOD_KEYS = ("name", "label", "options")
# options the grid itself sets for every run
GRID_OWNED = ("data", "out", "seed", "model", "progress")


@dataclass
class DatasetEntry:
    name: str
    path: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelEntry:
    label: str
    name: str
    family: str
    options: dict[str, Any] = field(default_factory=dict)  # TrainConfig keys (pretrained, small_input...)


@dataclass
class MethodEntry:
    label: str
    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class StepEntry:
    name: str
    options: dict[str, Any] = field(default_factory=dict)


#: TrainConfig keys that do not enter a run's fingerprint
SPEED_ONLY = ("progress", "num_workers", "channels_last")


@dataclass
class RunSpec:
    """One cell of the grid: everything needed to (re)start it, and the id of its folder."""

    id: str
    dataset: str
    model: str  # the model's label in the recipe
    model_name: str
    family: str
    method: str  # the method's label in the recipe
    method_name: str
    method_options: dict[str, Any]
    seed: int
    train: dict[str, Any]  # TrainConfig values without ``out``

    def fingerprint(self) -> str:
        """A hash of what the run computes; a folder made for another fingerprint is not reused.

        Settings that change how fast, not what, are left out (progress bars, loader workers, the
        memory layout: channels-last changes float rounding only, as a thread count does)."""
        text = json.dumps(
            {k: v for k, v in asdict(self).items() if k != "train"}
            | {"train": {k: v for k, v in self.train.items() if k not in SPEED_ONLY}},
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "fingerprint": self.fingerprint()}


@dataclass
class Recipe:
    path: Path
    name: str
    datasets: list[DatasetEntry]
    models: list[ModelEntry]
    methods: list[MethodEntry]
    seeds: list[int]
    train: dict[str, Any]
    baseline: str
    out: Path | None = None
    description: str = ""
    compress: list[StepEntry] = field(default_factory=list)
    profile: bool = True

    def runs(self) -> list[RunSpec]:
        """The grid in a fixed order (dataset, model, method, seed): shards and ids depend on it."""
        specs = []
        for d in self.datasets:
            for m in self.models:
                for meth in self.methods:
                    for seed in self.seeds:
                        train = {**self.train, **d.options, **m.options, "model": m.name, "seed": seed}
                        specs.append(
                            RunSpec(
                                id=run_id(d.name, m.label, meth.label, seed),
                                dataset=d.name,
                                model=m.label,
                                model_name=m.name,
                                family=m.family,
                                method=meth.label,
                                method_name=meth.name,
                                method_options=dict(meth.options),
                                seed=seed,
                                train={**train, "data": d.path},
                            )
                        )
        return specs

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "name": self.name,
            "description": self.description,
            "datasets": [asdict(d) for d in self.datasets],
            "models": [asdict(m) for m in self.models],
            "methods": [asdict(m) for m in self.methods],
            "seeds": self.seeds,
            "train": self.train,
            "baseline": self.baseline,
            "compress": [asdict(c) for c in self.compress],
            "profile": self.profile,
        }


def run_id(dataset: str, model: str, method: str, seed: int) -> str:
    return f"{_slug(dataset)}__{_slug(model)}__{_slug(method)}__s{seed}"


def _slug(text: str) -> str:
    """Letters, digits and ``._+-`` kept; ``__`` is reserved as the id's separator."""
    return re.sub(r"_{2,}", "_", re.sub(r"[^A-Za-z0-9._+-]+", "-", text)).strip("-_") or "x"


def shared_dir(start: Path) -> Path | None:
    """``$SEMICOMPACT_SHARED``, else the first ``shared`` folder beside the recipe or an ancestor."""
    env = os.environ.get("SEMICOMPACT_SHARED")
    if env:
        return Path(env)
    for folder in [start, *start.parents]:
        if (folder / "shared").is_dir():
            return folder / "shared"
    return None


class _Reader:
    """Parses one recipe file; every error names the file and the entry."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.root = path.parent

    def fail(self, where: str, message: str) -> ConfigError:
        return ConfigError(
            f"recipe '{self.path}': {where}: {message}" if where else f"recipe '{self.path}': {message}"
        )

    def expand(self, where: str, value: str) -> str:
        def sub(match: re.Match[str]) -> str:
            var = match.group(1)
            if var == "SHARED":
                shared = shared_dir(self.root.resolve())
                if shared is None:
                    raise self.fail(
                        where, "${SHARED} is not found; set SEMICOMPACT_SHARED to the shared folder"
                    )
                return str(shared)
            if var not in os.environ:
                raise self.fail(where, f"environment variable ${{{var}}} is not set")
            return os.environ[var]

        return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", sub, value)

    def resolve(self, where: str, value: Any, must_exist: bool = True) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(where, f"expected a path, got {value!r}")
        p = Path(self.expand(where, value)).expanduser()
        p = p if p.is_absolute() else (self.root / p)
        p = Path(os.path.normpath(p))
        if must_exist and not p.exists():
            raise self.fail(
                where, f"'{p}' does not exist; fix the path (relative paths start at the recipe's folder)"
            )
        return str(p)

    def mapping(self, where: str, value: Any, keys: tuple[str, ...], short: str) -> dict[str, Any]:
        """An entry given as a bare string means ``{short: value}``."""
        if isinstance(value, str):
            return {short: value}
        if not isinstance(value, dict):
            raise self.fail(where, f"expected a name or a mapping, got {value!r}")
        unknown = sorted(set(value) - set(keys))
        if unknown:
            raise self.fail(where, f"unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(keys)}")
        if short not in value:
            raise self.fail(where, f"missing '{short}'")
        return value

    def options(self, where: str, value: Any) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(f"{where}.options", f"expected a mapping of option: value, got {value!r}")
        owned = sorted(set(value) & set(GRID_OWNED))
        if owned:
            raise self.fail(f"{where}.options", f"{', '.join(owned)} are set by the grid; remove them")
        return dict(value)


def _unique(reader: _Reader, section: str, labels: list[str]) -> None:
    seen = set()
    for label in labels:
        if label in seen:
            raise reader.fail(section, f"'{label}' appears twice; give each entry a distinct 'label'")
        seen.add(label)


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe; raises :class:`ConfigError` with the exact problem."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"recipe '{p}' not found")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot parse recipe '{p}': {err}") from None
    return parse_recipe(raw, p)


def parse_recipe(raw: Any, path: Path) -> Recipe:
    reader = _Reader(path)
    if not isinstance(raw, dict):
        raise reader.fail("", "must hold a mapping with datasets, models, methods and seeds")
    unknown = sorted(set(raw) - set(TOP_KEYS))
    if unknown:
        raise reader.fail("", f"unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(TOP_KEYS)}")
    for key in ("datasets", "models", "methods"):
        if not isinstance(raw.get(key), list) or not raw[key]:
            raise reader.fail(key, "must be a non-empty list")

    datasets = []
    for i, entry in enumerate(raw["datasets"]):
        where = f"datasets[{i}]"
        item = reader.mapping(where, entry, DATASET_KEYS, "path")
        data_path = reader.resolve(f"{where}.path", item["path"])
        opts = reader.options(where, item.get("options"))
        if item.get("unlabelled"):
            opts["unlabelled"] = reader.resolve(f"{where}.unlabelled", item["unlabelled"])
        name = str(item.get("name") or Path(data_path).stem)
        datasets.append(DatasetEntry(name=name, path=data_path, options=opts))
    _unique(reader, "datasets", [d.name for d in datasets])

    from ..models import get_spec

    models = []
    for i, entry in enumerate(raw["models"]):
        where = f"models[{i}]"
        item = reader.mapping(where, entry, MODEL_KEYS, "name")
        try:
            spec = get_spec(str(item["name"]))
        except SemicompactError as err:
            raise reader.fail(where, str(err)) from None
        opts = reader.options(where, item.get("options"))
        for key in ("pretrained", "small_input"):
            if key in item:
                if not isinstance(item[key], bool):
                    raise reader.fail(f"{where}.{key}", f"must be true or false, got {item[key]!r}")
                opts[key] = item[key]
        if item.get("weights"):
            opts["weights"] = reader.resolve(f"{where}.weights", item["weights"])
        models.append(
            ModelEntry(
                label=str(item.get("label") or spec.name), name=spec.name, family=spec.family, options=opts
            )
        )
    _unique(reader, "models", [m.label for m in models])

    from ..methods import list_methods, method_class

    methods = []
    for i, entry in enumerate(raw["methods"]):
        where = f"methods[{i}]"
        item = reader.mapping(where, entry, METHOD_KEYS, "name")
        name = str(item["name"])
        if name not in list_methods():
            raise reader.fail(where, f"unknown method '{name}'; available: {', '.join(list_methods())}")
        opts = item.get("options") or {}
        if not isinstance(opts, dict):
            raise reader.fail(f"{where}.options", f"expected a mapping of option: value, got {opts!r}")
        try:
            method_class(name)(**opts)
        except SemicompactError as err:
            raise reader.fail(where, str(err)) from None
        methods.append(MethodEntry(label=str(item.get("label") or name), name=name, options=dict(opts)))
    _unique(reader, "methods", [m.label for m in methods])

    seeds = raw.get("seeds", [0])
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
        or len(set(seeds)) != len(seeds)
    ):
        raise reader.fail("seeds", f"must be a non-empty list of distinct integers >= 0, got {seeds!r}")

    train = reader.options("train", raw.get("train"))
    for key in ("image_size", "epochs", "head_epochs"):
        if key in raw:
            train[key] = raw[key]
    train.update(_budget(reader, raw.get("budget")))
    train.setdefault("progress", False)
    for key in ("weights", "split", "unlabelled"):
        if isinstance(train.get(key), str):
            train[key] = reader.resolve(f"train.{key}", train[key])

    baseline = str(
        raw.get("baseline")
        or ("supervised" if any(m.label == "supervised" for m in methods) else methods[0].label)
    )
    if baseline not in {m.label for m in methods}:
        raise reader.fail(
            "baseline",
            f"'{baseline}' is not one of the recipe's methods ({', '.join(m.label for m in methods)})",
        )

    compress = []
    for i, entry in enumerate(raw.get("compress") or []):
        where = f"compress[{i}]"
        item = reader.mapping(where, entry, ("name", "options"), "name")
        step = StepEntry(name=str(item["name"]), options=dict(item.get("options") or {}))
        from ..compress import get_compressor, list_compressors
        from .steps import KEYWORDS

        if step.name not in list_compressors():
            raise reader.fail(
                where, f"unknown compression '{step.name}'; available: {', '.join(list_compressors())}"
            )
        try:
            get_compressor(step.name, **{k: v for k, v in step.options.items() if k not in KEYWORDS})
        except SemicompactError as err:
            raise reader.fail(where, str(err)) from None
        compress.append(step)

    out = raw.get("out")
    recipe = Recipe(
        path=path,
        name=str(raw.get("name") or path.stem),
        description=str(raw.get("description") or ""),
        datasets=datasets,
        models=models,
        methods=methods,
        seeds=list(seeds),
        train=train,
        baseline=baseline,
        out=Path(reader.resolve("out", out, must_exist=False)) if out else None,
        compress=compress,
        profile=bool(raw.get("profile", True)),
    )
    _check_train_configs(reader, recipe)
    return recipe


def _budget(reader: _Reader, value: Any) -> dict[str, Any]:
    """``budget: {steps: N}``: every run of the grid takes exactly N optimiser steps.

    A fixed schedule (no early stopping, so that no method stops early and spends fewer steps) is
    the default of a budget; ``early_stopping: true`` turns it back on, ``select`` chooses the kept
    model (best on validation or last), ``val_every`` the validation interval in steps.
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise reader.fail("budget", f"expected a mapping such as {{steps: 600}}, got {value!r}")
    unknown = sorted(set(value) - set(BUDGET_KEYS))
    if unknown:
        raise reader.fail(
            "budget", f"unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(BUDGET_KEYS)}"
        )
    steps = value.get("steps")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise reader.fail("budget.steps", f"must be a whole number of optimiser steps >= 1, got {steps!r}")
    out: dict[str, Any] = {"max_steps": steps, "early_stopping": bool(value.get("early_stopping", False))}
    for key in ("val_every", "select"):
        if key in value:
            out[key] = value[key]
    return out


def _check_train_configs(reader: _Reader, recipe: Recipe) -> None:
    """Build every distinct training configuration once, so bad values fail before any run starts."""
    from ..training.config import TrainConfig

    seen: set[str] = set()
    for spec in recipe.runs():
        key = json.dumps(spec.train, sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        try:
            TrainConfig.from_dict({**spec.train, "out": "unused"})
        except SemicompactError as err:
            raise reader.fail(f"run {spec.id}", str(err)) from None


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"I/N"`` (0 <= I < N) to ``(I, N)``; None is the whole grid ``(0, 1)``."""
    if text is None:
        return 0, 1
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 0 <= int(match.group(1)) < int(match.group(2)):
        raise ConfigError(f"--shard must look like I/N with 0 <= I < N (e.g. 0/4), got '{text}'")
    return int(match.group(1)), int(match.group(2))


def slurm_shard(env: dict[str, str] | None = None) -> str | None:
    """``I/N`` of a SLURM job array task (``--array=A-B``), or None outside one."""
    env = dict(os.environ) if env is None else env
    try:
        task, count = int(env["SLURM_ARRAY_TASK_ID"]), int(env["SLURM_ARRAY_TASK_COUNT"])
    except (KeyError, ValueError):
        return None
    return f"{task - int(env.get('SLURM_ARRAY_TASK_MIN', '0') or 0)}/{count}"


def shard_runs(runs: list[RunSpec], shard: tuple[int, int]) -> list[RunSpec]:
    """Round-robin slice: disjoint, together the whole grid, and each shard gets every model."""
    index, count = shard
    return [run for i, run in enumerate(runs) if i % count == index]
