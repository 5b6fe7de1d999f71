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
from typing import Any

import numpy as np
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


def _constant_value(model: Any, name: str, producers: dict[str, Any], inputs: set[str]) -> np.ndarray | None:
    """The value of tensor ``name`` if only initializers and constant nodes feed it, else None."""
    import onnx
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    initializers = {init.name: init for init in model.graph.initializer}
    if name in initializers:
        return numpy_helper.to_array(initializers[name])
    nodes, stack, seen = [], [name], set()
    while stack:
        tensor = stack.pop()
        if tensor in seen or tensor in initializers or not tensor:
            continue
        seen.add(tensor)
        node = producers.get(tensor)
        if node is None or tensor in inputs:
            return None  # a graph input: not a constant
        nodes.append(node)
        stack.extend(node.input)
    order = {id(n): i for i, n in enumerate(model.graph.node)}
    nodes = sorted({id(n): n for n in nodes}.values(), key=lambda n: order[id(n)])
    used = {i for n in nodes for i in n.input}
    graph = onnx.helper.make_graph(
        nodes,
        "constant",
        [],
        [onnx.helper.make_tensor_value_info(name, onnx.TensorProto.UNDEFINED, None)],
        [initializers[i] for i in used if i in initializers],
    )
    opset = [o for o in model.opset_import]
    try:
        evaluator = ReferenceEvaluator(onnx.helper.make_model(graph, opset_imports=opset))
        return np.asarray(evaluator.run(None, {})[0])
    except Exception:  # an op the reference runtime lacks: leave the Pad as it is
        return None


def fold_pads_into_convs(model: Any) -> int:
    """Move each constant zero Pad that only feeds a Conv into the Conv's own ``pads``; returns how
    many were folded. Unused nodes are dropped afterwards.

    onnxruntime has this fusion (``PadFusion``) but did not apply it to these exports (onnxruntime
    1.32, opset 17: the Pad stayed, in float between Dequantize/Quantize in int8 files), so the
    file is written without the Pad instead.
    """
    import onnx

    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    inputs = {i.name for i in graph.input}
    outputs = {o.name for o in graph.output}
    folded = []
    for pad in list(graph.node):
        if pad.op_type != "Pad" or pad.output[0] in outputs:
            continue
        attrs = {a.name: a for a in pad.attribute}
        mode = attrs["mode"].s.decode() if "mode" in attrs else "constant"
        users = consumers.get(pad.output[0], [])
        if mode != "constant" or len(users) != 1 or users[0].op_type != "Conv" or len(pad.input) < 2:
            continue
        conv = users[0]
        conv_attrs = {a.name: a for a in conv.attribute}
        if "auto_pad" in conv_attrs and conv_attrs["auto_pad"].s.decode() != "NOTSET":
            continue
        if len(pad.input) > 3 and pad.input[3]:
            continue  # an axes input: not the plain form
        pads = _constant_value(model, pad.input[1], producers, inputs)
        given = len(pad.input) > 2 and pad.input[2]
        value = _constant_value(model, pad.input[2], producers, inputs) if given else 0
        if pads is None or value is None or pads.size != 8 or np.any(np.asarray(value) != 0):
            continue
        pads = [int(p) for p in pads]
        if pads[0] or pads[1] or pads[4] or pads[5] or min(pads) < 0:
            continue
        old = list(conv_attrs["pads"].ints) if "pads" in conv_attrs else [0, 0, 0, 0]
        new = [old[0] + pads[2], old[1] + pads[3], old[2] + pads[6], old[3] + pads[7]]
        if "pads" in conv_attrs:
            conv.attribute.remove(conv_attrs["pads"])
        conv.attribute.append(onnx.helper.make_attribute("pads", new))
        conv.input[0] = pad.input[0]
        folded.append(pad)
    for pad in folded:
        graph.node.remove(pad)
    if folded:
        _drop_unused(model)
    return len(folded)


def _drop_unused(model: Any) -> None:
    """Remove nodes and initializers nothing reads (the folded Pads' constant subgraphs)."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    changed = True
    while changed:
        used = {name for node in graph.node for name in node.input} | outputs
        dead = [node for node in graph.node if not any(out in used for out in node.output)]
        changed = bool(dead)
        for node in dead:
            graph.node.remove(node)
    used = {name for node in graph.node for name in node.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
