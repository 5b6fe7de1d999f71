"""Callbacks that make Lightning follow the paper's procedure and survive interruptions."""

from __future__ import annotations

import copy
import io
import itertools
import math
import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_warn
from torch.nn.modules.batchnorm import _BatchNorm

from ..io import write_bytes


class TwoStageFreeze(L.Callback):
    """Train only the head for ``head_steps`` optimiser steps, then all layers.

    The stage is derived from the global step, so a resumed run lands in the right stage and every
    method of an equal-step budget gets the same head-only stage. As in fastai, batch-norm layers
    stay trainable while the body is frozen.
    """

    def __init__(self, head_steps: int) -> None:
        self.head_steps = head_steps
        self._frozen: bool | None = None

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        frozen = trainer.global_step < self.head_steps
        if frozen == self._frozen:
            return
        model = pl_module.model
        if frozen:
            model.freeze_body()
            for module in model.modules():
                if isinstance(module, _BatchNorm):
                    for p in module.parameters():
                        p.requires_grad_(True)
        else:
            model.unfreeze()
        self._frozen = frozen


class StageAwareEarlyStopping(EarlyStopping):
    """Early stopping counted in validations, never before ``start_step`` optimiser steps.

    ``start_step`` is the end of the head-only stage (the body has not learnt yet) plus the run's
    ``min_steps``; ``patience`` counts validations, which happen every ``val_every`` steps.
    """

    def __init__(self, start_step: int, **kwargs: Any) -> None:
        super().__init__(check_on_train_epoch_end=False, **kwargs)
        self.start_step = start_step

    def _run_early_stopping_check(self, trainer: L.Trainer) -> None:
        if trainer.global_step < self.start_step:
            return
        super()._run_early_stopping_check(trainer)


def lr_range_test(
    module: L.LightningModule,
    loader: Any,
    min_lr: float = 1e-7,
    max_lr: float = 1.0,
    steps: int = 100,
    beta: float = 0.9,
) -> tuple[float | None, list[float], list[float]]:
    """Smith's learning-rate range test on the trainable parameters, leaving the model unchanged.

    The rate grows exponentially from ``min_lr`` to ``max_lr`` over ``steps`` batches (cycling the
    loader, so small data sets work), the loss is smoothed, the test stops when it diverges, and
    the suggestion is fastai's "minimum / 10" rule. Returns (suggestion or None, rates, losses).
    Denormal floats are flushed meanwhile: diverging weights otherwise make CPU steps 10x slower.
    """
    model = module.model
    state = copy.deepcopy(model.state_dict())
    was_training = model.training
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=min_lr, weight_decay=module.hparams.get("weight_decay", 0.0))
    gamma = (max_lr / min_lr) ** (1.0 / max(1, steps - 1))
    rates: list[float] = []
    losses: list[float] = []
    average, best = 0.0, math.inf
    batches = itertools.chain.from_iterable(itertools.repeat(loader))
    model.train()
    flush = torch.set_flush_denormal(True)
    try:
        for step in range(steps):
            images, labels = next(batches)
            if images.shape[0] == 0:
                continue
            rate = min_lr * gamma**step
            for group in optimizer.param_groups:
                group["lr"] = rate
            x = images.to(module.device).float().div_(255.0)
            loss = module.training_loss((x, labels.to(module.device)))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            raw = loss.item()
            average = beta * average + (1 - beta) * raw
            smooth = average / (1 - beta ** (step + 1))
            if not math.isfinite(raw) or (step > 10 and (smooth > 4 * best or raw > 10 * best)):
                break
            best = min(best, smooth)
            rates.append(rate)
            losses.append(smooth)
    finally:
        if flush:
            torch.set_flush_denormal(False)
        model.load_state_dict(state)
        model.train(was_training)
        for p in params:
            p.grad = None
    if len(losses) < 10:
        return None, rates, losses
    return rates[losses.index(min(losses))] / 10.0, rates, losses


class TwoStageLRFinder(L.Callback):
    """The range test at the start of each stage (optimiser steps in ``milestones``), as the paper
    does for both stages.

    Lightning's ``LearningRateFinder`` restores the trainer from a checkpoint around its test and,
    inside a running fit, found no points at the second stage; this callback runs the test on the
    side (model state saved and restored) so both stages get a rate, and DDP ranks share rank 0's.
    The suggestion replaces the head's rate (the body gets the configured multiple of it) and the
    scheduler's base rates, so that the checkpoint carries it on resume.
    """

    def __init__(self, milestones: tuple[int, ...], body_lr_mult: float, steps: int = 100) -> None:
        self.milestones = set(milestones)
        self.body_lr_mult = body_lr_mult
        self.steps = steps
        self.found: dict[int, float] = {}

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step not in self.milestones or step in self.found:
            return
        suggestion, _, _ = lr_range_test(pl_module, trainer.datamodule.train_dataloader(), steps=self.steps)
        suggestion = trainer.strategy.broadcast(suggestion, src=0)
        if suggestion is None:
            rank_zero_warn(
                f"--lr-find: the range test at step {step} diverged at once; keeping --lr. "
                "Give --lr yourself."
            )
            return
        self.found[step] = float(suggestion)
        optimizer = trainer.optimizers[0]
        rates = [
            suggestion if g.get("name") == "head" else suggestion * self.body_lr_mult
            for g in optimizer.param_groups
        ]
        scheduler = trainer.lr_scheduler_configs[0].scheduler
        scheduler.base_lrs = list(rates)
        for group, rate in zip(optimizer.param_groups, rates, strict=True):
            group["lr"] = rate * scheduler.lr_lambdas[0](step)

    def state_dict(self) -> dict[str, Any]:
        return {"found": {str(k): v for k, v in self.found.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.found = {int(k): float(v) for k, v in state_dict.get("found", {}).items()}


class EpochTimer(L.Callback):
    """Wall time of each training epoch (the paper's 'train time per epoch')."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.times.append(time.perf_counter() - self._start)

    def state_dict(self) -> dict[str, Any]:
        return {"times": list(self.times)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.times = [float(t) for t in state_dict.get("times", [])]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file and renamed, so ``kill -9`` never leaves half a file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        write_bytes(path, buffer.getvalue())

    def load_checkpoint(
        self, path: Any, map_location: Any = None, weights_only: bool | None = True
    ) -> dict[str, Any]:
        return super().load_checkpoint(path, map_location=map_location, weights_only=True)


class RngState(L.Callback):
    """Save and restore the random generators with each checkpoint.

    Augmentation draws from the global generators; restoring them makes a resumed run (even after
    ``kill -9``) produce exactly the numbers of a run that was never interrupted.
    """

    def state_dict(self) -> dict[str, Any]:
        import random

        import numpy as np

        np_state = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "python": [list(random.getstate()[1]), random.getstate()[0], random.getstate()[2]],
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype("int64")), *map(float, np_state[2:])],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        import random

        import numpy as np

        torch.set_rng_state(state_dict["torch"])
        inner, version, gauss = state_dict["python"]
        random.setstate((version, tuple(inner), gauss))
        kind, keys, pos, has_gauss, cached = state_dict["numpy"]
        np.random.set_state((kind, keys.numpy().astype("uint32"), int(pos), int(has_gauss), float(cached)))


class CostMeter(L.Callback):
    """Wall time of training (validation included) and the number of validations, across resumptions.

    The time is added up between hooks and saved with every checkpoint, so a run resumed after
    ``kill -9`` reports the time of the work that survived, not the time since the restart.
    """

    def __init__(self) -> None:
        self.elapsed = 0.0
        self.validations = 0
        self._mark: float | None = None

    def _tick(self) -> None:
        now = time.perf_counter()
        if self._mark is not None:
            self.elapsed += now - self._mark
        self._mark = now

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._mark = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._tick()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self.validations += 1
        self._tick()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._tick()
        self._mark = None

    def state_dict(self) -> dict[str, Any]:
        self._tick()
        return {"elapsed": self.elapsed, "validations": self.validations}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.elapsed = float(state_dict.get("elapsed", 0.0))
        self.validations = int(state_dict.get("validations", 0))
