"""ONNX export (fp32) and onnxruntime static int8 quantization (QDQ, per-channel weights).

Files are written to a temporary sibling and renamed into place, so a failed export leaves nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ModelError
from .metadata import INPUT_NAME, OUTPUT_NAME, card_metadata
from .targets import SCHEMES, check_scheme

DEFAULT_OPSET = 17

# The int8 type schemes and the CPU targets that choose between them live in ``targets``.
INT8_WEIGHTS = {name: scheme.description for name, scheme in SCHEMES.items()}
DEFAULT_INT8_WEIGHTS = "auto"  # chosen per target (export/int8.py)


def check_int8_weights(value: str, given_as: str | None = None) -> str:
    """``value`` if it is ``auto`` or a known scheme, else one line naming how it was given."""
    return check_scheme(value, given_as)


@contextlib.contextmanager
def staged_file(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """A temporary path beside ``path``; renamed over ``path`` only when the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix or ".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def set_metadata(model_proto: Any, meta: dict[str, str]) -> None:
    """Replace the model's ``metadata_props`` with ``meta``."""
    del model_proto.metadata_props[:]
    for key, value in meta.items():
        entry = model_proto.metadata_props.add()
        entry.key, entry.value = key, value


def export_onnx(
    model: nn.Module,
    card: Any,
    path: str | Path,
    opset: int = DEFAULT_OPSET,
    graph_passes: bool = True,
    **extra_meta: Any,
) -> Path:
    """Write ``model`` (float images in [0, 1] -> logits, dynamic batch) as ONNX with the card metadata.

    ``graph_passes`` (default; ``bench/export_passes.py`` measures them, same outputs): TF-"same"
    pads computed for the card's image size and folded into the convolutions (``static_padding``),
    BN behind mixed convolutions folded, squeeze-excitation means as global pools (``onnx_passes``).
    """
    import onnx

    from .onnx_passes import fold_batchnorm_after_concat, fold_pads_into_convs, reduce_mean_to_global_pool
    from .static_padding import freeze_same_padding

    model = model.eval()
    if graph_passes:  # constant pads: no shape arithmetic
        model, _ = freeze_same_padding(model, card.image_size)
    example = torch.rand(2, 3, card.image_size, card.image_size)
    with staged_file(path, ".onnx") as tmp:
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    model,
                    (example,),
                    str(tmp),
                    dynamo=False,  # the TorchScript-based exporter needs no onnxscript and handles timm nets
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                    opset_version=opset,
                    do_constant_folding=True,
                )
        except Exception as error:
            first = (str(error).strip().splitlines() or [""])[0][:300]
            raise ModelError(
                f"model {card.model} cannot be exported to ONNX (opset {opset}): {type(error).__name__}: "
                f"{first}"
            ) from error
        proto = onnx.load(str(tmp))
        if graph_passes:
            fold_pads_into_convs(proto)  # TF-"same" pads become the convolutions' own (asymmetric) pads
            fold_batchnorm_after_concat(proto)  # MixNet's mixed convolutions: BN into each kernel group
            reduce_mean_to_global_pool(proto)  # squeeze-excitation means: onnxruntime's int8 pool kernel
        set_metadata(proto, card_metadata(card, precision="fp32", **extra_meta))
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
    return Path(path)


def equal_batches(batches: Iterable[np.ndarray], largest: int = 32) -> list[np.ndarray]:
    """The same images in batches of one size (the largest divisor of their count up to ``largest``).

    onnxruntime's histogram calibrators (entropy, percentile) stack every batch's outputs into one
    array and fail on a smaller last batch (onnxruntime issue #18792).
    """
    images = np.concatenate([np.asarray(b, dtype=np.float32) for b in batches]) if batches else None
    if images is None or len(images) == 0:
        return []
    size = max(d for d in range(1, min(largest, len(images)) + 1) if len(images) % d == 0)
    return list(np.split(images, len(images) // size))


class _Reader:
    """onnxruntime CalibrationDataReader over float [0, 1] NCHW batches."""

    def __init__(self, batches: Iterable[np.ndarray]) -> None:
        self._it = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._it, None)
        return None if batch is None else {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)}


def quantize_onnx(
    fp32_path: str | Path,
    out_path: str | Path,
    batches: Iterable[np.ndarray],
    per_channel: bool = True,
    calibrate_method: str = "minmax",
    weights: str = "uint8",
    extra_meta: dict[str, Any] | None = None,
) -> Path:
    """Static int8 quantization (QDQ) calibrated on ``batches``.

    ``weights`` names the scheme (``targets.SCHEMES``: activation and weight types, reduce_range);
    ``export`` picks it per target CPU (``export/int8.py``); ``extra_meta`` goes into the metadata.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    if calibrate_method not in methods:
        raise ModelError(f"calibration method '{calibrate_method}' unknown; use {', '.join(methods)}")
    if weights not in SCHEMES:
        raise ModelError(f"int8 scheme '{weights}' unknown; use {', '.join(SCHEMES)}")
    scheme = SCHEMES[weights]
    qtype = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    if calibrate_method != "minmax":
        batches = equal_batches(list(batches))
    src = onnx.load(str(fp32_path))
    meta = {p.key: p.value for p in src.metadata_props}
    with tempfile.TemporaryDirectory() as work, staged_file(out_path, ".onnx") as tmp:
        pre = Path(work) / "pre.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
            pre_model = onnx.load(str(pre))
            if name_nodes(pre_model):
                onnx.save(pre_model, str(pre))
            excluded = early_convolutions(pre_model) if scheme.early_float else []
            shape_math = shape_computation_nodes(pre_model)
            quantize_static(
                str(pre),
                str(tmp),
                _Reader(batches),
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type=qtype[scheme.activations],
                weight_type=qtype[scheme.weights],
                reduce_range=scheme.reduce_range,
                calibrate_method=methods[calibrate_method],
                nodes_to_exclude=excluded + shape_math,
                extra_options={"CalibMovingAverage": scheme.moving_average},
            )
        proto = onnx.load(str(tmp))
        meta.update(
            precision="int8",
            quantization=f"onnxruntime static QDQ, per_channel={per_channel}, weights={weights}"
            + (f", {len(excluded)} early nodes in float" if excluded else "")
            + (f", {len(shape_math)} shape-arithmetic nodes in float" if shape_math else ""),
            int8_scheme=weights,
            **{k: v if isinstance(v, str) else json.dumps(v) for k, v in (extra_meta or {}).items()},
        )
        set_metadata(proto, meta)
        onnx.save(proto, str(tmp))
    return Path(out_path)


def name_nodes(model: Any) -> bool:
    """Give every unnamed node a unique name (``nodes_to_exclude`` matches by name); True if any was."""
    taken = {node.name for node in model.graph.node}
    renamed = False
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
            renamed = True
    return renamed


def shape_computation_nodes(model: Any) -> list[str]:
    """Names of the nodes that compute on tensor shapes (``Shape``/``Size`` and what only they and
    constants feed), which int8 must leave alone.

    TensorFlow-style "same" padding (timm's ``tf_*`` models, e.g. EfficientNet-Lite0) computes each
    strided convolution's padding from the input shape with float Div/Ceil/Sub/Mul nodes; onnxruntime
    quantizes those like image activations, the rounded pads shift the feature maps by a pixel, and a
    trained BloodMNIST EfficientNet-Lite0 agreed with its fp32 file on 69 % of images (96.5 % with
    these nodes in float).
    """
    constant = {init.name for init in model.graph.initializer}
    derived: set[str] = set()
    names = []
    for node in model.graph.node:  # ONNX graphs are topologically sorted
        inputs = [name for name in node.input if name]
        if node.op_type in ("Shape", "Size") or all(name in constant or name in derived for name in inputs):
            derived.update(node.output)
            if node.op_type != "Constant":
                names.append(node.name)
    return [name for name in names if name]


def early_convolutions(model: Any) -> list[str]:
    """Names of the Conv nodes whose input is above 1/4 of the network input's height, with the
    Relu/Clip right after each (so that the int8 range is taken after the activation, not before).

    MobileNetV2 at 64 px: the stem, block 0 and block 1's expansion and depthwise convolutions (5 of
    52); ResNet-18: the stem only. Needs the shapes from ``quant_pre_process``; none known: none kept.
    """
    import onnx

    graph = onnx.shape_inference.infer_shapes(model).graph
    heights: dict[str, int] = {}
    for info in [*graph.input, *graph.value_info]:
        dims = info.type.tensor_type.shape.dim
        if len(dims) == 4 and dims[2].HasField("dim_value"):
            heights[info.name] = dims[2].dim_value
    top = heights.get(graph.input[0].name) if graph.input else None
    if not top:
        return []
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    names = []
    for node in graph.node:
        if node.op_type == "Conv" and heights.get(node.input[0], 0) * 4 > top:
            names.append(node.name)
            names += [c.name for c in consumers.get(node.output[0], []) if c.op_type in ("Relu", "Clip")]
    return names


class OrtModule(nn.Module):
    """An onnxruntime session behind the ``nn.Module`` interface (for evaluation next to torch models)."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        super().__init__()
        from .onnx_predict import make_session

        self.path = str(path)
        self.session = make_session(path, threads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (logits,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: x.detach().float().cpu().numpy()})
        return torch.from_numpy(logits)
