"""FixMatch weak/strong augmentations: ranges, what the weak view may do, per-image randomness, speed."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

from semicompact.data import ssl_augment
from semicompact.data.ssl_augment import RANDAUGMENT_OPS, BatchRandAugment, strong_augment, weak_augment
from semicompact.errors import ConfigError


def _smooth(b: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth random colour images (like cells/lesions), so a small shift changes few pixels."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(b, 3, 4, 4, generator=g)
    return F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


def _random(b: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _match_flip_shift(out: torch.Tensor, img: torch.Tensor, max_shift: int, vflip: bool) -> tuple | None:
    """The (vertical flip, horizontal flip, dy, dx) that turns img into out on the interior, or None."""
    m = max_shift
    h, w = img.shape[-2:]
    for vf in (False, True) if vflip else (False,):
        for hf in (False, True):
            src = img
            if vf:
                src = torch.flip(src, [1])
            if hf:
                src = torch.flip(src, [2])
            for dy in range(-m, m + 1):
                for dx in range(-m, m + 1):
                    a = out[:, m : h - m, m : w - m]
                    b = src[:, m - dy : h - m - dy, m - dx : w - m - dx]
                    if torch.equal(a, b):
                        return vf, hf, dy, dx
    return None


@pytest.mark.parametrize("make", [weak_augment, strong_augment])
@pytest.mark.parametrize("b", [1, 64])
def test_views_keep_shape_dtype_range(make, b):
    torch.manual_seed(0)
    x = _random(b)
    out = make()(x)
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert out.min() >= 0 and out.max() <= 1


def test_weak_view_is_only_a_flip_and_integer_shift():
    torch.manual_seed(1)
    x = _random(32)  # every pixel distinct: a match means exactly that flip/shift
    out = weak_augment()(x)
    found = [_match_flip_shift(out[i], x[i], max_shift=4, vflip=False) for i in range(32)]
    assert all(f is not None for f in found), found
    assert not any(vf for vf, _, _, _ in found)  # no up-down flips unless asked
    flips = sum(hf for _, hf, _, _ in found)
    assert 6 <= flips <= 26  # p = 0.5
    shifts = {(dy, dx) for _, _, dy, dx in found}
    assert len(shifts) >= 8 and max(max(abs(dy), abs(dx)) for dy, dx in shifts) >= 3  # up to 4 px = 12.5 %


def test_weak_view_keeps_a_constant_image_constant():
    torch.manual_seed(2)
    const = torch.full((16, 3, 32, 32), 0.42)
    assert torch.equal(weak_augment()(const), const)  # reflect fill: no new values appear
    assert torch.equal(weak_augment(vflip=True)(const), const)


def test_vflip_option_adds_up_down_flips():
    torch.manual_seed(3)
    x = _random(24)
    out = weak_augment(vflip=True, translate=0.0)(x)
    kinds = [_match_flip_shift(out[i], x[i], max_shift=0, vflip=True) for i in range(24)]
    assert all(k is not None for k in kinds)
    assert 3 <= sum(vf for vf, _, _, _ in kinds) <= 21
    assert 3 <= sum(hf for _, hf, _, _ in kinds) <= 21


def test_strong_views_differ_much_more_than_weak_views():
    x = _smooth(64)
    x = (x + x.flip(3)) / 2  # left-right symmetric, so only the weak shift (not the flip) counts
    torch.manual_seed(4)
    weak = (weak_augment()(x) - x).abs().mean().item()
    strong = (strong_augment()(x) - x).abs().mean().item()
    assert weak < 0.08
    assert strong > 2 * weak, (weak, strong)  # measured 0.061 vs 0.143-0.163
    # Cutout: every strong view has a gray square (or RandAugment moved many pixels)
    torch.manual_seed(4)
    cut = strong_augment(n=1, m=0.01, translate=0.0)(x)  # near-identity RandAugment: Cutout stands out
    gray = (cut == 0.5).flatten(1).float().mean(1)
    assert (gray >= 0.009).float().mean() > 0.9 and gray.max() <= 0.26


def test_randaugment_picks_ops_per_image():
    img = _smooth(1, seed=5).expand(32, -1, -1, -1).contiguous()
    torch.manual_seed(5)
    out = BatchRandAugment(n=2, m=10)(img)
    distinct = {tuple(o.flatten()[::97].tolist()) for o in out}
    assert len(distinct) >= 20  # kornia's RandAugment would give identical ops to all 32 copies


def test_deterministic_under_manual_seed():
    x = _smooth(8)
    views = []
    for seed in (7, 7, 8):
        torch.manual_seed(seed)
        views.append((weak_augment()(x), strong_augment()(x)))
    assert torch.equal(views[0][0], views[1][0]) and torch.equal(views[0][1], views[1][1])
    assert not torch.equal(views[0][1], views[2][1])


@pytest.mark.parametrize(
    "name", [n for n in RANDAUGMENT_OPS if n not in ("identity", "auto_contrast", "equalize")]
)
def test_each_randaugment_op_is_identity_at_level_zero_and_acts_at_full_level(name):
    op = RANDAUGMENT_OPS[name]
    x = _random(4, seed=6)
    zero, one, sign = torch.zeros(4), torch.ones(4), torch.tensor([1.0, -1.0, 1.0, -1.0])
    assert torch.allclose(op(x, zero, sign), x, atol=1e-4)
    full = op(x, one, sign).clamp(0, 1)
    assert full.shape == x.shape
    assert (full - x).abs().mean() > 0.01


def test_strong_augment_runs_ops_per_batch_not_per_image(monkeypatch):
    calls = []

    def counted(f):
        return lambda x, lv, s: calls.append(x.shape[0]) or f(x, lv, s)

    patched = {k: (f if k == "identity" else counted(f)) for k, f in RANDAUGMENT_OPS.items()}
    monkeypatch.setattr(ssl_augment, "RANDAUGMENT_OPS", patched)
    torch.manual_seed(9)
    x = _random(64)
    strong_augment(n=2)(x)
    assert 100 <= sum(calls) <= 128  # every image gets 2 ops (identity, 1 in 14, is skipped)
    assert len(calls) <= 2 * (len(patched) - 1) < 64  # one call per op and round, each on a sub-batch
    t0 = time.perf_counter()
    for _ in range(3):
        strong_augment()(x)
        weak_augment()(x)
    assert (time.perf_counter() - t0) / 3 < 1.5  # ~0.08 s measured on one CPU thread


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="n"):
        strong_augment(n=0)
    with pytest.raises(ConfigError, match="m"):
        strong_augment(m=11)
    with pytest.raises(ConfigError, match="translate"):
        weak_augment(translate=0.6)
    with pytest.raises(ConfigError, match="cutout"):
        strong_augment(cutout=1.5)
