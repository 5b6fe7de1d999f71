"""ONNX graph passes at export: BN behind a mixed convolution's Concat, SE means as global pools."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from onnx_export import export_to_onnx
from torch import nn

from semicompact.export.metadata import INPUT_NAME


def _export(net: nn.Module, path: Path, size: int = 16) -> Path:
    return export_to_onnx(net, path, size)


def _run(model_or_path: object, x: np.ndarray) -> np.ndarray:
    import onnx
    import onnxruntime as ort

    data = (
        model_or_path.SerializeToString()
        if isinstance(model_or_path, onnx.ModelProto)
        else str(model_or_path)
    )
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {INPUT_NAME: x})[0]


def _trained_bn(bn: nn.BatchNorm2d, seed: int) -> nn.BatchNorm2d:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(bn.num_features, generator=g))
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=g))
        bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.1)
    return bn


class _Mixed(nn.Module):
    """MixNet's pattern: channel groups convolved with 3x3 and 5x5 kernels, concatenated, then BN."""

    def __init__(self, bias: bool) -> None:
        super().__init__()
        from timm.layers import MixedConv2d

        self.mixed = MixedConv2d(3, 12, kernel_size=[3, 5], stride=1, padding="", bias=bias)
        self.bn = _trained_bn(nn.BatchNorm2d(12), 0)
        self.pool_in = nn.Conv2d(3, 4, 1)
        self.bn_other = _trained_bn(nn.BatchNorm2d(16), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.mixed(x)))
        z = self.bn_other(torch.cat([y, self.pool_in(x)], 1)[:, :16])  # a Concat with a non-Conv input
        return z.flatten(1)


@pytest.mark.parametrize("bias", [False, True])
def test_batchnorm_after_a_mixed_convolution_is_folded(tmp_path: Path, bias: bool) -> None:
    import onnx

    from semicompact.export.onnx_passes import fold_batchnorm_after_concat

    torch.manual_seed(0)
    net = _Mixed(bias).eval()
    model = onnx.load(str(_export(net, tmp_path / "m.onnx")))
    assert [n.op_type for n in model.graph.node].count("BatchNormalization") == 2
    assert fold_batchnorm_after_concat(model) == 1
    onnx.checker.check_model(model)
    # the second BN reads a Concat of a ReLU and a Conv: not foldable, left in place
    assert [n.op_type for n in model.graph.node].count("BatchNormalization") == 1
    x = np.random.default_rng(0).random((3, 3, 16, 16), dtype=np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(_run(model, x), expected, rtol=1e-4, atol=1e-4)


class _SE(nn.Module):
    def __init__(self, keepdim: bool, dims: tuple[int, ...]) -> None:
        super().__init__()
        self.conv, self.keepdim, self.dims = nn.Conv2d(3, 8, 3), keepdim, dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return (
            y * torch.sigmoid(y.mean(self.dims, keepdim=self.keepdim).reshape(y.shape[0], -1, 1, 1)[:, :8])
        ).flatten(1)


@pytest.mark.parametrize(
    ("keepdim", "dims", "replaced"), [(True, (2, 3), 1), (False, (2, 3), 0), (True, (1, 2), 0)]
)
def test_spatial_means_become_global_average_pools(
    tmp_path: Path, keepdim: bool, dims: tuple, replaced: int
) -> None:
    import onnx

    from semicompact.export.onnx_passes import reduce_mean_to_global_pool

    torch.manual_seed(0)
    net = _SE(keepdim, dims).eval()
    model = onnx.load(str(_export(net, tmp_path / "se.onnx")))
    assert reduce_mean_to_global_pool(model) == replaced
    onnx.checker.check_model(model)
    kinds = [n.op_type for n in model.graph.node]
    assert kinds.count("GlobalAveragePool") == replaced and kinds.count("ReduceMean") == 1 - replaced
    x = np.random.default_rng(0).random((2, 3, 16, 16), dtype=np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(_run(model, x), net(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-5)
