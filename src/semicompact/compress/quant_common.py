"""Shared pieces of int8 quantization: calibration data, PT2E export/quantizer, saving.

PyTorch int8 goes through torchao's PT2E flow (``torch.export`` graph + X86InductorQuantizer);
``torch.ao.quantization`` is deprecated and not used. The quantized graph predicts in eager mode
with reference (de)quantize ops; real int8 speed on CPU comes from ``torch.compile`` (inductor) or,
for deployment, from the ONNX int8 file (``export/onnx.py``), which is what ``profile`` measures.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, ModelError

CALIBRATION_SOURCES = ("train", "unlabelled", "both")


def calibration_batches(dm: Any, method: str, source: str, n_images: int) -> list[torch.Tensor]:
    """Up to ``n_images`` float [0, 1] images (no augmentation) from the run's training data ``dm``."""
    if source not in CALIBRATION_SOURCES:
        raise ConfigError(f"--option calibration={source}: use one of {', '.join(CALIBRATION_SOURCES)}")
    if n_images < 1:
        raise ConfigError(f"--option calib_images={n_images}: use at least 1")
    if dm is None:
        raise ConfigError(
            f"{method} needs training images to calibrate the int8 ranges: give a run folder or --data"
        )
    loaders = []
    if source in ("train", "both"):
        loaders.append(dm.loader_for(dm.manifest.labelled))
    if source in ("unlabelled", "both"):
        if not dm.manifest.unlabelled:
            raise ConfigError(
                f"{method} calibration={source}: the data has no unlabelled images; use calibration=train"
            )
        loaders.append(dm.loader_for(dm.manifest.unlabelled))
    batches: list[torch.Tensor] = []
    per_source = max(1, n_images // len(loaders))
    for loader in loaders:
        seen = 0
        for x, _ in loader:
            if seen >= per_source:
                break
            x = x[: per_source - seen]
            if x.shape[0]:
                batches.append(x.float().div_(255.0))
                seen += x.shape[0]
    if not batches:
        raise ConfigError(f"--method {method}: no calibration images could be read from the run's data")
    return batches


def numpy_batches(batches: list[torch.Tensor]) -> list[np.ndarray]:
    return [b.numpy() for b in batches]


HELD_OUT_IMAGES = 512


def held_out_batches(dm: Any, method: str, n_images: int = HELD_OUT_IMAGES) -> list[np.ndarray] | None:
    """Up to ``n_images`` of the run's unlabelled pool (None without one): the images int8 candidates
    are judged on, since the training images the model fitted overstate its int8 agreement."""
    if dm is None or not dm.manifest.unlabelled:
        return None
    return numpy_batches(calibration_batches(dm, method, "unlabelled", n_images))


def no_inplace(model: nn.Module) -> nn.Module:
    """Turn off in-place activations (exported graphs with observers on in-place ops misbehave)."""
    for m in model.modules():
        if hasattr(m, "inplace") and isinstance(m.inplace, bool):
            m.inplace = False
    return model


def guard_zero_bn_gamma(model: nn.Module, eps: float = 1e-6) -> int:
    """QAT folds BN as ``conv * gamma / sigma`` then divides by it: a gamma of exactly 0 (timm's
    zero-init of the last BN in a block, untouched by training) would give 0/0. Nudge those to ``eps``."""
    count = 0
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None:
                zero = m.weight == 0
                count += int(zero.sum())
                m.weight[zero] = eps
    return count


def export_graph(model: nn.Module, image_size: int, batch: int = 4) -> torch.fx.GraphModule:
    """``torch.export`` the model with a dynamic batch dimension; one clear error when it cannot."""
    example = (torch.rand(batch, 3, image_size, image_size),)
    try:
        batch_dim = torch.export.Dim("batch", min=1, max=65536)
        return torch.export.export(model, example, dynamic_shapes=({0: batch_dim},)).module()
    except Exception as error:
        first = (str(error).strip().splitlines() or [""])[0][:300]
        raise ModelError(
            f"model cannot be captured by torch.export for int8 quantization: {type(error).__name__}: {first}"
        ) from error


def quiet_torchao() -> None:
    """torchao 0.18 logs a deprecation warning from torch's pytree registry on import; hide it."""
    import logging

    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)


def x86_quantizer(is_qat: bool = False) -> Any:
    """torchao's X86 inductor quantizer: int8 per-channel weights, uint8 per-tensor activations."""
    quiet_torchao()
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq

    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config(is_qat=is_qat))
    return quantizer


def drop_unused_attributes(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """After convert, the float weights stay as attributes although the graph reads the int8 copies:
    delete every parameter/buffer no ``get_attr`` node uses, so the saved file holds int8 only."""
    gm.graph.eliminate_dead_code()
    used = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    for name, _ in itertools.chain(list(gm.named_parameters()), list(gm.named_buffers())):
        if name not in used and not any(u.startswith(name + ".") for u in used):
            owner_name, _, attr = name.rpartition(".")
            owner = gm.get_submodule(owner_name) if owner_name else gm
            delattr(owner, attr)
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm


def save_pt2(gm: nn.Module, card: Any, path: Path, **extra: Any) -> Path:
    """``torch.export.save`` the quantized graph (int8 weights) with the model card in extra files."""
    from ..io import atomic_open

    example = (torch.rand(2, 3, card.image_size, card.image_size),)
    batch_dim = torch.export.Dim("batch", min=1, max=65536)
    program = torch.export.export(gm, example, dynamic_shapes=({0: batch_dim},))
    with atomic_open(path, "wb") as fh:
        torch.export.save(program, fh, extra_files=card_extra(card, **extra))
    return path


def card_extra(card: Any, **extra: Any) -> dict[str, str]:
    from ..export.metadata import card_metadata

    return {"semicompact.json": json.dumps(card_metadata(card, **extra))}


class ExportedModule(nn.Module):
    """A PT2E graph behind a normal module: ``train()``/``eval()`` switch the graph's BN/dropout
    patterns (exported graphs refuse the usual recursive ``train()``), so Lightning can fine-tune it."""

    def __init__(self, gm: torch.fx.GraphModule) -> None:
        super().__init__()
        self.gm = gm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gm(x)

    def train(self, mode: bool = True) -> ExportedModule:
        from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train

        (move_exported_model_to_train if mode else move_exported_model_to_eval)(self.gm)
        for module in self.modules():
            module.training = mode  # flags only (observers keep observing; Lightning checks them)
        return self


def load_int8_pt2(path: str | Path) -> tuple[nn.Module, dict[str, str]]:
    """Load a ``model_int8.pt2`` written by ptq/qat: (module, metadata). The quantized ops live in
    torchao, which must be imported before ``torch.export.load`` can resolve them."""
    quiet_torchao()
    import torchao.quantization.pt2e  # noqa: F401  (registers quantized_decomposed ops)

    extra = {"semicompact.json": ""}
    program = torch.export.load(str(path), extra_files=extra)
    return ExportedModule(program.module()), json.loads(extra["semicompact.json"] or "{}")
