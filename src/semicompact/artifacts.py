"""Trained models on disk: safetensors weights plus the metadata needed to use them.

Safetensors holds tensors only (no pickle, nothing executes on load); the metadata (model name,
classes, input size, normalisation) travels inside the same file so that one file is a usable model.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save

from .errors import ModelError
from .io import write_bytes
from .models import Classifier, create_model


@dataclass
class ModelCard:
    """What a user of the file must know: which network, which classes, which input."""

    model: str
    classes: list[str]
    image_size: int
    small_input: bool = False
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)

    def to_metadata(self) -> dict[str, str]:
        return {"semicompact": json.dumps(asdict(self))}

    @classmethod
    def from_metadata(cls, meta: dict[str, str] | None, path: Path) -> ModelCard:
        try:
            values = json.loads((meta or {})["semicompact"])
            return cls(**values)
        except (KeyError, TypeError, json.JSONDecodeError) as err:
            raise ModelError(
                f"'{path}' has no semicompact metadata ({err}); it was not written by semicompact save_model"
            ) from None


def save_model(path: str | Path, model: Classifier, card: ModelCard) -> None:
    """Write ``model`` and ``card`` to one safetensors file, atomically."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    write_bytes(path, st_save(tensors, metadata=card.to_metadata()))


def model_file(path: str | Path) -> Path:
    """The model file of ``path``: itself, a folder's ``best.safetensors``, or a folder's one ``.scdc``."""
    p = Path(path)
    if p.is_dir():
        compressed = sorted(p.glob("*.scdc"))
        p = (
            compressed[0]
            if len(compressed) == 1 and not (p / "best.safetensors").is_file()
            else p / "best.safetensors"
        )
    if not p.is_file():
        raise ModelError(
            f"model file '{p}' not found; give a run folder, its best.safetensors or a .scdc file"
        )
    return p


def load_model(path: str | Path) -> tuple[Classifier, ModelCard]:
    """Rebuild the network described by the file's card and load its weights (eval mode).

    ``path`` is a run folder (its ``best.safetensors``), a ``.safetensors`` file, or a Deep
    Compression ``.scdc`` file / the ``compress`` folder holding one (decoded to the float model).
    """
    p = model_file(path)
    if p.suffix.lower() == ".scdc":
        from .compress.deep_compression import load_deep_compressed

        return load_deep_compressed(p)
    try:
        with safe_open(str(p), framework="pt") as fh:
            meta = fh.metadata()
            tensors = {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelError(
            f"'{p}' is not a valid safetensors model file ({err}); it may be truncated"
        ) from None
    card = ModelCard.from_metadata(meta, p)
    model = create_model(card.model, num_classes=len(card.classes), small_input=card.small_input)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        raise ModelError(
            f"weights in '{p}' do not fit model {card.model}: {str(err).splitlines()[0]}"
        ) from None
    return model.eval(), card
