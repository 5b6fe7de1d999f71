"""Evaluate a saved model on a subset of a split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console

from ..artifacts import load_model
from ..data import SemiCompactDataModule, SplitManifest, make_split, open_source
from ..errors import ConfigError
from ..io import write_json
from ..progress import iter_progress
from ..training.config import TrainConfig
from .metrics import classification_metrics
from .predict import inference_device, predict_loader

err = Console(stderr=True, soft_wrap=True, highlight=False)

SUBSETS = ("test", "val", "labelled", "unlabelled")


def evaluate_model(
    model_path: str | Path,
    data: str | Path | None = None,
    split: str | Path | None = None,
    subset: str = "test",
    batch_size: int = 64,
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Metrics of ``model_path`` on ``subset``; the run's own data and split are the defaults."""
    if subset not in SUBSETS:
        raise ConfigError(f"--subset must be one of {', '.join(SUBSETS)}, got '{subset}'")
    model, card = load_model(model_path)
    run_dir = _run_dir_of(Path(model_path))
    run_config = run_dir / "config.json"
    config: dict[str, Any] = json.loads(run_config.read_text()) if run_config.is_file() else {}
    if data is None:
        if "data" not in config:
            raise ConfigError(f"no dataset given and '{run_dir}' has no config.json naming one; pass DATA")
        data = config["data"]
    own_data = "data" in config and Path(str(data)).resolve() == Path(str(config["data"])).resolve()
    source = open_source(data, unlabelled=config.get("unlabelled") if own_data else None)
    if split is None and (run_dir / "split.json").is_file() and own_data:
        split = run_dir / "split.json"
    manifest = SplitManifest.load(split) if split else _rebuilt_split(source, run_dir, config, own_data, data)
    manifest.check_source(source)
    if list(manifest.classes) != list(card.classes):
        raise ConfigError(
            f"the model's classes {card.classes} differ from the data's {manifest.classes}; "
            "evaluate on data with the same classes"
        )
    entries = [e for e in getattr(manifest, subset) if e[1] is not None]
    dm = SemiCompactDataModule(source, manifest, image_size=card.image_size, batch_size=batch_size)
    loader = dm.loader_for(entries)
    batches = iter_progress(loader, len(loader), f"evaluate ({subset}, batches)")
    probs, targets = predict_loader(model, batches, inference_device())
    metrics = classification_metrics(probs, targets, card.classes) if len(targets) else {"n": 0}
    if out:
        write_json(out, metrics)
    return metrics


def _run_dir_of(model_path: Path) -> Path:
    """The training run behind a model: its folder, or for a ``compress`` output the run it came from."""
    folder = model_path if model_path.is_dir() else model_path.parent
    if not (folder / "config.json").is_file() and (folder / "metrics.json").is_file():
        try:
            source = json.loads((folder / "metrics.json").read_text(encoding="utf-8")).get("source")
        except (OSError, ValueError, AttributeError):
            source = None
        if isinstance(source, str) and (Path(source).parent / "config.json").is_file():
            return Path(source).parent
    return folder


def _rebuilt_split(
    source: Any, run_dir: Path, config: dict[str, Any], own_data: bool, data: str | Path
) -> SplitManifest:
    """No split given and none stored for this data: rebuild one, and say so (the test images of a
    rebuilt split are the run's only if the data and the split options are unchanged)."""
    if own_data:
        options = TrainConfig.from_dict(config)
        if options.split:
            err.print(
                f"note: '{run_dir}' has no split.json; evaluating on the split it was given, "
                f"'{options.split}'"
            )
            return SplitManifest.load(options.split)
        err.print(
            f"note: '{run_dir}' has no split.json; evaluating on a split rebuilt from its config.json "
            f"(seed {options.seed}, {options.n_labelled} labelled per class): the same images only if "
            "the data did not change since training; pass --split to choose"
        )
        from ..training.run import split_from_config

        return split_from_config(options, source)
    err.print(
        f"note: no --split given for '{data}'; evaluating on a split made with seed 0 and the "
        "default options (the paper's protocol); pass --split to choose"
    )
    return make_split(source, seed=0)
