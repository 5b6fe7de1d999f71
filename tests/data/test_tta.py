"""The ten test-time transforms do what their names say, on whole batches, with numbers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from semicompact.data.tta import (
    DEFAULT_GAMMA,
    PAPER_TTA,
    TTA_NAMES,
    TestTimeTransform,
    build_tta,
    canonical_tta_name,
    describe,
)
from semicompact.errors import ConfigError


def _tt(spec):
    (t,) = build_tta([spec])
    return t


@pytest.fixture
def batch() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(8, 3, 16, 20, generator=g)  # non-square so axis mix-ups cannot hide


def _step_image(noise: float = 0.0, seed: int = 0) -> torch.Tensor:
    """(1, 3, 32, 32): 0.2 on the left half, 0.8 on the right, plus Gaussian noise."""
    x = torch.full((1, 3, 32, 32), 0.2)
    x[..., 16:] = 0.8
    g = torch.Generator().manual_seed(seed)
    return (x + noise * torch.randn(x.shape, generator=g)).clamp(0, 1)


# --- flips: the seed library's "horizontal" flip flipped vertically --------------------------------


def test_hflip_reverses_width_not_height(batch):
    out = _tt("hflip")(batch)
    assert torch.equal(out, torch.flip(batch, dims=[3]))
    assert not torch.allclose(out, torch.flip(batch, dims=[2]))
    # a left-right ramp becomes a right-left ramp, rows unchanged
    ramp = torch.linspace(0, 1, 20).expand(1, 3, 16, 20)
    flipped = _tt("H Flip")(ramp)
    assert flipped[0, 0, 0, 0] == 1.0 and flipped[0, 0, 0, -1] == 0.0
    assert torch.equal(flipped[0, 0, 0], flipped[0, 0, 15])


def test_vflip_reverses_height_not_width(batch):
    out = _tt("vflip")(batch)
    assert torch.equal(out, torch.flip(batch, dims=[2]))
    assert not torch.allclose(out, torch.flip(batch, dims=[3]))


def test_hvflip_reverses_both(batch):
    out = _tt("H+V Flip")(batch)
    assert torch.equal(out, torch.flip(batch, dims=[2, 3]))
    assert not torch.allclose(out, torch.flip(batch, dims=[2]))
    assert not torch.allclose(out, torch.flip(batch, dims=[3]))


# --- gamma: the seed library's gamma did nothing ---------------------------------------------------


@pytest.mark.parametrize("gamma", [DEFAULT_GAMMA, 0.5, 1.5])
def test_gamma_is_x_to_the_gamma(batch, gamma):
    out = _tt({"name": "Gamma", "gamma": gamma})(batch)
    assert torch.allclose(out, batch**gamma, atol=1e-6)
    assert (out - batch).abs().mean() > 0.02  # it changes the image
    mid = _tt({"name": "gamma", "gamma": gamma})(torch.full((1, 3, 2, 2), 0.5))
    assert mid[0, 0, 0, 0].item() == pytest.approx(0.5**gamma, abs=1e-6)


def test_gamma_default_brightens_and_is_not_one():
    t = _tt("gamma")
    assert t.params["gamma"] == DEFAULT_GAMMA != 1.0
    assert t(torch.full((1, 3, 2, 2), 0.5)).mean() > 0.55


@pytest.mark.parametrize("bad", [1, 1.0, 0, -0.5, "x"])
def test_gamma_rejects_identity_and_nonpositive(bad):
    with pytest.raises(ConfigError, match="gamma"):
        build_tta([{"name": "gamma", "gamma": bad}])


def test_gamma_one_from_string_spec_is_rejected():
    with pytest.raises(ConfigError, match="unchanged"):
        build_tta(["gamma:gamma=1"])


# --- blurs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["blur", "gaussian_blur", "median_blur", "bilateral"])
def test_blurs_reduce_noise_variance_and_keep_constants(name):
    g = torch.Generator().manual_seed(1)
    noise = (0.5 + 0.1 * torch.randn(2, 3, 32, 32, generator=g)).clamp(0, 1)
    t = _tt(name)
    assert t(noise).var() < 0.6 * noise.var()
    const = torch.full((2, 3, 32, 32), 0.37)
    assert torch.allclose(t(const), const, atol=1e-6)


def test_blur_is_the_box_mean():
    x = torch.zeros(1, 3, 9, 9)
    x[..., 4, 4] = 1.0
    out = _tt("blur:kernel_size=3")(x)
    assert torch.allclose(out[0, 0, 3:6, 3:6], torch.full((3, 3), 1 / 9), atol=1e-6)
    assert out[0, 0, 2, 4] == 0 and out.sum() == pytest.approx(3.0, abs=1e-5)
    wide = _tt({"name": "Blurring", "kernel_size": 5})(x)
    assert wide[0, 0, 4, 4].item() == pytest.approx(1 / 25, abs=1e-6)


def test_gaussian_blur_matches_reference_and_is_symmetric(batch):
    sigma, k = 1.3, 5
    out = _tt({"name": "Gaussian Blur", "kernel_size": k, "sigma": sigma})(batch)
    # reference: separable normalised Gaussian, reflect padding, plain conv2d
    r = torch.arange(k, dtype=torch.float32) - k // 2
    g1 = torch.exp(-(r**2) / (2 * sigma**2))
    g1 = g1 / g1.sum()
    kernel = (g1[:, None] * g1[None, :]).expand(3, 1, k, k)
    ref = F.conv2d(F.pad(batch, (2, 2, 2, 2), mode="reflect"), kernel, groups=3)
    assert torch.allclose(out, ref, atol=1e-5)
    t = _tt("gaussian_blur")
    for dims in ([2], [3]):
        assert torch.allclose(t(torch.flip(batch, dims)), torch.flip(t(batch), dims), atol=1e-6)
    sq = batch[..., :16]
    assert torch.allclose(t(sq.transpose(2, 3)), t(sq).transpose(2, 3), atol=1e-6)


def test_median_removes_impulses_that_box_blur_spreads():
    x = torch.full((1, 3, 32, 32), 0.5)
    x[..., 2::6, 2::6] = 1.0  # isolated salt
    x[..., 5::6, 5::6] = 0.0  # isolated pepper
    median = _tt("Median Blur")(x)
    assert torch.allclose(median, torch.full_like(x, 0.5), atol=1e-6)
    box = _tt("blur")(x)
    corrupted_before = ((x - 0.5).abs() > 1e-3).sum()
    corrupted_box = ((box - 0.5).abs() > 1e-3).sum()
    assert corrupted_box >= 5 * corrupted_before  # spread to the 3x3 neighbourhoods, not removed


def test_bilateral_keeps_edges_sharper_than_gaussian_and_smooths_flat_noise():
    clean = _step_image()
    bil = _tt({"name": "Bilateral Filter", "kernel_size": 5, "sigma_space": 1.5})
    gau = _tt({"name": "gaussian_blur", "kernel_size": 5, "sigma": 1.5})
    edge = lambda img: (img[0, 0, :, 16] - img[0, 0, :, 15]).mean().item()  # noqa: E731
    assert edge(clean) == pytest.approx(0.6)
    assert edge(bil(clean)) > 0.58  # edge kept
    assert edge(gau(clean)) < 0.4  # edge smeared
    noisy = _step_image(noise=0.03)
    flat = (slice(None), slice(None), slice(4, 28), slice(3, 10))  # away from the edge
    assert bil(noisy)[flat].std() < 0.6 * noisy[flat].std()
    assert edge(bil(noisy)) > edge(gau(noisy)) + 0.15


# --- equalise and 2D filter ------------------------------------------------------------------------


def test_equalize_spreads_a_low_contrast_histogram():
    g = torch.Generator().manual_seed(2)
    # 128 px: on tiny images PIL-style equalisation (integer step) saturates the top bin
    low = 0.4 + 0.2 * torch.rand(2, 3, 128, 128, generator=g)
    out = _tt("Equalize histogram")(low)
    assert out.min() <= 0.01 and out.max() >= 0.95
    assert out.std() > 2.5 * low.std()
    hist = torch.histc(out[0, 0], bins=5, min=0, max=1) / out[0, 0].numel()
    assert torch.all((hist - 0.2).abs() < 0.06), hist  # near uniform
    # order is kept: equalisation is a monotone mapping per channel
    flat_in, flat_out = low[0, 0].flatten(), out[0, 0].flatten()
    order = flat_in.argsort()
    assert torch.all(flat_out[order].diff() >= -1e-6)


def test_filter2d_identity_sharpen_and_custom_kernel(batch):
    ident = _tt("filter2d:kernel=[[0,0,0],[0,1,0],[0,0,0]]")
    assert torch.allclose(ident(batch), batch, atol=1e-6)

    sharpen = _tt("2D-Filter")
    assert sharpen.params["kernel"] == [[0, -1, 0], [-1, 5, -1], [0, -1, 0]]
    ramp = torch.zeros(1, 3, 8, 8)
    ramp[..., 4:] = 0.6
    ramp[..., :4] = 0.3
    out = sharpen(ramp)
    assert out[0, 0, 4, 4] - out[0, 0, 4, 3] > 0.6  # edge contrast up from 0.3 (0.9 vs 0.0)
    assert torch.allclose(out[..., :2], ramp[..., :2], atol=1e-6)  # flat regions unchanged

    shift = {"name": "filter2d", "kernel": [[0, 0, 0], [1, 0, 0], [0, 0, 0]]}
    shifted = _tt(shift)(batch)  # correlation with a left tap: out[x] = in[x - 1]
    assert torch.allclose(shifted[..., 1:], batch[..., :-1], atol=1e-6)
    five = [[1 / 25] * 5 for _ in range(5)]
    assert torch.allclose(_tt({"name": "filter2d", "kernel": five})(batch), _tt("blur:kernel_size=5")(batch))


@pytest.mark.parametrize(
    "kernel", [[[1, 2], [3, 4]], [[1, 2, 3], [4, 5, 6]], [[0, 0, 0], [0, "a", 0], [0, 0, 0]], 3, []]
)
def test_filter2d_rejects_bad_kernels(kernel):
    with pytest.raises(ConfigError, match="kernel"):
        build_tta([{"name": "filter2d", "kernel": kernel}])


# --- every transform ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TTA_NAMES)
def test_every_transform_keeps_shape_dtype_range_on_a_batch(name):
    g = torch.Generator().manual_seed(3)
    x = torch.rand(8, 3, 32, 32, generator=g)
    t = _tt(name)
    out = t(x)
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert out.min() >= 0 and out.max() <= 1
    assert not torch.allclose(out, x)  # it does something
    assert torch.equal(t(x), out)  # deterministic
    # batched == one image at a time
    assert torch.allclose(torch.cat([t(x[i : i + 1]) for i in range(8)]), out, atol=1e-5)
    assert t(x.double()).dtype == torch.float64


@pytest.mark.parametrize(
    ("seed_name", "canonical"),
    [
        ("H Flip", "hflip"),
        ("V Flip", "vflip"),
        ("H+V Flip", "hvflip"),
        ("Blurring", "blur"),
        ("Gamma", "gamma"),
        ("Gaussian Blur", "gaussian_blur"),
        ("Median Blur", "median_blur"),
        ("Bilateral Filter", "bilateral"),
        ("Equalize histogram", "equalize"),
        ("2D-Filter", "filter2d"),
        ("flipLR", "hflip"),
        ("horizontal_flip", "hflip"),
        ("vertical flip", "vflip"),
        ("GAUSSIAN_BLUR", "gaussian_blur"),
        ("histogram equalization", "equalize"),
    ],
)
def test_seed_names_map_to_canonical(seed_name, canonical):
    assert canonical_tta_name(seed_name) == canonical
    assert _tt(seed_name).name == canonical


def test_unknown_name_and_parameter_are_config_errors():
    with pytest.raises(ConfigError, match=r"unknown test-time transform 'rotate'.*hflip.*filter2d"):
        build_tta(["rotate"])
    with pytest.raises(ConfigError, match="valid parameters: kernel_size"):
        build_tta(["blur:sigma=2"])
    with pytest.raises(ConfigError, match="key=value"):
        build_tta(["blur:5"])
    with pytest.raises(ConfigError, match="odd integer"):
        build_tta(["median_blur:kernel_size=4"])
    with pytest.raises(ConfigError, match="'name'"):
        build_tta([{"gamma": 0.5}])


def test_build_tta_parses_specs_and_describe_lists_all():
    ts = build_tta(["H Flip", "gamma:gamma=1.5", "bilateral:kernel_size=7,sigma_color=0.2", {"name": "blur"}])
    assert [t.name for t in ts] == ["hflip", "gamma", "bilateral", "blur"]
    assert ts[1].params == {"gamma": 1.5}
    assert ts[2].params == {"kernel_size": 7, "sigma_color": 0.2, "sigma_space": 1.5}
    assert str(ts[1]) == "gamma:gamma=1.5" and str(ts[0]) == "hflip"
    assert isinstance(ts[0], TestTimeTransform)
    assert [t.name for t in build_tta(list(PAPER_TTA))] == list(PAPER_TTA)
    text = describe()
    assert len(text.splitlines()) == 12  # the paper's ten and the two quarter turns (EXTRA_TTA)
    for name in TTA_NAMES:
        assert name in text
    assert "2D-Filter" in text and "Equalize histogram" in text
