"""Graph passes on exported ONNX files that onnxruntime's own optimizer leaves undone.

- ``fold_pads_into_convs``: a constant zero Pad (TF-"same" padding, ``static_padding.py``) into the
  Conv it feeds.
- ``fold_batchnorm_after_concat``: a BatchNormalization after the Concat of several convolutions
  (timm's ``MixedConv2d`` in MixNet: channel groups with different kernel sizes) into those
  convolutions, as export-time BN folding does for a single Conv.

Both keep the outputs (tested against onnxruntime) and only remove nodes.
"""

from __future__ import annotations

from typing import Any

import numpy as np


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
    producers, consumers, inputs, outputs = _index(graph)
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
    return _remove(model, folded)


def _index(graph: Any) -> tuple[dict[str, Any], dict[str, list[Any]], set[str], set[str]]:
    """(producer of each tensor, consumers of each tensor, graph input names, graph output names)."""
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return producers, consumers, {i.name for i in graph.input}, {o.name for o in graph.output}


def _remove(model: Any, nodes: list[Any]) -> int:
    """Remove ``nodes`` and whatever only they used; returns how many were removed."""
    for node in nodes:
        model.graph.node.remove(node)
    if nodes:
        _drop_unused(model)
    return len(nodes)


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


def fold_batchnorm_after_concat(model: Any) -> int:
    """Fold each inference BatchNormalization that follows a channel Concat of Conv outputs into
    those Convs (each takes the BN's scale and shift of its own channels); returns how many.

    timm's ``MixedConv2d`` (MixNet) splits the channels, convolves each group with its own kernel
    size and concatenates, then applies BN: neither PyTorch's export nor onnxruntime folds a BN
    behind a Concat, so MixNet-S kept 26 BN nodes in float, and its int8 file spent its time in
    Dequantize/BN/Quantize and layout transposes around them (0.99x onnxruntime fp32 at 224 px).
    """
    from onnx import numpy_helper

    graph = model.graph
    producers, consumers, inputs, outputs = _index(graph)

    def value(name: str) -> np.ndarray | None:  # an initializer, or one behind Identity/Constant nodes
        return _constant_value(model, name, producers, inputs) if name else None

    folded = []
    for bn in list(graph.node):
        if bn.op_type != "BatchNormalization" or len([o for o in bn.output if o]) != 1:
            continue
        concat = producers.get(bn.input[0])
        if concat is None or concat.op_type != "Concat" or concat.output[0] in outputs:
            continue
        if len(consumers.get(concat.output[0], [])) != 1:
            continue
        axis = next((a.i for a in concat.attribute if a.name == "axis"), None)
        convs = [producers.get(name) for name in concat.input]
        if axis not in (1, -3) or not all(
            c is not None
            and c.op_type == "Conv"
            and len(consumers.get(c.output[0], [])) == 1
            and c.output[0] not in outputs
            for c in convs
        ):
            continue
        params = [value(n) for n in bn.input[1:5]]
        weights = [value(c.input[1]) for c in convs]
        biases = [value(c.input[2]) if len(c.input) > 2 and c.input[2] else None for c in convs]
        has_bias = [len(c.input) > 2 and bool(c.input[2]) for c in convs]
        if any(p is None for p in params) or any(w is None for w in weights):
            continue
        if any(given and b is None for given, b in zip(has_bias, biases, strict=True)):
            continue
        gamma, beta, mean, var = (np.asarray(p, dtype=np.float64) for p in params)
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        scale = gamma / np.sqrt(var + eps)
        shift = beta - mean * scale
        if sum(w.shape[0] for w in weights) != scale.shape[0]:
            continue
        start = 0
        for conv, w, b in zip(convs, weights, biases, strict=True):
            stop = start + w.shape[0]
            b = np.zeros(w.shape[0]) if b is None else b
            s = scale[start:stop]
            new_w = (w * s.reshape(-1, *([1] * (w.ndim - 1)))).astype(w.dtype)
            new_b = (b * s + shift[start:stop]).astype(w.dtype)
            names = (f"{conv.name or conv.output[0]}_bnfold_w", f"{conv.name or conv.output[0]}_bnfold_b")
            graph.initializer.extend(
                [numpy_helper.from_array(new_w, names[0]), numpy_helper.from_array(new_b, names[1])]
            )
            conv.input[1] = names[0]
            if len(conv.input) > 2:
                conv.input[2] = names[1]
            else:
                conv.input.append(names[1])
            start = stop
        concat.output[0] = bn.output[0]  # the Concat now yields what the BN did
        folded.append(bn)
    return _remove(model, folded)


def reduce_mean_to_global_pool(model: Any) -> int:
    """Replace each ReduceMean over the two spatial axes of a 4-D tensor (keepdims) by the
    equivalent GlobalAveragePool; returns how many.

    Squeeze-excitation layers (timm's ``x.mean((2, 3), keepdim=True)``) export as ReduceMean, which
    onnxruntime runs in float between Dequantize and Quantize; GlobalAveragePool has an int8
    kernel (QLinearGlobalAveragePool) and keeps the NHWC layout (MixNet-S, 224 px: 13 ReduceMean
    nodes took 1.4 ms of its 16 ms int8 run).
    """
    import onnx

    graph = model.graph
    producers, _, inputs, _ = _index(graph)
    inferred = onnx.shape_inference.infer_shapes(model).graph
    ranks = {
        info.name: len(info.type.tensor_type.shape.dim)
        for info in [*inferred.input, *inferred.value_info, *inferred.output]
        if info.type.tensor_type.HasField("shape")
    }
    replaced = 0
    for i, node in enumerate(list(graph.node)):
        if node.op_type != "ReduceMean" or ranks.get(node.input[0]) != 4:
            continue
        attrs = {a.name: a for a in node.attribute}
        if "keepdims" in attrs and attrs["keepdims"].i != 1:
            continue
        if "axes" in attrs:
            axes = list(attrs["axes"].ints)
        elif len(node.input) > 1 and node.input[1]:
            value = _constant_value(model, node.input[1], producers, inputs)
            axes = [] if value is None else [int(a) for a in np.ravel(value)]
        else:
            continue
        if sorted(a % 4 for a in axes) != [2, 3]:
            continue
        pool = onnx.helper.make_node("GlobalAveragePool", [node.input[0]], list(node.output), name=node.name)
        graph.node.remove(node)
        graph.node.insert(i, pool)
        replaced += 1
    if replaced:
        _drop_unused(model)
    return replaced
