"""XNOR-Net (Rastegari et al., ECCV 2016): binary weights and activations for the inner convolutions.

Every ungrouped convolution except the network's first one (which sees the image) becomes an
:class:`XNORConv2d`: its weight is ``alpha * sign(W)`` with ``alpha`` the mean ``|W|`` of each output
channel, its input is ``sign(x)`` scaled by ``K`` (the mean ``|x|`` over channels, averaged over each
kernel window), and gradients pass through ``sign`` by the straight-through estimator (kept where
``|x| <= 1``). The classifier head stays in float, as in the paper; depthwise/grouped convolutions stay
in float too (one channel per group leaves nothing to binarise usefully).

``sign`` maps ``x > 0`` to +1 and everything else to -1: after a ReLU it records which units fire.
The file stores each binary layer's signs packed 8 per byte (``np.packbits``, ``ceil(n/8)`` bytes)
plus its float ``alpha``; all other tensors stay float32. :func:`load_xnor` rebuilds the network.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors.torch import save as st_save
from torch import nn
from torch.nn import functional as F

from ..errors import ConfigError, ModelError
from ..io import write_bytes
from .base import CompressedModel, CompressionContext, Compressor, register_compressor
from .prune import read_safetensors

STRUCTURE_KEY = "semicompact_xnor"


class SignSTE(torch.autograd.Function):
    """``+1 if x > 0 else -1``; backward: the straight-through estimator ``grad * 1{|x| <= 1}``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.where(x > 0, 1.0, -1.0).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype)


def binary_sign(x: torch.Tensor) -> torch.Tensor:
    return SignSTE.apply(x)


class XNORConv2d(nn.Conv2d):
    """A convolution on binarised inputs and weights; same parameters (and state-dict keys) as Conv2d."""

    def __init__(self, *args: Any, act_scale: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.act_scale = act_scale

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, act_scale: bool = True) -> XNORConv2d:
        new = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
            act_scale=act_scale,
        )
        new.load_state_dict(conv.state_dict())
        return new

    def alpha(self) -> torch.Tensor:
        """Per-output-channel scale: the mean absolute weight (the paper's optimal alpha).

        Averaged in float64 so that a weight rebuilt as ``alpha * sign`` gives back exactly ``alpha``:
        a loaded model then binarises bit-identically (a 1e-8 drift would flip activation signs)."""
        return self.weight.abs().double().mean(dim=(1, 2, 3)).to(self.weight.dtype)

    def binary_weight(self) -> torch.Tensor:
        return self.alpha().view(-1, 1, 1, 1) * binary_sign(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._conv_forward(binary_sign(x), self.binary_weight(), self.bias)
        if self.act_scale:
            # K: mean |x| over channels, averaged over each kernel window (same stride/padding)
            a = x.abs().mean(dim=1, keepdim=True)
            box = torch.full((1, 1, *self.kernel_size), 1.0 / float(np.prod(self.kernel_size)), dtype=x.dtype)
            k = F.conv2d(
                a, box.to(x.device), stride=self.stride, padding=self.padding, dilation=self.dilation
            )
            if self.bias is not None:
                bias = self.bias.view(1, -1, 1, 1)
                out = (out - bias) * k + bias
            else:
                out = out * k
        return out


@register_compressor("xnor")
class XNOR(Compressor):
    """Binary (XNOR) inner convolutions trained with a straight-through estimator."""

    options: ClassVar[dict[str, Any]] = {
        "act_scale": True,  # scale binary activations by K (paper); false: plain BWN-style sign inputs
        "skip_1x1": False,  # keep 1x1 convolutions (e.g. ResNet downsample shortcuts) in float
    }

    def compress(self, ctx: CompressionContext) -> CompressedModel:
        cfg = dict(self.config)
        for key in ("act_scale", "skip_1x1"):
            if not isinstance(cfg[key], bool):
                raise ConfigError(f"--method xnor: option {key}={cfg[key]!r} must be true or false")
        model = copy.deepcopy(ctx.model).cpu().eval()
        size = int(getattr(ctx.card, "image_size", 0) or 224)
        names = inner_convs(model, size, cfg["skip_1x1"])
        if not names:
            raise ModelError(
                f"--method xnor: {getattr(model, 'name', 'the model')} has no inner ungrouped convolution "
                "to binarise (the first conv, depthwise convs and the head stay float); pick e.g. resnet18"
            )
        binarise(model, names, cfg["act_scale"])
        if ctx.finetune_epochs > 0:
            model.train()  # BatchNorm statistics follow the changed layers
            ctx.finetune(model)
        model.eval()
        path = Path(ctx.out_dir) / "xnor.safetensors"
        info = save_xnor(path, model, ctx.card, names, cfg["act_scale"])
        return CompressedModel(module=model, files=[path], size_bytes=path.stat().st_size, notes=info)


def inner_convs(model: nn.Module, image_size: int = 32, skip_1x1: bool = False) -> list[str]:
    """Names of the ungrouped convolutions after the first one run (forward order), outside the head."""
    order: list[str] = []
    names = {m: n for n, m in model.named_modules()}
    hooks = [
        m.register_forward_hook(lambda mod, _i, _o: order.append(names[mod]))
        for m in model.modules()
        if isinstance(m, nn.Conv2d)
    ]
    try:
        with torch.no_grad():
            model(torch.rand(1, 3, image_size, image_size))
    finally:
        for h in hooks:
            h.remove()
    head = getattr(model, "head", None)
    skip = set(head.modules()) if isinstance(head, nn.Module) else set()
    first = order[0] if order else None
    out = []
    for name in dict.fromkeys(order):
        m = model.get_submodule(name)
        if name == first or m in skip or m.groups != 1 or (skip_1x1 and tuple(m.kernel_size) == (1, 1)):
            continue
        out.append(name)
    return out


def binarise(model: nn.Module, names: list[str], act_scale: bool = True) -> None:
    for name in names:
        model.set_submodule(name, XNORConv2d.from_conv(model.get_submodule(name), act_scale=act_scale))


def pack_signs(weight: torch.Tensor) -> np.ndarray:
    """Signs (bit 1 for w > 0) packed 8 per byte: ``ceil(n / 8)`` bytes."""
    return np.packbits(weight.detach().cpu().numpy().reshape(-1) > 0)


def unpack_signs(packed: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
    n = int(np.prod(shape))
    bits = np.unpackbits(np.asarray(packed, dtype=np.uint8), count=n)
    return torch.from_numpy(bits.astype(np.float32) * 2.0 - 1.0).view(shape)


def save_xnor(
    path: str | Path, model: nn.Module, card: Any, names: list[str], act_scale: bool
) -> dict[str, Any]:
    """Write packed signs + alphas + float rest; returns size statistics."""
    tensors: dict[str, torch.Tensor] = {}
    binary = {f"{n}.weight" for n in names}
    packed_bytes = 0
    layers = []
    for name in names:
        conv = model.get_submodule(name)
        packed = pack_signs(conv.weight)
        packed_bytes += packed.size
        tensors[f"{name}.weight_bits"] = torch.from_numpy(packed)
        tensors[f"{name}.weight_alpha"] = conv.alpha().detach().float().contiguous()
        layers.append({"name": name, "shape": list(conv.weight.shape)})
    for key, value in model.state_dict().items():
        if key not in binary:
            tensors[key] = value.detach().cpu().contiguous()
    meta = card.to_metadata()
    meta[STRUCTURE_KEY] = json.dumps({"layers": layers, "act_scale": act_scale})
    write_bytes(path, st_save(tensors, metadata=meta))
    n_binary = sum(int(np.prod(item["shape"])) for item in layers)
    n_total = sum(v.numel() for v in model.state_dict().values() if v.is_floating_point())
    return {
        "binary_layers": len(names),
        "binary_weights": n_binary,
        "float_values": n_total - n_binary,
        "packed_bytes": packed_bytes,
        "fp32_bytes_of_binary_layers": 4 * n_binary,
    }


def load_xnor(path: str | Path) -> tuple[nn.Module, Any]:
    """Rebuild an XNOR Classifier: weights become ``alpha * sign`` (which binarises to itself)."""
    from ..artifacts import ModelCard
    from ..models import create_model

    p = Path(path)
    tensors, meta = read_safetensors(p)
    card = ModelCard.from_metadata(meta, p)
    try:
        info = json.loads(meta[STRUCTURE_KEY])
    except (KeyError, TypeError, json.JSONDecodeError):
        raise ModelError(f"'{p}' has no XNOR metadata; it was not written by --method xnor") from None
    model = create_model(card.model, num_classes=len(card.classes), small_input=card.small_input)
    try:
        binarise(model, [item["name"] for item in info["layers"]], bool(info["act_scale"]))
        for item in info["layers"]:
            name, shape = item["name"], tuple(item["shape"])
            signs = unpack_signs(tensors.pop(f"{name}.weight_bits").numpy(), shape)
            alpha = tensors.pop(f"{name}.weight_alpha")
            tensors[f"{name}.weight"] = alpha.view(-1, 1, 1, 1) * signs
        model.load_state_dict(tensors, strict=True)
    except (AttributeError, RuntimeError, KeyError, TypeError, ValueError) as err:
        raise ModelError(f"weights in '{p}' do not fit {card.model}: {str(err).splitlines()[0]}") from None
    return model.eval(), card
