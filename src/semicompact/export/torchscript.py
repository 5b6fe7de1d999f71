"""TorchScript export (traced) with the model card in ``_extra_files``, for C++/mobile runtimes."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelError
from ..io import atomic_open
from .metadata import card_metadata

EXTRA_FILE = "semicompact.json"


def export_torchscript(model: nn.Module, card: Any, path: str | Path) -> Path:
    """Trace ``model`` on a random batch and save it (atomically) with the card metadata."""
    import json

    example = torch.rand(2, 3, card.image_size, card.image_size)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(model.eval(), example)
    except Exception as error:
        first = (str(error).strip().splitlines() or [""])[0][:300]
        raise ModelError(
            f"model {card.model} cannot be traced to TorchScript: {type(error).__name__}: {first}"
        ) from error
    extra = {EXTRA_FILE: json.dumps(card_metadata(card, precision="fp32"))}
    with atomic_open(path, "wb") as fh, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(traced, fh, _extra_files=extra)
    return Path(path)


def load_torchscript(path: str | Path) -> tuple[torch.jit.ScriptModule, dict[str, str]]:
    """The scripted module and its metadata."""
    import json

    extra = {EXTRA_FILE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path), _extra_files=extra)
    return module, json.loads(extra[EXTRA_FILE] or "{}")
