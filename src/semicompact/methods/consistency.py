"""Shared pieces of the methods that train on labelled and unlabelled batches at once.

:class:`LabelledUnlabelledDataModule` pairs each labelled batch with ``mu`` times as many unlabelled
images (a Lightning ``CombinedLoader``); :class:`EMA` evaluates and checkpoints an exponential moving
average of the weights (Lightning's weight averaging, with the usual warm-up so short runs are not
dominated by the random initial head).
"""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.utilities import CombinedLoader

from ..data import SemiCompactDataModule
from ..errors import DataError
from ..training.config import TrainConfig
from ..training.module import ClassifierModule
from ._options import choice, flag
from .pseudo import subsample_pool
from .self_training import teacher_cache
from .teachers import runs_cost, train_teachers

EPOCH_LENGTHS = ("both", "labelled")
# options of every method trained on labelled + unlabelled batches (besides its own ``mu``)
POOL_OPTIONS: dict[str, Any] = {"max_unlabelled": None, "epoch_length": "both"}


class LabelledUnlabelledDataModule(SemiCompactDataModule):
    """Training batches are ``{"x": (images, labels), "u": (images, -1)}``; an epoch covers both sets.

    Labelled images get the run's standard augmentation; unlabelled images arrive as float [0, 1]
    and the method makes its own weak / strong views of them.

    ``epoch_length="labelled"`` makes an epoch one pass over the labelled images, with the
    unlabelled batches drawn from the whole pool (as in the published FixMatch and MixMatch code,
    which count iterations, not passes over the pool): the number of optimiser steps then does not
    grow with the pool, so a large pool costs no more time than a small one.
    """

    def __init__(
        self,
        *args: Any,
        mu: int = 7,
        max_unlabelled: int | None = None,
        epoch_length: str = "both",
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if epoch_length not in EPOCH_LENGTHS:
            raise ValueError(f"epoch_length must be one of {EPOCH_LENGTHS}, got {epoch_length!r}")
        self.unlabelled_batch_size = max(1, int(mu) * self.batch_size)
        self.pool = subsample_pool(self.manifest.unlabelled, max_unlabelled, self.seed)
        self.epoch_length = epoch_length

    def train_dataloader(self) -> Any:
        labelled = super().train_dataloader()
        if not self.pool:
            raise DataError(
                f"no unlabelled images in the split of '{self.source.root}': "
                "put them in unlabelled/ or pass --unlabelled DIR"
            )
        if self.epoch_length == "labelled":
            draws = len(labelled) * self.unlabelled_batch_size
            unlabelled = self._loader(self.pool, self.unlabelled_batch_size, True, True, "unlabelled", draws)
            return CombinedLoader({"x": labelled, "u": unlabelled}, mode="max_size_cycle")
        unlabelled = self._loader(self.pool, self.unlabelled_batch_size, True, True, "unlabelled")
        if len(unlabelled) == 0:  # fewer unlabelled images than one batch: keep the partial one
            unlabelled = self._loader(self.pool, self.unlabelled_batch_size, True, False, "unlabelled")
        # one epoch sees every labelled and every unlabelled image at least once; the shorter cycles
        return CombinedLoader({"x": labelled, "u": unlabelled}, mode="max_size_cycle")

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if isinstance(batch, dict) and "u" in batch:
            images, labels = batch["u"]
            unlabelled = (images.float().div_(255.0) if images.dtype == torch.uint8 else images, labels)
            return {"x": super().on_after_batch_transfer(batch["x"], dataloader_idx), "u": unlabelled}
        return super().on_after_batch_transfer(batch, dataloader_idx)


def pool_datamodule(options: dict[str, Any], method: str) -> Any:
    """The datamodule factory of a method's labelled + unlabelled batches, from its options."""
    return functools.partial(
        LabelledUnlabelledDataModule,
        mu=int(options["mu"]),
        max_unlabelled=options["max_unlabelled"],
        epoch_length=choice(options, "epoch_length", EPOCH_LENGTHS, method),
    )


def warm_start(
    options: dict[str, Any], method: str, train: TrainConfig, run_dir: Path, split: Path
) -> tuple[TrainConfig, dict[str, Any]]:
    """``warm_start: true`` starts the student from its own network trained on the labelled images.

    The consistency loss then refines a model whose guesses are already good instead of racing a
    cold start: in a short schedule a cold MixMatch spends its steps fitting MixUp and ends below
    the supervised base. The supervised model is trained once and cached with the teachers (a
    benchmark's ``supervised`` settings give the same model), so a grid pays for it once; the run
    is charged its steps all the same (the returned cost, merged into ``metrics.json``).
    """
    if not flag(options, "warm_start", method):
        return train, {}
    given = [train.weights] if train.weights else None
    (supervised,) = train_teachers(train, [train.model], split, teacher_cache(run_dir, None), weights=given)
    return replace(train, weights=str(supervised / "best.safetensors")), runs_cost([supervised])


class SemiSupervisedModule(ClassifierModule):
    """Base of the methods whose training batch is ``{"x": labelled, "u": unlabelled}``."""

    def labelled_batch_size(self, batch: Any) -> int:
        return int(batch["x"][0].shape[0]) if isinstance(batch, dict) else super().labelled_batch_size(batch)

    def body_steps(self) -> int:
        """Optimiser steps since the head-only stage ended (0 during it).

        Ramp-ups start when the body is unfrozen: before that the new head guesses close to
        uniform, and a consistency loss on those guesses only pulls the network towards them.
        """
        if self._trainer is None:
            return 0
        return max(0, int(self.global_step) - int(self.hparams.head_steps))

    def body_total_steps(self) -> int:
        """Optimiser steps the body stage will take in this run (at least 1)."""
        return max(1, self.total_steps() - int(self.hparams.head_steps))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        loss = super().training_step(batch, batch_idx)
        if loss is not None and isinstance(batch, dict) and "u" in batch:
            self.count_unlabelled(batch)
        return loss

    def count_unlabelled(self, batch: Any) -> None:
        """Unlabelled image passes of one step; methods with several views override this."""
        self.count_images("unlabelled", int(batch["u"][0].shape[0]))


def _ema_with_warmup(decay: float) -> Any:
    def average(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
        d = min(decay, (1.0 + float(num_averaged)) / (10.0 + float(num_averaged)))
        return averaged * d + current * (1.0 - d)

    return average


class EMA(WeightAveraging):
    """EMA of the weights after every optimiser step; validation, checkpoints and the saved model use it."""

    def __init__(self, decay: float = 0.999) -> None:
        super().__init__(use_buffers=True, avg_fn=_ema_with_warmup(decay))

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return step_idx is not None
