"""Equal-budget acceptance test: at the same optimiser steps and labels, unlabelled images beat a
converged supervised base on the cell data, in the mean of two seeds.

Setting (the library defaults except the budget): the synthetic cells at 32 px (150 train images
per class, 50 test per class, no unlabelled/ folder), MobileNetV2 with its ImageNet weights, small
input, 5 labels per class of which 1 is the validation image (inside the budget: 16 train + 4 val
labels), the other 580 train images as the unlabelled pool, batch 16, a fixed schedule of N = 100
optimiser steps (10 head-only), no early stopping, the last model kept, body LR x0.1 (the default),
channels-last training (the default since 2026-12-04), seeds 0 and 1.

Measured 2026-12-04 on this machine (test macro-F1 on 200 images, seeds 0 / 1 and their mean;
seconds per run on one core shared with two benchmark processes):

==================================  =======================  =====
run (N = 100 steps unless said)     macro-F1 s0 / s1 (mean)  s/run
==================================  =======================  =====
supervised, N                       0.588 / 0.621 (0.604)       16
supervised, 2N                      0.632 / 0.586 (0.609)       26
supervised, 4N                      0.639 / 0.584 (0.612)       58
flexmatch (mu 2, no threshold       0.755 / 0.725 (0.740)       60
warm-up: the bench's row
flexmatch_no_warmup)
freematch (mu 2)                    0.657 / 0.701 (0.679)       65
softmatch (mu 2)                    0.734 / 0.653 (0.694)       52
fixmatch (mu 2)                     0.646 / 0.665 (0.656)       53
flexmatch, pool cut to 8 images     0.542 / 0.498 (0.520)       29
==================================  =======================  =====

One seed is not enough for any of these checks: from N to 2N steps the base moves by +0.044 at
seed 0 and -0.035 at seed 1 (the noise of 4 training labels per class, not a trend: 4N gives the
same mean), and FreeMatch's gain over the base at 2N is 0.025 at seed 0 and 0.115 at seed 1. Until
2026-12-03 the test used seed 0 alone with NCHW training; channels-last changed the float rounding
and with it the seed-0 numbers by up to 0.04 (base 0.599 -> 0.588, 2N 0.628 -> 0.632), which broke
its convergence check. The means: the base is converged (N -> 2N -> 4N: 0.604, 0.609, 0.612).
Over the base at N and at 2N steps, FlexMatch gains 0.136 / 0.131 (asserted: by 0.08 over both),
FreeMatch 0.074 / 0.070 (asserted: by 0.04 over both), SoftMatch 0.090 / 0.085, FixMatch 0.052 /
0.047 (SoftMatch and FixMatch are left out of the run to keep the file within about 7 minutes on one
core). The control is FlexMatch with the pool cut to 8 images (the same steps, thresholds and EMA; 8
instead of 32 unlabelled images per step): without the information in the pool it falls below the
base, far from the margin.

Measured 2026-12-03 with seed 0 and NCHW, not re-measured: self-training is not robust here
(plain_distillation's teacher temperature, fitted on 4 validation images, was 19 at seed 1, so no
pseudo-label passed confidence 0.8; Noisy Student with its defaults fell below the base at both
seeds). With the body at x0.3 the supervised base goes from 0.677 / 0.578 (N) to 0.751 / 0.682 (2N),
not converged; with the body at x1 (the bench recipes' setting) FixMatch reaches 0.768 / 0.784 at N
but the base moves from 0.559 / 0.604 (N) to 0.589 / 0.684 (2N) and 0.753 / 0.609 (4N), so no
converged comparison exists there within a test's budget. With 10 labels per class (x0.1) the base
is 0.791 at N and 0.823 at 2N, FixMatch 0.833 (seed 0): no margin. Runs are deterministic on one
CPU (the same settings gave the same F1 twice, and CI's numbers equal this machine's); another
machine may differ by float rounding, which the two-seed mean absorbs better than one seed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _shared import method_config

from semicompact.methods import run_method
from semicompact.training import TrainConfig

pytestmark = pytest.mark.slow

STEPS = 100
N_LABELLED = 5  # per class: 4 train + 1 validation (val_share 0.2), all inside the label budget
SEEDS = (0, 1)
CONVERGED = 0.03  # the seed-mean base at 2N steps is within this of the base at N (measured 0.005)
FLEXMATCH = {"mu": 2, "thresh_warmup": False}
#: method -> (options, margin of its seed mean over the base's at N and 2N; measured 0.131, 0.070 at least)
METHODS = {"flexmatch": (FLEXMATCH, 0.08), "freematch": ({"mu": 2}, 0.04)}
CONTROL_POOL = 8  # unlabelled images left to the control


def _config(data: Path, out: Path, steps: int, seed: int) -> TrainConfig:
    budget = dict(max_steps=steps, head_steps=10, early_stopping=False, select="last")
    return method_config(data, out, n_labelled=N_LABELLED, batch_size=16, seed=seed, **budget)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    """label -> the run's metrics at each of SEEDS."""
    from semicompact.data.synthetic import make_synthetic_cells

    root = tmp_path_factory.mktemp("equal-budget")
    data = make_synthetic_cells(
        root / "cells", n_per_class_train=150, n_test=50, n_unlabelled=0, size=32, seed=0
    )
    plan = {
        "base": ("supervised", STEPS, {}),
        "base_2n": ("supervised", 2 * STEPS, {}),
        **{name: (name, STEPS, options) for name, (options, _) in METHODS.items()},
        "flexmatch_few": ("flexmatch", STEPS, {**FLEXMATCH, "max_unlabelled": CONTROL_POOL}),
    }
    return {
        label: [
            run_method(method, _config(data, root / f"{label}-s{seed}", steps, seed), options).metrics
            for seed in SEEDS
        ]
        for label, (method, steps, options) in plan.items()
    }


def _f1(runs: list[dict]) -> float:
    """Test macro-F1, mean over the seeds."""
    return sum(float(metrics["test"]["macro_f1"]) for metrics in runs) / len(runs)


def test_the_budget_and_the_labels_are_equal(runs: dict[str, list[dict]]) -> None:
    for label, metrics in ((label, m) for label, seeded in runs.items() for m in seeded):
        cost = metrics["cost"]
        assert cost["optimizer_steps"] == (2 * STEPS if label == "base_2n" else STEPS), label
        # 4 classes x 4 training labels + 4 x 1 validation label: the same 20 labels for every run
        assert (cost["train_labels"], cost["val_images"], cost["label_budget"]) == (16, 4, 20), label
        assert metrics["select"] == "last" and metrics["collapse"] is None, label
    for i, base in enumerate(runs["base"]):
        assert base["cost"]["unlabelled_images_seen"] == 0
        # every step of the pool methods: mu x batch unlabelled images (the control: its 8), weak + strong
        for label in METHODS:
            assert runs[label][i]["cost"]["unlabelled_images_seen"] == STEPS * 2 * 2 * 16, label
        assert runs["flexmatch_few"][i]["cost"]["unlabelled_images_seen"] == STEPS * 2 * CONTROL_POOL


def test_the_seeds_give_different_runs(runs: dict[str, list[dict]]) -> None:
    """The mean is over two runs, not one run counted twice."""
    for label, seeded in runs.items():
        assert len({float(m["test"]["macro_f1"]) for m in seeded}) == len(SEEDS), label


def test_the_supervised_base_is_converged(runs: dict[str, list[dict]]) -> None:
    base, doubled = _f1(runs["base"]), _f1(runs["base_2n"])
    assert abs(doubled - base) < CONVERGED, f"base {base:.3f} at {STEPS} steps, {doubled:.3f} at {2 * STEPS}"


@pytest.mark.parametrize("method", list(METHODS))
def test_the_pool_beats_the_converged_base_by_the_margin(runs: dict[str, list[dict]], method: str) -> None:
    f1, margin = _f1(runs[method]), METHODS[method][1]
    for label in ("base", "base_2n"):
        base = _f1(runs[label])
        assert f1 >= base + margin, f"{method} {f1:.3f}, {label} {base:.3f} (margin {margin})"


def test_without_the_pool_flexmatch_does_not_reach_the_margin(runs: dict[str, list[dict]]) -> None:
    """The control: the same method, steps and thresholds with 8 unlabelled images. If it reached the
    margin, the gain above would come from the method's augmentation or EMA, not from the pool."""
    few, full, base = _f1(runs["flexmatch_few"]), _f1(runs["flexmatch"]), _f1(runs["base"])
    margin = METHODS["flexmatch"][1]
    assert few < base + margin, f"flexmatch on {CONTROL_POOL} unlabelled images: {few:.3f}, base {base:.3f}"
    assert few < full - margin, f"flexmatch on {CONTROL_POOL} images {few:.3f}, on the whole pool {full:.3f}"
