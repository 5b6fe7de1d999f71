"""Per-image resizing (in the loader workers) and batched augmentation (on the training device).

Workers only decode and resize to a uint8 tensor, which keeps inter-process traffic 4x smaller than
float; the random augmentation runs once per batch with kornia, on the GPU when there is one.
"""

from __future__ import annotations

from collections.abc import Sequence

import kornia.augmentation as K
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from semicompact.data.invariances import effective, random_symmetry
from semicompact.errors import ConfigError

AUGMENT_PRESETS = ("standard", "none")


def to_uint8_tensor(img: Image.Image, size: int) -> torch.Tensor:
    """RGB PIL image -> uint8 (3, size, size), squash-resized (aspect not kept) with antialiasing."""
    t = TF.pil_to_tensor(img.convert("RGB") if img.mode != "RGB" else img)
    return resize_uint8(t, size)


def resize_uint8(t: torch.Tensor, size: int) -> torch.Tensor:
    """Squash-resize a uint8 (3, H, W) tensor to (3, size, size); a no-op when already that size."""
    if t.shape[-2:] == (size, size):
        return t.contiguous()
    return TF.resize(t, [size, size], interpolation=v2.InterpolationMode.BILINEAR, antialias=True)


class Clamp01(nn.Module):
    """Keep augmented pixels in the [0, 1] range the models expect."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp_(0.0, 1.0)


def build_augmentation(
    preset: str = "standard", vflip: bool = False, invariances: Sequence[str] | None = None
) -> nn.Module:
    """Batched training augmentation on float (B, 3, H, W) in [0, 1].

    "standard": left-right flip, optional up-down flip, rotation +-10 degrees, zoom 1.0-1.1 and
    brightness/contrast +-0.2 (the paper's fastai-style defaults); "none": identity. Declared
    ``invariances`` (``data.invariances``) replace the flips by random elements of their group:
    a flip or turn that is not declared is never applied.
    """
    if preset == "none":
        return nn.Identity()
    if preset != "standard":
        raise ConfigError(
            f"unknown augmentation preset '{preset}' for --augment: "
            f"choose one of {', '.join(AUGMENT_PRESETS)}"
        )
    ops: list[nn.Module] = random_symmetry(effective(invariances, vflip))
    ops += [
        K.RandomAffine(degrees=10.0, scale=(1.0, 1.1), padding_mode="reflection", p=0.75),
        K.ColorJitter(brightness=0.2, contrast=0.2, p=0.75),
        Clamp01(),
    ]
    return nn.Sequential(*ops)
