"""Silence library messages the user cannot act on (no heavy import here)."""

from __future__ import annotations

import logging
import warnings


def quiet_libraries() -> None:
    """Lightning's info lines (accelerators found, product tips, "Loading `train_dataloader`..."), its
    warning about modules in eval mode (frozen teachers and batch-norm layers are meant to be) and
    about a non-empty checkpoint folder (a resumed run's own checkpoints)."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
