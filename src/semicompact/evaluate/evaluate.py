"""Evaluate a saved model on a subset of a split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..artifacts import load_model
from ..data import SemiCompactDataModule, SplitManifest, make_split, open_source
from ..errors import ConfigError
from ..io import write_json
from .metrics import classification_metrics
from .predict import inference_device, predict_loader

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
    source = open_source(data, unlabelled=config.get("unlabelled") if data == config.get("data") else None)
    if split is None and (run_dir / "split.json").is_file() and data == config.get("data"):
        split = run_dir / "split.json"
    manifest = SplitManifest.load(split) if split else make_split(source, seed=0)
    manifest.check_source(source)
    if list(manifest.classes) != list(card.classes):
        raise ConfigError(
            f"the model's classes {card.classes} differ from the data's {manifest.classes}; "
            "evaluate on data with the same classes"
        )
    entries = [e for e in getattr(manifest, subset) if e[1] is not None]
    dm = SemiCompactDataModule(source, manifest, image_size=card.image_size, batch_size=batch_size)
    probs, targets = predict_loader(model, dm.loader_for(entries), inference_device())
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
