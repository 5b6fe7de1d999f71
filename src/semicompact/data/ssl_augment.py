"""FixMatch/MixMatch weak and strong augmentations, batched on the device with kornia.

Weak (Sohn et al. 2020): random left-right flip and a random integer translation of up to 12.5 %
of the side with reflect fill, so nothing but the image's own pixels appear. Strong: weak, then
RandAugment (``n`` operations per image, random magnitude up to ``m`` on the 0-10 scale of the
FixMatch code) and a gray Cutout square of up to half the image side.

kornia's own ``auto.RandAugment`` draws one set of operations and one magnitude for the whole
batch (every image in a batch gets the same ops), which is not FixMatch's per-image RandAugment;
:class:`BatchRandAugment` picks ops and magnitudes per image and runs each op once on the sub-batch
that chose it (a loop over the 14 ops, never over images). ``vflip=True`` adds up-down flips for
images without an up direction (microscopy, dermoscopy).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import kornia.augmentation as K
import kornia.enhance as KE
import kornia.geometry.transform as KT
import torch
from kornia.color import rgb_to_grayscale
from torch import nn

from semicompact.data.invariances import effective, random_symmetry
from semicompact.errors import ConfigError

GRAY = 0.5  # fill for pixels uncovered by rotate/shear/translate and for Cutout, as in FixMatch

# op(x, level, sign) with x (b, 3, H, W), level in [0, 1] and sign in {-1, +1}, both (b,)
Op = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _per_image(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1)


def _identity(x: torch.Tensor, level: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    return x


def _auto_contrast(x: torch.Tensor, level: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    span = hi - lo
    return torch.where(span > 1e-6, (x - lo) / span.clamp_min(1e-6), x)


def _equalize(x: torch.Tensor, level: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    return KE.equalize(x)


def _posterize(x: torch.Tensor, level: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    bits = (8 - torch.round(4 * level)).to(torch.int64)  # 8 (no-op) .. 4 bits
    return KE.posterize(x, bits)


def _solarize(x: torch.Tensor, level: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    # invert pixels >= threshold; level 0 puts it just above 1 so nothing flips (PIL's 256 of 255)
    return KE.solarize(x, thresholds=(1.0 - level) * (256 / 255))


def _color(x: torch.Tensor, level: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    return KE.adjust_saturation(x, 1.0 + sign * 0.9 * level)


def _contrast(x: torch.Tensor, level: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    # PIL-style: blend with the image's mean gray (kornia's adjust_contrast only scales)
    mean = rgb_to_grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    f = _per_image(1.0 + sign * 0.9 * level)
    return mean + f * (x - mean)


def _brightness(x: torch.Tensor, level: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    return x * _per_image(1.0 + sign * 0.9 * level)  # PIL-style: blend with black


def _sharpness(x: torch.Tensor, level: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    return KE.sharpness(x, 1.0 + sign * 0.9 * level)  # < 1 blurs, > 1 sharpens


def _gray_fill(warp: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Warp with zero padding around GRAY so uncovered pixels become GRAY."""
    return warp(x - GRAY) + GRAY


def _rotate(x: torch.Tensor, level: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    return _gray_fill(lambda t: KT.rotate(t, sign * 30.0 * level), x)


def _shear_x(x: torch.Tensor, level: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    s = torch.stack([sign * 0.3 * level, torch.zeros_like(level)], dim=1)
    return _gray_fill(lambda t: KT.shear(t, s), x)


def _shear_y(x: torch.Tensor, level: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    s = torch.stack([torch.zeros_like(level), sign * 0.3 * level], dim=1)
    return _gray_fill(lambda t: KT.shear(t, s), x)


def _translate_x(x: torch.Tensor, level: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    t = torch.stack([sign * 0.3 * level * x.shape[-1], torch.zeros_like(level)], dim=1)
    return _gray_fill(lambda u: KT.translate(u, t), x)


def _translate_y(x: torch.Tensor, level: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    t = torch.stack([torch.zeros_like(level), sign * 0.3 * level * x.shape[-2]], dim=1)
    return _gray_fill(lambda u: KT.translate(u, t), x)


# The FixMatch RandAugment pool (Sohn et al. 2020, table 12; Cutout is applied separately).
RANDAUGMENT_OPS: dict[str, Op] = {
    "identity": _identity,
    "auto_contrast": _auto_contrast,
    "equalize": _equalize,
    "rotate": _rotate,
    "posterize": _posterize,
    "solarize": _solarize,
    "color": _color,
    "contrast": _contrast,
    "brightness": _brightness,
    "sharpness": _sharpness,
    "shear_x": _shear_x,
    "shear_y": _shear_y,
    "translate_x": _translate_x,
    "translate_y": _translate_y,
}


class BatchRandAugment(nn.Module):
    """RandAugment with ops and magnitudes drawn per image: ``n`` ops each, level U(0, m/10]."""

    def __init__(self, n: int = 2, m: float = 10) -> None:
        super().__init__()
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(RANDAUGMENT_OPS):
            raise ConfigError(f"RandAugment n (ops per image) must be 1..{len(RANDAUGMENT_OPS)}, got {n!r}")
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not 0 < m <= 10:
            raise ConfigError(f"RandAugment m (magnitude, 0-10 scale) must be in (0, 10], got {m!r}")
        self.n = n
        self.m = float(m)
        self.names = tuple(RANDAUGMENT_OPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        ops = list(RANDAUGMENT_OPS.values())
        # drawn on the CPU generator so a seed gives the same views on every device
        choice = torch.randint(len(ops), (b, self.n))
        level = ((1.0 - torch.rand(b, self.n)) * (self.m / 10.0)).to(x.device, x.dtype)
        sign = (torch.randint(0, 2, (b, self.n)) * 2 - 1).to(x.device, x.dtype)
        out = x.clone()
        for s in range(self.n):
            for k, op in enumerate(ops):
                idx = (choice[:, s] == k).nonzero().squeeze(1)
                if idx.numel() == 0 or op is _identity:
                    continue
                idx = idx.to(x.device)
                out[idx] = op(out[idx], level[idx, s], sign[idx, s]).clamp(0.0, 1.0).to(x.dtype)
        return out

    def extra_repr(self) -> str:
        return f"n={self.n}, m={self.m}"


class Clamp01(nn.Module):
    """Keep pixels in [0, 1] after interpolation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(0.0, 1.0)


def _flip_translate(vflip: bool, translate: float, invariances: Sequence[str] | None) -> list[nn.Module]:
    if not 0 <= translate < 0.5:
        raise ConfigError(f"weak augmentation translate must be a fraction in [0, 0.5), got {translate!r}")
    ops: list[nn.Module] = random_symmetry(effective(invariances, vflip))
    if translate > 0:
        # nearest resampling makes the shift a whole number of pixels: no interpolation blur
        ops.append(
            K.RandomAffine(
                degrees=0.0,
                translate=(translate, translate),
                resample="nearest",
                padding_mode="reflection",
                p=1.0,
            )
        )
    return ops


def weak_augment(
    vflip: bool = False, translate: float = 0.125, invariances: Sequence[str] | None = None
) -> nn.Module:
    """FixMatch weak view: random flip (+ up-down flip if ``vflip``) and integer shift <= ``translate``.

    Declared ``invariances`` (``data.invariances``; ``vflip=True`` adds ``vflip``) replace the
    flips by random elements of their group; ``None`` keeps the left-right flip of the paper.
    """
    return nn.Sequential(*_flip_translate(vflip, translate, invariances))


def strong_augment(
    n: int = 2,
    m: float = 10,
    vflip: bool = False,
    translate: float = 0.125,
    cutout: float = 0.5,
    invariances: Sequence[str] | None = None,
) -> nn.Module:
    """FixMatch strong view: weak flip/shift, per-image RandAugment(n, m), gray Cutout square.

    ``cutout`` is the largest square side as a fraction of the image side (0 disables it); the
    flips follow ``invariances`` as in :func:`weak_augment` (RandAugment's small rotations and
    shears are perturbations, not flips, and stay).
    """
    if not 0 <= cutout <= 1:
        raise ConfigError(
            f"strong augmentation cutout must be a fraction of the side in [0, 1], got {cutout!r}"
        )
    ops = [*_flip_translate(vflip, translate, invariances), BatchRandAugment(n, m)]
    if cutout > 0:
        max_area = cutout * cutout
        ops.append(
            K.RandomErasing(scale=(min(0.01, max_area), max_area), ratio=(1.0, 1.0), value=GRAY, p=1.0)
        )
    ops.append(Clamp01())
    return nn.Sequential(*ops)
