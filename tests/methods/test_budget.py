"""Equal optimiser-step budgets: every method takes exactly ``max_steps`` steps and records its cost.

These are the guarantees the fair comparison rests on (issue 16): the same steps and the same
head-only stage for every method, validation labels out of the label budget, the cost of the
unlabelled views and of the teachers in ``metrics.json``, and the LR schedule reaching its floor.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
from _shared import method_config

from semicompact.methods import run_method
from semicompact.training import TrainConfig
from semicompact.training.module import LR_FLOOR, lr_factor

STEPS = 10
BATCH = 8
N_LABELLED = 10  # per class: 8 train + 2 validation with the default val_share 0.2


def _config(data: Path, out: Path, **kw) -> TrainConfig:
    budget = dict(
        n_labelled=N_LABELLED, max_steps=STEPS, head_steps=2, early_stopping=False, batch_size=BATCH
    )
    return method_config(data, out, **{**budget, **kw})


TEACHER = {"teachers": "mobilenetv2_100", "max_unlabelled": 40, "inference_batch_size": 16}
METHODS = {
    "supervised": {},
    "plain_distillation": {**TEACHER, "confidence": 0.0},
    "fixmatch": {"mu": 2, "max_unlabelled": 40},
    "mixmatch": {"mu": 1, "max_unlabelled": 40},
    "kd": {"teachers": "mobilenetv2_100", "max_unlabelled": 40, "unlabelled": True, "mu": 1},
    "function_matching": {"teachers": "mobilenetv2_100", "max_unlabelled": 40, "mu": 1},
}


@pytest.fixture(scope="module")
def budget_runs(cells_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("budget")
    return {
        name: run_method(name, _config(cells_dir, root / name), options).metrics
        for name, options in METHODS.items()
    }


def test_every_method_takes_exactly_the_budget(budget_runs: dict[str, dict]) -> None:
    for name, metrics in budget_runs.items():
        cost = metrics["cost"]
        assert cost["optimizer_steps"] == STEPS, name
        assert metrics["schedule"]["head_steps"] == 2 and metrics["schedule"]["max_steps"] == STEPS, name
        # 4 classes x 8 training labels, 4 x 2 validation labels: validation inside the budget of 10
        assert cost["train_labels"] == 32 and cost["val_images"] == 8, name
        assert cost["label_budget"] == 4 * N_LABELLED and cost["val_source"] == "labelled", name
        assert cost["wall_time_s"] > 0 and cost["validations"] >= 1, name


def test_images_seen_count_every_view(budget_runs: dict[str, dict]) -> None:
    labelled = STEPS * BATCH  # 32 labels, batch 8: every step is a full labelled batch
    sup = budget_runs["supervised"]["cost"]
    assert sup["labelled_images_seen"] == labelled and sup["unlabelled_images_seen"] == 0
    fix = budget_runs["fixmatch"]["cost"]
    assert fix["labelled_images_seen"] == labelled
    assert fix["unlabelled_images_seen"] == STEPS * 2 * (2 * BATCH)  # weak + strong of mu x batch
    mix = budget_runs["mixmatch"]["cost"]
    assert mix["unlabelled_images_seen"] == STEPS * 2 * 2 * BATCH  # K=2 guessed + K=2 mixed views
    kd = budget_runs["kd"]["cost"]
    assert kd["unlabelled_images_seen"] == STEPS * BATCH
    assert kd["teacher_inference_images_seen"] == STEPS * 2 * BATCH  # one teacher, labelled + pool
    fm = budget_runs["function_matching"]
    assert fm["cost"]["unlabelled_images_seen"] == STEPS * BATCH  # one mixed weak view per image
    assert fm["cost"]["teacher_inference_images_seen"] == STEPS * 2 * BATCH
    assert fm["cost"]["teacher_steps"] == kd["teacher_steps"] == STEPS  # KD's cached teacher, reused
    assert fm["options"]["transfer_augment"] is True and fm["options"]["mixup"] == 1.0


def test_self_training_counts_pseudo_labels_and_is_charged_its_teacher(budget_runs: dict[str, dict]) -> None:
    plain = budget_runs["plain_distillation"]
    cost = plain["cost"]
    assert plain["pseudo_labels"]["selected"] == 40  # confidence 0: the whole pool
    # batches mix 32 labelled and 40 pseudo-labelled images; together they fill every step
    assert cost["labelled_images_seen"] + cost["unlabelled_images_seen"] == STEPS * BATCH
    assert 0 < cost["unlabelled_images_seen"] < STEPS * BATCH
    # the teacher is the supervised network with the same settings: the same budget of steps
    assert cost["teacher_runs"] == 1 and cost["teacher_steps"] == STEPS
    assert cost["total_steps"] == 2 * STEPS
    assert cost["teacher_inference_images_seen"] == 40
    assert budget_runs["kd"]["cost"]["teacher_steps"] == STEPS


def test_last_and_best_weights_are_both_scored(budget_runs: dict[str, dict]) -> None:
    for name, metrics in budget_runs.items():
        assert metrics["select"] == "best"
        assert metrics["test_best"]["macro_f1"] == pytest.approx(metrics["test"]["macro_f1"]), name
        assert 0.0 <= metrics["test_last"]["macro_f1"] <= 1.0, name


def test_lr_schedule_warms_up_then_reaches_its_floor() -> None:
    head, total, warmup = 4, 24, 3
    factors = [lr_factor(s, head, total, warmup) for s in range(total)]
    assert factors[:head] == [1.0] * head
    assert factors[head : head + warmup] == pytest.approx([0.25, 0.5, 0.75])
    assert factors[head + warmup] == pytest.approx(1.0)
    assert factors[-1] == pytest.approx(LR_FLOOR)  # the floor is reached at the last step
    decay = factors[head + warmup :]
    assert all(a >= b for a, b in itertools.pairwise(decay))
    middle = head + warmup + (total - 1 - head - warmup) / 2
    assert lr_factor(int(middle), head, total, warmup) == pytest.approx(
        LR_FLOOR + (1 - LR_FLOOR) * 0.5 * (1 + math.cos(math.pi * 0.5)), abs=0.05
    )


def test_mixmatch_ramp_is_a_fraction_of_the_run() -> None:
    from semicompact.methods.mixmatch import PUBLISHED_RAMPUP_FRACTION, MixMatchModule
    from semicompact.models import create_model

    module = MixMatchModule(create_model("resnet18", 2), ["a", "b"], head_steps=0, rampup=None)
    module._total_steps = 2**20  # a run of the published length: the published 16384-step ramp
    module.body_steps = lambda: 8192  # type: ignore[method-assign]
    assert PUBLISHED_RAMPUP_FRACTION * 2**20 == 16384
    assert module.unlabelled_weight() == pytest.approx(75.0 * 0.5)
    module._total_steps = 640  # a short run ramps over 1/64 of it: 10 steps
    module.body_steps = lambda: 5  # type: ignore[method-assign]
    assert module.unlabelled_weight() == pytest.approx(75.0 * 0.5)
    module.rampup = 100  # an explicit ramp in steps wins
    assert module.unlabelled_weight() == pytest.approx(75.0 * 0.05)
