"""MixMatch (Berthelot et al. 2019): sharpened K-view guesses, MixUp of labelled and unlabelled, ramped L2."""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import torch
from torch.nn import functional as F

from ..data.ssl_augment import weak_augment
from ..training.config import TrainConfig
from ..training.run import FitHooks, RunResult, fit
from ._options import flag, number
from .base import Method, register_method
from .consistency import EMA, POOL_OPTIONS, SemiSupervisedModule, pool_datamodule, warm_start
from .losses import mixmatch_loss, mixmatch_mix, sharpen
from .self_training import start_run

#: MixMatch's published ramp: 16384 of its 1024 x 1024 optimiser steps
PUBLISHED_RAMPUP_STEPS = 16384
PUBLISHED_RAMPUP_FRACTION = PUBLISHED_RAMPUP_STEPS / 2**20


class MixMatchModule(SemiSupervisedModule):
    def __init__(
        self,
        *args: Any,
        k: int = 2,
        temperature: float = 0.5,
        alpha: float = 0.75,
        lambda_u: float = 75.0,
        rampup: int | None = PUBLISHED_RAMPUP_STEPS,
        rampup_fraction: float = PUBLISHED_RAMPUP_FRACTION,
        clip_rampup: bool = False,
        vflip: bool = False,
        prior: torch.Tensor | None = None,
        invariances: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.k, self.t, self.alpha, self.lambda_u, self.rampup = k, temperature, alpha, lambda_u, rampup
        self.clip_rampup, self.rampup_fraction = clip_rampup, rampup_fraction
        self.weak = weak_augment(vflip=vflip, invariances=invariances)
        self.beta = torch.distributions.Beta(alpha, alpha)
        c = len(self.classes)
        self.align = prior is not None
        self.register_buffer("prior", prior.float() if prior is not None else torch.full((c,), 1.0 / c))
        self.register_buffer("guess_mean", torch.full((c,), 1.0 / c))

    def align_distribution(self, guess: torch.Tensor) -> torch.Tensor:
        """Distribution alignment (Berthelot et al. 2020, ReMixMatch): scale the guesses by
        labelled prior / running mean of the guesses, so that they cannot drift to one class.

        Not part of the published MixMatch, so off by default; ``distribution_alignment: true`` turns
        it on for strongly imbalanced pools where the guesses drift towards the majority class.
        """
        self.guess_mean.mul_(1 - 1 / 32).add_(guess.mean(dim=0), alpha=1 / 32)
        aligned = guess * self.prior / self.guess_mean.clamp_min(1e-6)
        return aligned / aligned.sum(dim=1, keepdim=True)

    def training_loss(self, batch: Any) -> torch.Tensor:
        (xl, yl), (xu, _) = batch["x"], batch["u"]
        n, m, c = xl.shape[0], xu.shape[0], len(self.classes)
        if m == 0:
            return self.criterion(self(xl), yl)
        with torch.no_grad():
            views = [self.weak(xu) for _ in range(self.k)]
            guess = torch.stack([self(v).softmax(dim=1) for v in views]).mean(dim=0)
            if self.align:
                guess = self.align_distribution(guess)
            guess = sharpen(guess, self.t)
        inputs = torch.cat([xl, *views])
        targets = torch.cat([F.one_hot(yl, c).float(), guess.repeat(self.k, 1)])
        lam = float(self.beta.sample())  # mixmatch_mix takes max(lam, 1 - lam), the paper's lambda'
        order = torch.randperm(inputs.shape[0], device=inputs.device)
        mixed, mixed_targets = mixmatch_mix(inputs, targets, lam, order)
        loss_x, loss_u = mixmatch_loss(self(mixed), mixed_targets, n)
        weight = self.unlabelled_weight()
        self.log("train/loss_u", loss_u, on_step=False, on_epoch=True, batch_size=m)
        return loss_x + weight * loss_u

    def unlabelled_weight(self) -> float:
        """lambda_u ramped up linearly over ``rampup`` body steps (published: 16384), or, with
        ``rampup: null``, over the first ``rampup_fraction`` of the body steps (1/64: the published
        16384 of 2^20, so a run of the published length gets the published ramp).

        The fixed ramp stays the default: the 1/64 ramp reaches lambda_u = 75 within a few steps of
        a short run, and on the cell data (144 steps) it collapsed the student to one class
        (macro-F1 0.19); the fixed ramp leaves a short run close to MixUp instead. In the 600-step
        budget grid the 1/64 ramp was 17-20 points below the supervised base on average (collapsed
        on three of four sets) and the fixed ramp 2 points below (``docs/methods.md``, "Budgets").
        ``clip_rampup`` ends a fixed ramp by the end of the run at the latest.
        """
        if self.rampup is None:
            rampup = self.rampup_fraction * self.body_total_steps()
        else:
            rampup = min(self.rampup, self.body_total_steps()) if self.clip_rampup else self.rampup
        if rampup <= 0:
            return self.lambda_u
        return self.lambda_u * min(1.0, self.body_steps() / rampup)

    def count_unlabelled(self, batch: Any) -> None:
        """K weak views guessed, then K mixed views trained on: 2K passes per unlabelled image."""
        self.count_images("unlabelled", 2 * self.k * int(batch["u"][0].shape[0]))


@register_method("mixmatch")
class MixMatch(Method):
    summary = "MixMatch: K weak views, sharpening, MixUp, ramped-up L2 loss on unlabelled images; EMA model"
    uses_unlabelled = True
    options: ClassVar[dict[str, Any]] = {
        "k": 2,
        "temperature": 0.5,
        "alpha": 0.75,
        "lambda_u": 75.0,
        "rampup": PUBLISHED_RAMPUP_STEPS,
        "rampup_fraction": PUBLISHED_RAMPUP_FRACTION,
        "clip_rampup": False,
        "mu": 1,
        "ema": 0.999,
        "warm_start": False,
        "distribution_alignment": False,
        **POOL_OPTIONS,
    }

    def run(self, train: TrainConfig, resume: bool = False) -> RunResult:
        c = self.config
        number(c, "temperature", 1e-3, 10.0, self.name)
        number(c, "alpha", 1e-3, 100.0, self.name)
        if c["rampup"] is not None:
            number(c, "rampup", 0, 10**9, self.name)
        number(c, "rampup_fraction", 0.0, 1.0, self.name)
        number(c, "k", 1, 16, self.name)
        number(c, "mu", 1, 64, self.name)
        number(c, "ema", 0.0, 1.0, self.name)
        flag(c, "warm_start", self.name)  # checked before the run folder is made
        run_dir, train, split = start_run(self, train, resume)
        train, start_cost = warm_start(c, self.name, train, run_dir, split)
        hooks = FitHooks(
            module_factory=functools.partial(
                _module,
                k=int(c["k"]),
                temperature=float(c["temperature"]),
                alpha=float(c["alpha"]),
                lambda_u=float(c["lambda_u"]),
                rampup=None if c["rampup"] is None else int(c["rampup"]),
                rampup_fraction=float(c["rampup_fraction"]),
                clip_rampup=flag(c, "clip_rampup", self.name),
                vflip=train.vflip,
                invariances=train.invariances,
                align=flag(c, "distribution_alignment", self.name),
            ),
            datamodule_factory=pool_datamodule(c, self.name),
            callbacks=[EMA(float(c["ema"]))] if float(c["ema"]) > 0 else [],
            summary={"method": self.name, "options": dict(c)},
            teacher_cost=start_cost,
        )
        return fit(train, resume=resume and (run_dir / "config.json").is_file(), hooks=hooks)


def _module(model: Any, classes: list[str], datamodule: Any, align: bool, **kwargs: Any) -> MixMatchModule:
    prior = labelled_prior(datamodule, len(classes)) if align else None
    return MixMatchModule(model, classes, prior=prior, **kwargs)


def labelled_prior(datamodule: Any, k: int) -> torch.Tensor:
    """Class frequencies of the labelled images (the target of distribution alignment)."""
    counts = torch.zeros(k)
    for _, label in datamodule.manifest.labelled:
        counts[int(label)] += 1
    return (counts + 1) / (counts.sum() + k)
