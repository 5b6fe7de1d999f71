"""Method registry, option parsing and the collapse guard."""

from __future__ import annotations

import pytest
import torch

from semicompact.errors import ConfigError
from semicompact.evaluate.metrics import chance_macro_f1, classification_metrics, collapse_check
from semicompact.methods import get_method, list_methods
from semicompact.methods._options import flag, parse_option_pairs
from semicompact.methods.mixmatch import MixMatchModule, sharpen
from semicompact.models import create_model

EXPECTED = {
    "supervised",
    "plain_distillation",
    "data_distillation",
    "model_distillation",
    "model_data_distillation",
    "fixmatch",
    "mixmatch",
    "kd",
}


def test_every_method_is_registered() -> None:
    assert set(list_methods()) >= EXPECTED


def test_paper_defaults() -> None:
    assert get_method("plain_distillation").config["confidence"] == 0.8
    assert get_method("model_distillation").config["teachers"] == ["resnet50", "resnet101", "efficientnet_b3"]
    assert len(get_method("data_distillation").config["transforms"]) == 6
    fm = get_method("fixmatch").config
    assert (fm["threshold"], fm["mu"], fm["lambda_u"]) == (0.95, 7, 1.0)
    mm = get_method("mixmatch").config
    assert (mm["k"], mm["temperature"], mm["alpha"]) == (2, 0.5, 0.75)
    assert (mm["lambda_u"], mm["rampup"], mm["clip_rampup"]) == (75.0, 16384, False)
    assert mm["rampup_fraction"] * 2**20 == 16384  # the published ramp, as a share of the run


def test_unknown_method_and_option_are_named() -> None:
    with pytest.raises(ConfigError, match=r"unknown --method 'fixmach'; available: .*fixmatch"):
        get_method("fixmach")
    with pytest.raises(
        ConfigError, match=r"--method fixmatch: unknown option\(s\) treshold; valid: .*threshold"
    ):
        get_method("fixmatch", treshold=0.9)


def test_option_pairs_are_typed_yaml_scalars() -> None:
    got = parse_option_pairs(["confidence=0.9", "teachers=a,b", "balance=true", "rounds=2", "x-y=[1, 2]"])
    assert got == {"confidence": 0.9, "teachers": "a,b", "balance": True, "rounds": 2, "x_y": [1, 2]}
    with pytest.raises(ConfigError, match="--option 'confidence' must look like key=value"):
        parse_option_pairs(["confidence"])
    assert parse_option_pairs(["cmd=!!python/object/apply:os.system ['true']"])["cmd"].startswith("!!python")


def test_sharpen_lowers_entropy_and_keeps_the_argmax() -> None:
    p = torch.tensor([[0.5, 0.3, 0.2]])
    q = sharpen(p, 0.5)
    assert torch.allclose(q, torch.tensor([[25, 9, 4]]) / 38.0)
    assert torch.allclose(sharpen(p, 1.0), p)


def test_chance_level_of_balanced_and_imbalanced_sets() -> None:
    assert chance_macro_f1([10, 10, 10, 10]) == pytest.approx(0.25)
    # majority predictor on 90/10: F1 of the majority class 2*0.9/1.9, divided by 2 classes
    assert chance_macro_f1([90, 10]) == pytest.approx(
        max(2 * 0.9 / 1.9 / 2, (2 * 0.9 / 2.8 + 2 * 0.1 / 1.2) / 2)
    )


def _metrics(preds: list[int], targets: list[int], k: int = 3) -> dict:
    probs = torch.nn.functional.one_hot(torch.tensor(preds), k).float()
    return classification_metrics(probs, torch.tensor(targets), [str(i) for i in range(k)])


def test_collapse_guard_flags_one_class_and_chance_but_not_a_working_model() -> None:
    targets = [0, 1, 2] * 10
    assert "one class" in collapse_check(_metrics([0] * 30, targets))
    assert collapse_check(_metrics(targets, targets)) is None
    rotated = [(t + 1) % 3 for t in targets]  # every prediction wrong, all classes used
    assert "chance level" in collapse_check(_metrics(rotated, targets))


@pytest.mark.parametrize(
    ("rampup", "clip", "done", "total", "expected"),
    [
        (None, False, 75, 640, 75.0),  # rampup null: the ramp is 1/64 of the run (10 of 640 steps)
        (None, False, 5, 640, 37.5),
        (None, False, 8192, 2**20, 37.5),  # a run of the published length: the published ramp
        (16384, True, 75, 150, 37.5),  # a fixed ramp, clipped: it spans the short run
        (16384, True, 150, 150, 75.0),
        (16384, False, 150, 150, 75.0 * 150 / 16384),  # the default fixed ramp: barely started
        (16384, True, 8192, 10**6, 37.5),  # a long run: the 16384-step ramp, unchanged
        (16384, True, 20000, 10**6, 75.0),
    ],
)
def test_mixmatch_rampup(rampup: int | None, clip: bool, done: int, total: int, expected: float) -> None:
    model = create_model("resnet18", num_classes=3, small_input=True)
    module = MixMatchModule(model, ["a", "b", "c"], rampup=rampup, clip_rampup=clip)
    assert MixMatchModule(model, ["a", "b", "c"]).clip_rampup is False
    module.body_steps = lambda: done  # type: ignore[method-assign]
    module.body_total_steps = lambda: total  # type: ignore[method-assign]
    assert module.unlabelled_weight() == pytest.approx(expected)


def test_boolean_option_must_be_true_or_false() -> None:
    assert flag({"clip_rampup": True}, "clip_rampup", "mixmatch") is True
    with pytest.raises(
        ConfigError, match=r"--method mixmatch: option clip_rampup must be true or false, got 'maybe'"
    ):
        flag(parse_option_pairs(["clip_rampup=maybe"]), "clip_rampup", "mixmatch")


def test_epoch_length_option_names_its_choices() -> None:
    from semicompact.methods._options import choice

    lengths = ("both", "labelled")
    assert choice({"epoch_length": "labelled"}, "epoch_length", lengths, "fixmatch") == "labelled"
    with pytest.raises(
        ConfigError, match=r"--method mixmatch: option epoch_length must be one of both, labelled, got 'pool'"
    ):
        choice({"epoch_length": "pool"}, "epoch_length", lengths, "mixmatch")
    for name in ("fixmatch", "mixmatch", "kd"):
        assert get_method(name).options["epoch_length"] == "both"


def test_warm_start_is_off_by_default_and_must_be_a_boolean(tmp_path) -> None:
    from semicompact.methods.consistency import warm_start
    from semicompact.training import TrainConfig

    for name in ("fixmatch", "mixmatch"):
        assert get_method(name).options["warm_start"] is False
    train = TrainConfig(data="x", out=str(tmp_path / "run"), model="resnet18")
    assert warm_start({"warm_start": False}, "mixmatch", train, tmp_path, tmp_path / "split.json") == (
        train,
        {},
    )
    with pytest.raises(
        ConfigError, match=r"--method fixmatch: option warm_start must be true or false, got 'yes'"
    ):
        warm_start({"warm_start": "yes"}, "fixmatch", train, tmp_path, tmp_path / "split.json")
