"""Resizing to uint8 and the batched kornia augmentation (the flip must mirror left-right)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from semicompact.data.transforms import build_augmentation, to_uint8_tensor
from semicompact.errors import ConfigError


def test_to_uint8_tensor_squashes() -> None:
    t = to_uint8_tensor(Image.new("RGB", (40, 20), (10, 20, 30)), 16)
    assert t.dtype == torch.uint8 and t.shape == (3, 16, 16)
    assert t[:, 8, 8].tolist() == [10, 20, 30]
    assert to_uint8_tensor(Image.new("L", (16, 16), 5), 16).shape == (3, 16, 16)


def _asymmetric(batch: int = 64) -> torch.Tensor:
    x = torch.zeros(batch, 3, 8, 8)
    x[..., :, :2] = 1.0  # a bright LEFT edge
    x[..., :2, :] += 0.5  # and a half-bright TOP edge
    return x.clamp(0, 1)


def test_horizontal_flip_mirrors_left_right() -> None:
    torch.manual_seed(0)
    flip = build_augmentation("standard")[0]
    x = _asymmetric()
    y = flip(x)
    mirrored = torch.flip(x, dims=[-1])
    same = (y == x).flatten(1).all(1)
    flipped = (y == mirrored).flatten(1).all(1)
    assert bool((same | flipped).all())  # every image is either untouched or left-right mirrored
    assert 10 < int(flipped.sum()) < 54
    assert not torch.equal(torch.flip(x, dims=[-2]), mirrored)  # (the test image tells the axes apart)


def test_vertical_flip_only_when_asked() -> None:
    assert len(build_augmentation("standard", vflip=True)) == len(build_augmentation("standard")) + 1


def test_standard_pipeline_shape_range_and_randomness() -> None:
    torch.manual_seed(0)
    aug = build_augmentation("standard", vflip=True)
    x = torch.rand(16, 3, 32, 32)
    y = aug(x)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    assert not torch.allclose(y, x)


def test_none_is_identity_and_unknown_preset_fails() -> None:
    x = torch.rand(2, 3, 8, 8)
    assert torch.equal(build_augmentation("none")(x), x)
    with pytest.raises(
        ConfigError, match=r"unknown augmentation preset 'heavy' for --augment: choose one of standard"
    ):
        build_augmentation("heavy")
