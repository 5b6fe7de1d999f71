"""Budgets in optimiser steps: epoch options converted to steps, and early stopping counted in steps."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from semicompact.errors import ConfigError
from semicompact.training import TrainConfig
from semicompact.training.callbacks import StageAwareEarlyStopping
from semicompact.training.run import resolve_schedule


def _config(**kw) -> TrainConfig:
    return TrainConfig(data="x", **kw)


def test_epochs_stay_epochs_and_the_head_stage_is_counted_in_labelled_passes() -> None:
    s = resolve_schedule(_config(head_epochs=2, epochs=8, batch_size=32), n_labelled=600, two_stage=True)
    assert (s.max_steps, s.max_epochs, s.val_every) == (None, 10, None)
    assert s.labelled_steps_per_epoch == 18 and s.head_steps == 36  # 600 // 32, last batch dropped
    assert resolve_schedule(_config(), 600, two_stage=False).head_steps == 0  # from scratch: no head stage
    assert resolve_schedule(_config(batch_size=32), 20, two_stage=True).labelled_steps_per_epoch == 1


def test_a_step_budget_is_the_same_whatever_the_method() -> None:
    s = resolve_schedule(_config(max_steps=600, head_epochs=2, batch_size=32), 600, two_stage=True)
    assert (s.max_steps, s.max_epochs, s.head_steps) == (600, -1, 36)
    assert s.val_every == 24  # at most 25 validations, at least one pass over the labels apart
    small = resolve_schedule(_config(max_steps=600, head_epochs=2, batch_size=32), 120, two_stage=True)
    assert (small.head_steps, small.val_every) == (6, 24)
    given = resolve_schedule(_config(max_steps=100, head_steps=7, val_every=5), 600, two_stage=True)
    assert (given.head_steps, given.val_every) == (7, 5)
    # DDP: a step consumes batch_size images on each device
    ddp = resolve_schedule(_config(max_steps=600, batch_size=32, devices=2), 600, two_stage=True)
    assert ddp.labelled_steps_per_epoch == 9


def test_a_head_stage_longer_than_the_budget_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"--head-epochs 2 is 36 steps here, the whole --max-steps 30"):
        resolve_schedule(_config(max_steps=30, head_epochs=2, batch_size=32), 600, two_stage=True)
    with pytest.raises(ConfigError, match=r"--head-steps 30 leaves no step of the --max-steps 30 budget"):
        _config(max_steps=30, head_steps=30)
    with pytest.raises(ConfigError, match=r"--select must be one of best, last, got 'ema'"):
        _config(select="ema")
    with pytest.raises(ConfigError, match=r"--val must be one of labelled, official, got 'all'"):
        _config(val="all")


def test_early_stopping_waits_for_the_head_stage_and_min_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning.pytorch.callbacks import EarlyStopping

    calls: list[int] = []
    monkeypatch.setattr(
        EarlyStopping, "_run_early_stopping_check", lambda self, trainer: calls.append(trainer.global_step)
    )
    stopper = StageAwareEarlyStopping(start_step=50, monitor="val/macro_f1", mode="max", patience=1)
    for step in (10, 49, 50, 80):
        stopper._run_early_stopping_check(SimpleNamespace(global_step=step))
    assert calls == [50, 80]
    assert stopper._check_on_train_epoch_end is False  # checked after each validation, not per epoch
