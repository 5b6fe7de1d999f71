"""FixMatch (Sohn et al. 2020): confident predictions on a weak view supervise a strong view."""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import torch

from ..data.ssl_augment import strong_augment, weak_augment
from ..training.config import TrainConfig
from ..training.run import FitHooks, RunResult, fit
from ._options import flag, number
from .base import Method, register_method
from .consistency import EMA, POOL_OPTIONS, SemiSupervisedModule, pool_datamodule, warm_start
from .losses import fixmatch_unlabelled_loss
from .self_training import start_run


class FixMatchModule(SemiSupervisedModule):
    def __init__(
        self,
        *args: Any,
        threshold: float = 0.95,
        lambda_u: float = 1.0,
        vflip: bool = False,
        invariances: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.threshold, self.lambda_u = threshold, lambda_u
        self.weak = weak_augment(vflip=vflip, invariances=invariances)
        self.strong = strong_augment(vflip=vflip, invariances=invariances)

    def views(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(supervised loss, weak logits, strong logits) from one forward pass over labelled + both
        views; no unlabelled logits for an empty pool batch."""
        (xl, yl), (xu, _) = batch["x"], batch["u"]
        n, m = xl.shape[0], xu.shape[0]
        with torch.no_grad():
            weak, strong = self.weak(xu), self.strong(xu)
        logits = self(torch.cat([xl, weak, strong]))
        supervised = self.criterion(logits[:n], yl)
        if m == 0:
            return supervised, None, None
        return supervised, logits[n : n + m], logits[n + m :]

    def training_loss(self, batch: Any) -> torch.Tensor:
        supervised, weak, strong = self.views(batch)
        if weak is None or strong is None:
            return supervised
        m = weak.shape[0]
        unsupervised, mask = fixmatch_unlabelled_loss(weak, strong, self.threshold)
        self.log("train/mask_rate", mask.mean(), on_step=False, on_epoch=True, batch_size=m)
        self.log("train/loss_u", unsupervised, on_step=False, on_epoch=True, batch_size=m)
        return supervised + self.lambda_u * unsupervised

    def count_unlabelled(self, batch: Any) -> None:
        """A weak and a strong view of each unlabelled image go through the network."""
        self.count_images("unlabelled", 2 * int(batch["u"][0].shape[0]))


@register_method("fixmatch")
class FixMatch(Method):
    summary = "FixMatch: weak-view pseudo-labels above a threshold supervise strong views; EMA model"
    uses_unlabelled = True
    options: ClassVar[dict[str, Any]] = {
        "threshold": 0.95,
        "mu": 7,
        "lambda_u": 1.0,
        "ema": 0.999,
        "warm_start": False,
        **POOL_OPTIONS,
    }

    def run(self, train: TrainConfig, resume: bool = False) -> RunResult:
        c = self.config
        number(c, "threshold", 0.0, 1.0, self.name)
        number(c, "ema", 0.0, 1.0, self.name)
        flag(c, "warm_start", self.name)  # checked before the run folder is made
        number(c, "mu", 1, 64, self.name)
        run_dir, train, split = start_run(self, train, resume)
        train, start_cost = warm_start(c, self.name, train, run_dir, split)
        hooks = FitHooks(
            module_factory=functools.partial(
                _module,
                threshold=float(c["threshold"]),
                lambda_u=float(c["lambda_u"]),
                vflip=train.vflip,
                invariances=train.invariances,
            ),
            datamodule_factory=pool_datamodule(c, self.name),
            callbacks=[EMA(float(c["ema"]))] if float(c["ema"]) > 0 else [],
            summary={"method": self.name, "options": dict(c)},
            teacher_cost=start_cost,
        )
        return fit(train, resume=resume and (run_dir / "config.json").is_file(), hooks=hooks)


def _module(model: Any, classes: list[str], datamodule: Any, **kwargs: Any) -> FixMatchModule:
    return FixMatchModule(model, classes, **kwargs)
