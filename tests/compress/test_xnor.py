"""XNOR-Net: binary weights are alpha*sign(W), the STE gradient, bit packing, the file, bad input."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from _fixtures import logits, make_ctx, tiny_model
from torch import nn
from torch.nn import functional as F

from semicompact.artifacts import save_model
from semicompact.compress import get_compressor
from semicompact.compress.xnor import XNORConv2d, binary_sign, load_xnor, pack_signs, unpack_signs
from semicompact.errors import ConfigError, ModelError

X = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_binary_weight_is_exactly_alpha_times_sign() -> None:
    torch.manual_seed(0)
    conv = XNORConv2d.from_conv(nn.Conv2d(8, 6, 3, padding=1, bias=False))
    w = conv.weight.detach()
    alpha = w.abs().double().mean(dim=(1, 2, 3)).float()  # mean |W| per output channel
    expected = alpha.view(-1, 1, 1, 1) * torch.sign(w)
    assert torch.equal(conv.binary_weight().detach(), expected)
    for c in range(6):  # every output channel holds exactly the two values +-alpha_c
        assert set(conv.binary_weight()[c].detach().unique().tolist()) == {-alpha[c].item(), alpha[c].item()}


def test_forward_is_scaled_binary_convolution() -> None:
    torch.manual_seed(0)
    conv = XNORConv2d.from_conv(nn.Conv2d(4, 5, 3, stride=2, padding=1, bias=False))
    x = torch.randn(2, 4, 9, 9)
    sign_x = torch.where(x > 0, 1.0, -1.0)
    k = F.avg_pool2d(x.abs().mean(1, keepdim=True), 3, stride=2, padding=1, count_include_pad=True)
    expected = F.conv2d(sign_x, conv.binary_weight(), stride=2, padding=1) * k
    torch.testing.assert_close(conv(x), expected)
    plain = XNORConv2d.from_conv(nn.Conv2d(4, 5, 3, bias=False), act_scale=False)
    torch.testing.assert_close(plain(x), F.conv2d(sign_x, plain.binary_weight()))


def test_straight_through_estimator_passes_gradient_where_abs_x_le_1() -> None:
    x = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.3, 1.0, 1.5], requires_grad=True)
    y = binary_sign(x)
    assert y.tolist() == [-1, -1, -1, -1, 1, 1, 1]
    (y * torch.arange(1.0, 8.0)).sum().backward()
    assert x.grad.tolist() == [0.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0]


@pytest.mark.parametrize("n", [1, 7, 8, 9, 17, 3 * 3 * 16 * 8 + 5])
def test_packed_size_is_ceil_n_over_8_and_round_trips(n: int) -> None:
    w = torch.randn(n, generator=torch.Generator().manual_seed(n))
    packed = pack_signs(w)
    assert packed.dtype == np.uint8 and packed.size == math.ceil(n / 8)
    assert torch.equal(unpack_signs(packed, (n,)), torch.where(w > 0, 1.0, -1.0))


@pytest.fixture(scope="module")
def compressed(tmp_path_factory: pytest.TempPathFactory):
    model = tiny_model()
    out = tmp_path_factory.mktemp("xnor")
    return model, get_compressor("xnor").compress(make_ctx(model, out)), out


def test_inner_convs_binary_first_and_last_float(compressed) -> None:
    model, result, _ = compressed
    convs = [(n, m) for n, m in result.module.named_modules() if isinstance(m, nn.Conv2d)]
    assert type(convs[0][1]) is nn.Conv2d  # the first conv sees the image: float
    assert all(isinstance(m, XNORConv2d) for _, m in convs[1:])
    assert type(result.module.head) is nn.Linear
    assert not any(isinstance(m, XNORConv2d) for m in model.modules())  # original untouched


def test_file_size_counts_packed_bits(compressed) -> None:
    model, result, out = compressed
    binary = [m for m in result.module.modules() if isinstance(m, XNORConv2d)]
    assert result.notes["binary_layers"] == len(binary)
    assert result.notes["packed_bytes"] == sum(math.ceil(m.weight.numel() / 8) for m in binary)
    assert result.size_bytes == result.files[0].stat().st_size
    # everything float stays 4 bytes per value: the file is packed bits + floats + a small header
    floats = 4 * result.notes["float_values"] + 4 * sum(m.out_channels for m in binary)
    assert (
        result.notes["packed_bytes"] + floats
        < result.size_bytes
        < result.notes["packed_bytes"] + floats + 20_000
    )
    save_model(out / "fp32.safetensors", model, make_ctx(model, out).card)
    assert (out / "fp32.safetensors").stat().st_size > 10 * result.size_bytes


def test_loaded_file_predicts_identically(compressed) -> None:
    _, result, _ = compressed
    loaded, card = load_xnor(result.files[0])
    assert card.model == "test_resnet"
    torch.testing.assert_close(logits(loaded, X), logits(result.module, X), rtol=0, atol=0)


def test_net_without_inner_convs_and_bad_options(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no inner ungrouped convolution"):
        get_compressor("xnor").compress(make_ctx(tiny_model("test_vit"), tmp_path))
    with pytest.raises(ConfigError, match="act_scale"):
        get_compressor("xnor", act_scale="yes").compress(make_ctx(tiny_model(), tmp_path))
    with pytest.raises(ConfigError, match="bits"):
        get_compressor("xnor", bits=1)
