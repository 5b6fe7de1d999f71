"""int8 leaves shape arithmetic alone: TF-style "same" padding must survive quantization."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from onnx_export import export_to_onnx
from torch import nn

from semicompact.export.metadata import INPUT_NAME


class _SamePadNet(nn.Module):
    """Strided TF-"same" convolutions, as in timm's ``tf_*`` models: the pads come from x.shape."""

    def __init__(self) -> None:
        super().__init__()
        from timm.layers import create_conv2d

        self.body = nn.Sequential(
            create_conv2d(3, 16, 3, stride=2, padding="same"),
            nn.ReLU6(),
            create_conv2d(16, 16, 3, stride=2, padding="same"),
            nn.ReLU6(),
            create_conv2d(16, 16, 5, stride=2, padding="same"),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).flatten(1)  # every position kept: a one-pixel shift shows


@pytest.fixture(scope="module")
def same_pad_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    net = _SamePadNet().eval()
    return export_to_onnx(net, tmp_path_factory.mktemp("samepad") / "fp32.onnx", 30)


def _snr_db(reference: np.ndarray, other: np.ndarray) -> float:
    return float(20 * np.log10(np.linalg.norm(reference) / np.linalg.norm(reference - other)))


def test_shape_arithmetic_is_found(same_pad_onnx: Path) -> None:
    import onnx

    from semicompact.export.onnx import shape_computation_nodes

    model = onnx.load(str(same_pad_onnx))
    found = set(shape_computation_nodes(model))
    by_type = {n.name: n.op_type for n in model.graph.node}
    kinds = {by_type[name] for name in found}
    assert {"Shape", "Ceil", "Div", "Sub"} <= kinds  # the pad formula of each strided convolution
    assert not {"Conv", "Pad"} & kinds  # the image path is still quantized
    conv_out = {n.output[0] for n in model.graph.node if n.op_type == "Conv"}
    relu6 = {n.name for n in model.graph.node if n.op_type == "Clip" and n.input[0] in conv_out}
    assert len(relu6) == 2 and not found & relu6


def test_int8_same_padding_keeps_the_feature_maps_aligned(same_pad_onnx: Path, tmp_path: Path) -> None:
    """With the pad formula quantized (onnxruntime's default) the rounded pads changed the maps' size
    here (144 outputs instead of 256) and shifted a trained EfficientNet-Lite0's maps by a pixel (69 %
    agreement); with it in float, only int8 rounding is left."""
    import onnx
    import onnxruntime as ort

    from semicompact.export.onnx import quantize_onnx

    rng = np.random.default_rng(0)
    calib = [rng.random((8, 3, 30, 30), dtype=np.float32) for _ in range(4)]
    out = quantize_onnx(same_pad_onnx, tmp_path / "int8.onnx", calib, weights="int8")
    graph = onnx.load(str(out)).graph
    assert sum(n.op_type == "QuantizeLinear" for n in graph.node) >= 3  # the convolutions are int8
    x = rng.random((16, 3, 30, 30), dtype=np.float32)
    fp32, int8 = (
        ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {INPUT_NAME: x})[0]
        for p in (same_pad_onnx, out)
    )
    assert fp32.shape == int8.shape
    snr = _snr_db(fp32, int8)
    assert snr > 20, snr
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert "shape-arithmetic nodes in float" in meta["quantization"]
