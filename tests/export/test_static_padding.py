"""TF-"same" padding made static for export: same outputs, no shape arithmetic, no Pad nodes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from onnx_export import export_to_onnx
from torch import nn

from semicompact.export.metadata import INPUT_NAME


def _same_pad_net() -> nn.Module:
    from timm.layers import create_conv2d, create_pool2d

    torch.manual_seed(0)
    return nn.Sequential(
        create_conv2d(3, 8, 3, stride=2, padding="same"),  # asymmetric pads at even sizes
        nn.ReLU6(),
        create_conv2d(8, 8, 3, stride=1, padding="same"),  # symmetric: timm already makes it static
        create_pool2d("max", 3, stride=2, padding="same"),
        create_conv2d(8, 8, 5, stride=2, padding="same", groups=8),
        nn.Flatten(),
    ).eval()


@pytest.mark.parametrize("size", [30, 31])
def test_frozen_padding_gives_the_same_outputs(size: int) -> None:
    from timm.layers import Conv2dSame

    from semicompact.export.static_padding import StaticSameConv2d, freeze_same_padding

    net = _same_pad_net()
    frozen, changed = freeze_same_padding(net, size)
    assert changed == 3  # two strided convolutions and the max pool
    x = torch.rand(4, 3, size, size)
    with torch.no_grad():
        assert torch.equal(frozen(x), net(x))
    assert isinstance(net[0], Conv2dSame) and type(frozen[0]) is StaticSameConv2d  # the original is kept
    plain = nn.Conv2d(3, 3, 3)
    assert freeze_same_padding(plain, size) == (plain, 0)  # nothing to do: no copy


def test_exported_file_has_no_shape_arithmetic_and_no_pad(tmp_path: Path) -> None:
    """The strided "same" convolutions' asymmetric pads end up in the Conv nodes; onnxruntime gives
    the same outputs as torch (EfficientNet-Lite0 at 224 px: fp32 about 30 % faster, int8 about 45 %,
    in bench/results/int8_deploy)."""
    import onnx
    import onnxruntime as ort

    from semicompact.export.onnx_passes import fold_pads_into_convs
    from semicompact.export.static_padding import freeze_same_padding

    net = _same_pad_net()
    frozen, _ = freeze_same_padding(net, 30)
    path = export_to_onnx(frozen, tmp_path / "m.onnx", 30)
    model = onnx.load(str(path))
    assert fold_pads_into_convs(model) == 2  # both strided convolutions; the max pool keeps its -inf Pad
    onnx.checker.check_model(model)
    kinds = [n.op_type for n in model.graph.node]
    assert "Shape" not in kinds and kinds.count("Pad") == 1
    conv_pads = [
        list(a.ints) for n in model.graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "pads"
    ]
    assert [0, 0, 1, 1] in conv_pads  # begin (top, left), end (bottom, right): TF puts the extra pixel last
    onnx.save(model, str(path))
    x = np.random.default_rng(0).random((3, 3, 30, 30), dtype=np.float32)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {INPUT_NAME: x})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, net(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-5)


def test_a_pad_that_is_not_zero_or_not_constant_stays(tmp_path: Path) -> None:
    import onnx

    from semicompact.export.onnx_passes import fold_pads_into_convs

    class Padded(nn.Module):
        def __init__(self, mode: str, value: float) -> None:
            super().__init__()
            self.conv, self.mode, self.value = nn.Conv2d(3, 4, 3), mode, value

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.mode == "constant":
                return self.conv(nn.functional.pad(x, (0, 1, 0, 1), value=self.value))
            return self.conv(nn.functional.pad(x, (1, 1, 1, 1), mode=self.mode))

    for mode, value in (("constant", 1.0), ("reflect", 0.0)):
        model = onnx.load(str(export_to_onnx(Padded(mode, value).eval(), tmp_path / f"{mode}.onnx", 16)))
        assert fold_pads_into_convs(model) == 0
        assert [n.op_type for n in model.graph.node].count("Pad") == 1
