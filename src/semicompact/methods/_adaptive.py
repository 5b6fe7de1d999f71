"""What FlexMatch, FreeMatch and SoftMatch share: FixMatch's two views, optional distribution
alignment, state gathered across DDP processes, and one ``run`` (options checked, warm start, EMA).

Each method only says how the weak view's probabilities turn into a per-image weight; the
arithmetic is in :mod:`.adaptive_thresholds`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch

from ..data.datasets import ImageDataset, Sample
from ..training.config import TrainConfig
from ..training.run import FitHooks, RunResult, fit
from ._options import choice, flag, number
from .adaptive_thresholds import DistributionAlignment
from .base import Method
from .consistency import EMA, EPOCH_LENGTHS, LabelledUnlabelledDataModule, pool_datamodule, warm_start
from .fixmatch import FixMatchModule
from .mixmatch import labelled_prior
from .self_training import start_run


class IndexedImageDataset(ImageDataset):
    """The pool with each image's position in it as its label (FlexMatch keeps one entry per image)."""

    def __getitem__(self, index: int) -> Sample | None:
        sample = super().__getitem__(index)
        return None if sample is None else (sample[0], index)


class IndexedPoolDataModule(LabelledUnlabelledDataModule):
    """Unlabelled batches are ``(images, pool indices)`` instead of ``(images, -1)``."""

    def dataset(self, entries: Sequence[Sequence[Any]]) -> ImageDataset:
        if entries is getattr(self, "pool", None):
            return IndexedImageDataset(self.source, entries, self.image_size, self.skip_log)
        return super().dataset(entries)


class AdaptiveConsistencyModule(FixMatchModule):
    """FixMatch's weak / strong views and hard pseudo-labels; subclasses weight each image.

    ``dist_align`` (off by default, not part of the published methods) multiplies the weak view's
    probabilities by labelled prior / running mean prediction (ReMixMatch) before they decide the
    weights and the pseudo-labels.
    """

    #: FlexMatch keeps one entry per pool image: its constructor takes ``pool_size``
    needs_pool_size = False

    def __init__(
        self,
        *args: Any,
        dist_align: bool = False,
        prior: torch.Tensor | None = None,
        ema_p: float = 0.999,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.ema_p = ema_p  # momentum of the methods' running statistics (USB's ema_p)
        if dist_align and prior is None:
            raise ValueError("dist_align needs the labelled class prior")
        self.dist_align = DistributionAlignment(prior, ema_p) if dist_align and prior is not None else None

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """The tensor of every DDP process, concatenated (itself on one process)."""
        if self._trainer is None or self.trainer.world_size <= 1:
            return tensor
        return self.all_gather(tensor).flatten(0, 1)

    def weak_probs(self, weak_logits: torch.Tensor) -> torch.Tensor:
        probs = weak_logits.detach().softmax(dim=1)
        if self.dist_align is None:
            return probs
        self.dist_align.update(self.gather(probs))
        return self.dist_align.align(probs)

    def log_unlabelled(self, loss_u: torch.Tensor, weight: torch.Tensor) -> None:
        m = weight.shape[0]
        self.log("train/mask_rate", weight.mean(), on_step=False, on_epoch=True, batch_size=m)
        self.log("train/loss_u", loss_u, on_step=False, on_epoch=True, batch_size=m)


class AdaptiveMethod(Method):
    """``run`` of the three methods; ``module_class`` and ``module_options`` say what differs."""

    uses_unlabelled = True

    module_class: type[AdaptiveConsistencyModule] = AdaptiveConsistencyModule
    indexed_pool = False

    def check(self) -> dict[str, Any]:
        """The method's own options, checked and typed (for the module's constructor)."""
        return {}

    def run(self, train: TrainConfig, resume: bool = False) -> RunResult:
        c = self.config
        for name in ("threshold", "ema", "ema_p"):
            if name in c:
                number(c, name, 0.0, 1.0, self.name)
        number(c, "mu", 1, 64, self.name)
        number(c, "lambda_u", 0.0, 1000.0, self.name)
        flag(c, "warm_start", self.name)  # checked before the run folder is made
        align = flag(c, "dist_align", self.name)
        own = self.check()
        run_dir, train, split = start_run(self, train, resume)
        train, start_cost = warm_start(c, self.name, train, run_dir, split)
        if self.indexed_pool:
            datamodule = functools.partial(
                IndexedPoolDataModule,
                mu=int(c["mu"]),
                max_unlabelled=c["max_unlabelled"],
                epoch_length=choice(c, "epoch_length", EPOCH_LENGTHS, self.name),
            )
        else:
            datamodule = pool_datamodule(c, self.name)
        module_options = dict(
            threshold=float(c.get("threshold", 0.95)),
            lambda_u=float(c["lambda_u"]),
            vflip=train.vflip,
            invariances=train.invariances,
            dist_align=align,
            ema_p=float(c["ema_p"]),
            **own,
        )
        hooks = FitHooks(
            module_factory=functools.partial(_module, self.module_class, align, **module_options),
            datamodule_factory=datamodule,
            callbacks=[EMA(float(c["ema"]))] if float(c["ema"]) > 0 else [],
            summary={"method": self.name, "options": dict(c)},
            teacher_cost=start_cost,
        )
        return fit(train, resume=resume and (run_dir / "config.json").is_file(), hooks=hooks)


def _module(
    cls: type[AdaptiveConsistencyModule],
    align: bool,
    model: Any,
    classes: list[str],
    datamodule: Any,
    **kwargs: Any,
) -> AdaptiveConsistencyModule:
    prior = labelled_prior(datamodule, len(classes)) if align else None
    if cls.needs_pool_size:
        kwargs["pool_size"] = len(datamodule.pool)
    return cls(model, classes, prior=prior, **kwargs)
