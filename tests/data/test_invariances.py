"""Declared invariances: a flip or turn that is not declared is never applied, anywhere."""

from __future__ import annotations

import json

import kornia.augmentation as K
import pytest
import torch
from _shared import cli_error

from semicompact.data import ssl_augment
from semicompact.data.invariances import RandomGroupElement, group_names, parse_invariances
from semicompact.data.ssl_augment import strong_augment, weak_augment
from semicompact.data.transforms import build_augmentation
from semicompact.data.tta import PAPER_TTA, TTA_NAMES
from semicompact.errors import ConfigError
from semicompact.methods.teachers import teacher_key
from semicompact.methods.views import run_transforms
from semicompact.training import TrainConfig

SIZE = 32


def _pattern(n: int = 64) -> torch.Tensor:
    """Channel 0 ramps up every 8 rows (a sawtooth in y), channel 1 every 8 columns (in x): each
    image says where its top and its left are, locally, so shifts, small rotations and Cutout do
    not hide it, while an up-down flip reverses channel 0's ramps and a quarter turn moves them."""
    ramp = (torch.arange(SIZE) % 8).float() / 7
    x = torch.full((n, 3, SIZE, SIZE), 0.5)
    x[:, 0] = ramp.view(SIZE, 1).expand(SIZE, SIZE) * 0.8 + 0.1
    x[:, 1] = ramp.view(1, SIZE).expand(SIZE, SIZE) * 0.8 + 0.1
    return x


def _score(d: torch.Tensor) -> torch.Tensor:
    """Per image: (rising steps - falling steps) / steps; +0.81 for the pattern, -0.81 flipped."""
    pos = (d > 1e-3).flatten(1).sum(1).float()
    neg = (d < -1e-3).flatten(1).sum(1).float()
    return (pos - neg) / (pos + neg).clamp_min(1)


def up_score(x: torch.Tensor) -> torch.Tensor:
    return _score(x[:, 0, 1:, :] - x[:, 0, :-1, :])


def left_score(x: torch.Tensor) -> torch.Tensor:
    return _score(x[:, 1, :, 1:] - x[:, 1, :, :-1])


def upside_down(x: torch.Tensor) -> int:
    """Images whose channel-0 ramps fall down the rows."""
    return int((up_score(x) < 0).sum())


def mirrored(x: torch.Tensor) -> int:
    return int((left_score(x) < 0).sum())


def turned(x: torch.Tensor) -> int:
    """Images whose channel-0 bands run up-down (more change along x than along y): a quarter turn."""
    ey = (x[:, 0, 1:, :] - x[:, 0, :-1, :]).abs().flatten(1).mean(1)
    ex = (x[:, 0, :, 1:] - x[:, 0, :, :-1]).abs().flatten(1).mean(1)
    return int((ex > ey).sum())


# RandAugment's own rotation (+-30 degrees) and shears, twice, can tip a band past 45 degrees
STRONG_TILT = 3


@pytest.fixture
def geometric_randaugment(monkeypatch):
    """RandAugment's geometric ops only: the photometric ones (solarize inverts pixels) would hide
    the pattern, and they move no pixel, so they cannot flip an image."""
    ops = {k: v for k, v in ssl_augment.RANDAUGMENT_OPS.items() if k in ("identity", "rotate", "shear_x",
           "shear_y", "translate_x", "translate_y")}  # fmt: skip
    monkeypatch.setattr(ssl_augment, "RANDAUGMENT_OPS", ops)


def _views(invariances):
    return {
        "train augmentation": build_augmentation("standard", invariances=invariances),
        "weak": weak_augment(invariances=invariances),
        "strong": strong_augment(invariances=invariances),
    }


def test_orientation_measure_sees_flips_and_turns() -> None:
    x = _pattern(2)
    # 31 steps down the rows: 28 rising within the ramps, 3 falling between them
    assert up_score(x).tolist() == pytest.approx([25 / 31, 25 / 31])
    assert up_score(x.flip(2)).tolist() == pytest.approx([-25 / 31, -25 / 31])
    assert left_score(x.flip(3)).tolist() == pytest.approx([-25 / 31, -25 / 31])
    assert up_score(torch.rot90(x, 1, dims=[2, 3])).abs().max() < 0.3


@pytest.mark.usefixtures("geometric_randaugment")
def test_without_vflip_no_view_turns_the_image_upside_down() -> None:
    """A chest X-ray: left-right flips declared, no up-down flip, no turn."""
    torch.manual_seed(0)
    x = _pattern(128)
    for name, view in _views(["hflip"]).items():
        out = view.train()(x.clone())
        assert upside_down(out) == 0, name
        assert turned(out) <= (STRONG_TILT if name == "strong" else 0), name
        assert 32 <= mirrored(out) <= 96, name  # the declared flip does happen
    kept = run_transforms({"transforms": list(PAPER_TTA)}, ["hflip"])
    assert [str(t) for t in kept] == ["hflip", "blur", "gaussian_blur", "gamma"]
    for t in kept:
        assert upside_down(t(x[:4])) == turned(t(x[:4])) == 0, t.name


@pytest.mark.usefixtures("geometric_randaugment")
def test_with_nothing_declared_no_view_flips_at_all() -> None:
    torch.manual_seed(1)
    x = _pattern(128)
    for name, view in _views([]).items():
        out = view.train()(x.clone())
        assert upside_down(out) == mirrored(out) == 0, name
        assert turned(out) <= (STRONG_TILT if name == "strong" else 0), name
    kept = run_transforms({"transforms": list(TTA_NAMES)}, [])
    assert [t.name for t in kept] == [n for n in TTA_NAMES if n not in ("hflip", "vflip", "hvflip")]


@pytest.mark.usefixtures("geometric_randaugment")
def test_declared_vflip_and_rot90_are_used() -> None:
    """The control: the same measures see the flips and turns once they are declared."""
    torch.manual_seed(2)
    x = _pattern(128)
    for name, view in _views(["hflip", "vflip"]).items():
        out = view.train()(x.clone())
        assert 32 <= upside_down(out) <= 96, name
        assert turned(out) <= (STRONG_TILT if name == "strong" else 0), name
    for name, view in _views(["rot90"]).items():
        assert 32 <= turned(view.train()(x.clone())) <= 96, name


def test_the_group_of_the_declared_names() -> None:
    assert group_names([]) == ["identity"]
    assert group_names(["hflip", "vflip"]) == ["identity", "hflip", "rot180", "vflip"]
    assert group_names(["rot90"]) == ["identity", "rot90", "rot180", "rot270"]
    assert len(group_names(["hflip", "rot90"])) == 8
    # hvflip (a 180-degree turn) is allowed by hflip + vflip and by rot90, not by hflip alone
    assert [t.name for t in run_transforms({"transforms": ["hflip", "vflip", "hvflip"]}, ["rot90"])] == [
        "hvflip"
    ]
    assert len(run_transforms({"transforms": ["hflip", "vflip", "hvflip"]}, ["hflip", "vflip"])) == 3


def test_random_group_element_draws_every_element() -> None:
    torch.manual_seed(0)
    x = torch.arange(16.0).view(1, 1, 4, 4).repeat(400, 1, 1, 1)
    out = RandomGroupElement([(0, 0), (1, 0), (2, 0), (3, 0)])(x)
    seen = {tuple(o.flatten().tolist()) for o in out}
    assert len(seen) == 4
    assert (out[:, :, 0, 0] == 0).float().mean() == pytest.approx(0.25, abs=0.08)


def test_default_keeps_the_old_modules_and_random_numbers() -> None:
    """Nothing declared: the same kornia flips as before, so a seed gives the same views."""
    assert isinstance(build_augmentation("standard")[0], K.RandomHorizontalFlip)
    assert not any(isinstance(m, K.RandomVerticalFlip) for m in build_augmentation("standard"))
    assert isinstance(build_augmentation("standard", vflip=True)[1], K.RandomVerticalFlip)
    x = torch.rand(8, 3, SIZE, SIZE)
    outs = []
    for view in (weak_augment(vflip=True), weak_augment(invariances=["hflip", "vflip"])):
        torch.manual_seed(5)
        outs.append(view(x))
    assert torch.equal(outs[0], outs[1])
    # vflip=True adds vflip to what is declared (older callers pass vflip only)
    assert [type(m) for m in weak_augment(vflip=True, invariances=["hflip"])][:2] == [
        K.RandomHorizontalFlip,
        K.RandomVerticalFlip,
    ]
    # TTA with nothing declared: every transform as given, as before
    assert [t.name for t in run_transforms({"transforms": list(PAPER_TTA)}, None)] == list(PAPER_TTA)


def test_config_normalises_invariances_and_vflip() -> None:
    assert TrainConfig(data="d").invariances is None
    c = TrainConfig(data="d", invariances="rot90, HFLIP")
    assert (c.invariances, c.vflip) == (["hflip", "rot90"], True)  # hflip + rot90 include vflip
    c = TrainConfig(data="d", invariances="hflip", vflip=True)
    assert (c.invariances, c.vflip) == (["hflip", "vflip"], True)
    c = TrainConfig(data="d", invariances="none")
    assert (c.invariances, c.vflip) == ([], False)
    c = TrainConfig(data="d", invariances=["vflip"])
    assert (c.invariances, c.vflip) == (["vflip"], True)
    assert parse_invariances(None) is None


def test_teacher_cache_key_is_unchanged_when_nothing_is_declared() -> None:
    """The key of a teacher cached before invariances existed (computed with that code)."""
    config = TrainConfig(data="cells", model="resnet18", seed=3)
    assert teacher_key(config, "abc") == "resnet18-ba47d0e61ff0"
    # nor by the memory layout (a speed setting added later)
    layout = TrainConfig(data="cells", model="resnet18", seed=3, channels_last=False)
    assert teacher_key(layout, "abc") == "resnet18-ba47d0e61ff0"
    assert teacher_key(TrainConfig(data="cells", model="resnet18", seed=3, invariances="hflip"), "abc") != (
        "resnet18-ba47d0e61ff0"
    )


def test_unknown_invariance_is_one_clear_error(cells_dir, tmp_path, capsys) -> None:
    with pytest.raises(ConfigError) as info:
        TrainConfig(data="d", invariances="hflip,diag,Upside")
    valid = "valid names: hflip, vflip, rot90, rot180 (or none)"
    assert str(info.value) == f"--invariances: unknown invariance 'diag', 'upside'; {valid}"
    line = cli_error(
        capsys, "train", str(cells_dir), "--out", str(tmp_path / "r"), "--invariances", "hflip,tilt"
    )
    assert line == f"error: --invariances: unknown invariance 'tilt'; {valid}"
    assert not (tmp_path / "r").exists()


def test_cli_invariances_reach_the_run_and_its_augmentation(cells_dir, tmp_path, capsys, monkeypatch) -> None:
    from _shared import run_cli, train_args

    from semicompact.data import datamodule
    from semicompact.training.run import load_run_data

    seen = []

    def recording(preset, vflip=False, invariances=None):
        seen.append((preset, vflip, invariances))
        return build_augmentation(preset, vflip=vflip, invariances=invariances)

    monkeypatch.setattr(datamodule, "build_augmentation", recording)

    out = tmp_path / "xray"
    args = train_args(cells_dir, out, "--invariances", "vflip", "--max-steps", "3", "--head-steps", "1")
    code, _, err = run_cli(capsys, *args, "--n-labelled", "8", "--batch-size", "16")
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    assert (config["invariances"], config["vflip"]) == (["vflip"], True)
    assert seen and all(call == ("standard", True, ["vflip"]) for call in seen)  # the training run's
    flips = [type(m) for m in load_run_data(out).augment][:2]
    assert flips == [K.RandomVerticalFlip, K.RandomAffine]  # no left-right flip: it was not declared


def test_quarter_turn_views_only_where_rot90_is_declared() -> None:
    from semicompact.data.invariances import ELEMENTS, apply_element

    specs = {"transforms": ["hflip", "hvflip", "rot90", "Rotate 270"]}
    assert [t.name for t in run_transforms(specs, ["rot90"])] == ["hvflip", "rot90", "rot270"]
    assert [t.name for t in run_transforms(specs, ["hflip"])] == ["hflip"]
    assert [t.name for t in run_transforms(specs, None)] == ["hflip", "hvflip", "rot90", "rot270"]
    x = _pattern(4)
    rot90, rot270 = run_transforms({"transforms": ["rot90", "rot270"]}, ["rot90"])
    assert torch.equal(rot90(x), apply_element(x, ELEMENTS["rot90"]))
    assert torch.equal(rot270(rot90(x)), x)
    assert turned(rot90(x)) == turned(rot270(x)) == 4
    with pytest.raises(ValueError, match="square images"):
        rot90(torch.rand(1, 3, 8, 6))


def test_fixmatch_and_mixmatch_modules_take_the_declared_invariances() -> None:
    from semicompact.methods.fixmatch import FixMatchModule
    from semicompact.methods.mixmatch import MixMatchModule
    from semicompact.models import create_model

    model = create_model("resnet18", 2)
    fix = FixMatchModule(model, ["a", "b"], invariances=["rot90"])
    assert isinstance(fix.weak[0], RandomGroupElement) and isinstance(fix.strong[0], RandomGroupElement)
    assert fix.weak[0].elements == [(0, 0), (1, 0), (2, 0), (3, 0)]
    mix = MixMatchModule(model, ["a", "b"], invariances=[])
    assert not any(isinstance(m, (K.RandomHorizontalFlip, RandomGroupElement)) for m in mix.weak)
    legacy = FixMatchModule(model, ["a", "b"], vflip=True)  # older callers: vflip only
    assert [type(m) for m in legacy.weak][:2] == [K.RandomHorizontalFlip, K.RandomVerticalFlip]
