"""Checks of command-line paths before PyTorch and Lightning are imported.

Importing them takes 6-19 s (more on a busy machine); a mistyped path must fail at once, with the
same one-line message the library gives later.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError, ModelError


def check_train_paths(params: dict[str, Any]) -> None:
    """DATA, --unlabelled, --split, --weights and --config of `train` / `ssl` exist."""
    data = params.get("data")
    if data is not None and not Path(data).exists():
        raise DataError(
            f"data path '{data}' does not exist: check the path (a folder, a .npz or a .csv file)"
        )
    unlabelled = params.get("unlabelled")
    if unlabelled is not None and not Path(unlabelled).is_dir():
        raise DataError(f"unlabelled folder '{unlabelled}' does not exist: check the --unlabelled path")
    split = params.get("split")
    if split is not None and not Path(split).is_file():
        raise DataError(f"split file '{split}' does not exist: run semicompact split first")
    weights = params.get("weights")
    if weights is not None and not Path(weights).is_file():
        raise ModelError(f"weights file '{weights}' not found; check the path given to --weights.")
    config = params.get("config")
    if config is not None and not Path(config).is_file():
        raise ConfigError(f"configuration file '{config}' not found")


def check_model_path(path: Path) -> None:
    """A model given to `evaluate` / `predict` exists (a run folder, a model file)."""
    if not Path(path).exists():
        raise ModelError(
            f"model file '{path}' not found; give a run folder, its best.safetensors, "
            "a .scdc or an .onnx file"
        )
