"""Shared helpers for the compression tests (imported, not a conftest: other test files live here too)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from semicompact.artifacts import ModelCard
from semicompact.compress import CompressionContext
from semicompact.models import create_model

CLASSES = ["binucleate", "elongated_nucleus", "granular", "round_nucleus"]
_CACHE: dict[Any, Any] = {}


def card_for(name: str, small_input: bool = True, image_size: int = 32) -> ModelCard:
    return ModelCard(model=name, classes=list(CLASSES), image_size=image_size, small_input=small_input)


def tiny_model(name: str = "test_resnet", small_input: bool = True, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model(name, num_classes=4, small_input=small_input).eval()


def make_ctx(model: torch.nn.Module, out_dir: Path, **kw: Any) -> CompressionContext:
    card = kw.pop("card", None) or card_for(model.name, model.small_input)
    return CompressionContext(model=model, card=card, out_dir=Path(out_dir), **kw)


def cells_datamodule(cells_dir: Path, n_labelled: int = 20) -> Any:
    from semicompact.data import SemiCompactDataModule, make_split, open_source

    key = ("dm", str(cells_dir), n_labelled)
    if key not in _CACHE:
        source = open_source(cells_dir)
        _CACHE[key] = SemiCompactDataModule(
            source, make_split(source, n_labelled=n_labelled, seed=0), image_size=32, batch_size=16
        )
    return _CACHE[key]


def accuracy(model: torch.nn.Module, dm: Any) -> float:
    from semicompact.evaluate.predict import predict_loader

    probs, targets = predict_loader(model.eval(), dm.test_dataloader(), "cpu")
    return float((probs.argmax(1) == targets).float().mean())


def trained_mobilenet(cells_dir: Path) -> tuple[torch.nn.Module, Any]:
    """Pretrained MobileNetV2 (small input) fine-tuned 3 epochs on 30 labelled cells per class (~8 s);
    cached for the whole session. Test accuracy is about 0.85."""
    from semicompact.compress.finetune import finetune

    key = ("mobilenet", str(cells_dir))
    if key not in _CACHE:
        torch.manual_seed(0)
        dm = cells_datamodule(cells_dir, n_labelled=30)
        model = create_model("mobilenetv2_100", num_classes=4, small_input=True, pretrained=True)
        finetune(model, dm, epochs=3, lr=1e-3, seed=0)
        _CACHE[key] = (model.eval(), dm)
    return _CACHE[key]


def logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)
