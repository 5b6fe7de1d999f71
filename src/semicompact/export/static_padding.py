"""TensorFlow-style "same" padding made static for a fixed input size, before ONNX export.

timm's ``tf_*`` models (EfficientNet-Lite0, the TF MixNets, ...) pad each strided convolution
asymmetrically, with pads computed from the input's shape at run time. Exported as is, each such
layer becomes a Shape/Cast/Div/Ceil/Sub subgraph and a Pad node with computed pads: onnxruntime
cannot fold that Pad into the convolution, so int8 files leave Dequantize -> Pad -> Quantize islands
and layout transposes around them. An exported file has a fixed image size (only the batch is
dynamic), so the pads are constants: this module computes them once, and the export then holds
either the convolution's own symmetric padding or a constant Pad that onnxruntime fuses into it.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn


def _same_pad(size: int, kernel: int, stride: int, dilation: int) -> int:
    """Total TF "same" padding along one axis (timm's ``get_same_padding`` for ints)."""
    return max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)


def _pads(height: int, width: int, kernel: tuple, stride: tuple, dilation: tuple) -> tuple[int, ...]:
    """(left, right, top, bottom) as timm's ``pad_same`` applies them (the extra pixel at the end)."""
    ph = _same_pad(height, kernel[0], stride[0], dilation[0])
    pw = _same_pad(width, kernel[1], stride[1], dilation[1])
    return pw // 2, pw - pw // 2, ph // 2, ph - ph // 2


def _pair(value: int | tuple) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)  # type: ignore[return-value]


class StaticSameConv2d(nn.Conv2d):
    """A ``Conv2dSame`` whose padding was computed for one input size."""

    static_pad: tuple[int, int, int, int]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.static_pad):
            x = F.pad(x, self.static_pad)
        return self._conv_forward(x, self.weight, self.bias)


class StaticSameMaxPool2d(nn.MaxPool2d):
    """A ``MaxPool2dSame`` whose padding was computed for one input size."""

    static_pad: tuple[int, int, int, int]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, self.static_pad, value=-float("inf"))
        return F.max_pool2d(x, self.kernel_size, self.stride, 0, self.dilation, self.ceil_mode)


class StaticSameAvgPool2d(nn.AvgPool2d):
    """An ``AvgPool2dSame`` whose padding was computed for one input size."""

    static_pad: tuple[int, int, int, int]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, self.static_pad)
        return F.avg_pool2d(x, self.kernel_size, self.stride, 0, self.ceil_mode, self.count_include_pad)


def _static_class(module: nn.Module) -> type[nn.Module] | None:
    """The static replacement for timm's dynamic "same" layers (exact classes only)."""
    from timm.layers import AvgPool2dSame, Conv2dSame
    from timm.layers.pool2d_same import MaxPool2dSame

    return {
        Conv2dSame: StaticSameConv2d,
        MaxPool2dSame: StaticSameMaxPool2d,
        AvgPool2dSame: StaticSameAvgPool2d,
    }.get(type(module))


def freeze_same_padding(model: nn.Module, image_size: int) -> tuple[nn.Module, int]:
    """A copy of ``model`` whose TF "same" layers use constant pads for ``image_size`` inputs, and
    how many layers changed; ``model`` itself is returned untouched when it has none."""
    if not any(_static_class(m) for m in model.modules()):
        return model, 0
    frozen = copy.deepcopy(model).eval()
    sizes: dict[nn.Module, tuple[int, int]] = {}

    def record(module: nn.Module, args: tuple) -> None:
        sizes.setdefault(module, tuple(args[0].shape[-2:]))

    hooks = [m.register_forward_pre_hook(record) for m in frozen.modules() if _static_class(m)]
    try:
        with torch.no_grad():
            param = next(frozen.parameters(), None)
            device = param.device if param is not None else None
            frozen(torch.zeros(1, 3, image_size, image_size, device=device))
    finally:
        for hook in hooks:
            hook.remove()
    for module, (height, width) in sizes.items():
        static = _static_class(module)
        kernel, stride = _pair(module.kernel_size), _pair(module.stride)
        dilation = _pair(getattr(module, "dilation", 1))
        pad = _pads(height, width, kernel, stride, dilation)
        module.__class__ = static  # same parameters and buffers, constant pads
        if static is StaticSameConv2d and pad[0] == pad[1] and pad[2] == pad[3]:
            module.padding = (pad[2], pad[0])  # symmetric: the convolution's own padding
            pad = (0, 0, 0, 0)
        module.static_pad = pad
    return frozen, len(sizes)
