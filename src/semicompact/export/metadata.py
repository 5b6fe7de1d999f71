"""The metadata every exported file carries (plain JSON strings; no torch import here).

The same keys go into ONNX ``metadata_props`` and TorchScript ``_extra_files``, so a deployed file
alone says which classes it predicts, which input size it wants and how it normalises.
"""

from __future__ import annotations

import json
from dataclasses import asdict, is_dataclass
from typing import Any

INPUT_NAME = "images"
OUTPUT_NAME = "logits"
INPUT_DOC = "float32 RGB images in [0, 1], NCHW; normalisation (mean/std) is inside the model"


def card_metadata(card: Any, **extra: Any) -> dict[str, str]:
    """String key/values from a ModelCard (``semicompact`` holds the whole card as JSON)."""
    values = asdict(card) if is_dataclass(card) else dict(card)
    meta = {
        "semicompact": json.dumps(values),
        "model": str(values["model"]),
        "classes": json.dumps(list(values["classes"])),
        "image_size": str(values["image_size"]),
        "mean": json.dumps(list(values["mean"])),
        "std": json.dumps(list(values["std"])),
        "input": INPUT_DOC,
    }
    meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in extra.items()})
    return meta


def card_from_metadata(meta: dict[str, str]) -> dict[str, Any]:
    """The card values (model, classes, image_size, small_input, mean, std) from exported metadata."""
    return json.loads(meta["semicompact"])
