"""Knowledge distillation (Hinton et al. 2015): the student matches the teachers' softened outputs.

Teachers are trained once on the labelled images (and cached, like the self-training teachers); the
soft-target loss runs on the labelled batch and, with ``unlabelled=true``, also on the unlabelled pool.

The defaults are the configuration measured as the safe default of ``semicompact ssl`` (issue 17):
two teachers whose ImageNet weights come with the install (EfficientNet-Lite0 and MobileNetV2, so it
runs offline) and the soft targets also on the unlabelled pool (Hinton's transfer set). At 600
optimiser steps with the converged supervised base it was at or above the base on all four MedMNIST
sets with each of 3 seeds with the MobileNetV2 student (``bench/results/ssl_medmnist_64_budget/``).
``unlabelled=false`` is KD on the labelled images only.

``function_matching`` is the same loss with Beyer et al.'s consistent, augmented transfer set
("Knowledge distillation: A good teacher is patient and consistent", CVPR 2022): each step the
unlabelled images get a weak view (flip or declared symmetry + shift) and are mixed pairwise
(MixUp, one Beta(1, 1) ratio per batch), and teacher and student see the same mixed image, so the
student matches the teachers' function around the pool instead of their outputs on the same
images at every pass.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from ..data.ssl_augment import weak_augment
from ..training.config import TrainConfig
from ..training.run import FitHooks, RunResult, fit
from ._options import flag, number
from .base import Method, register_method
from .consistency import POOL_OPTIONS, SemiSupervisedModule, pool_datamodule
from .losses import kd_loss, mixup_images
from .self_training import TEACHER_OPTIONS, prepare_teachers, start_run
from .teachers import load_teachers, runs_cost

#: the teachers of the measured safe default; both have ImageNet weights that come with the install
RECOMMENDED_TEACHERS = ("tf_efficientnet_lite0", "mobilenetv2_100")


class DistillationModule(SemiSupervisedModule):
    """(1 - alpha) CE(labels) + alpha T^2 KL(mean teacher_T || student_T)."""

    def __init__(
        self,
        *args: Any,
        teachers: list[tuple[nn.Module, int]],
        temperature: float = 4.0,
        alpha: float = 0.7,
        transfer_augment: bool = False,
        mixup: float = 0.0,
        vflip: bool = False,
        invariances: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.teachers = nn.ModuleList([t for t, _ in teachers])
        self.teacher_sizes = [s for _, s in teachers]
        for p in self.teachers.parameters():
            p.requires_grad_(False)
        self.temperature, self.alpha = temperature, alpha
        self.transfer = weak_augment(vflip=vflip, invariances=invariances) if transfer_augment else None
        self.beta = torch.distributions.Beta(mixup, mixup) if mixup > 0 else None

    @torch.no_grad()
    def transfer_images(self, xu: torch.Tensor) -> torch.Tensor:
        """The unlabelled images as the transfer set: as loaded, or (function matching) a weak view
        and a MixUp with another image of the batch; the teachers label the result."""
        if self.transfer is not None:
            xu = self.transfer(xu)
        if self.beta is not None and xu.shape[0] > 1:
            order = torch.randperm(xu.shape[0], device=xu.device)
            xu = mixup_images(xu, float(self.beta.sample()), order)
        return xu

    def train(self, mode: bool = True) -> DistillationModule:
        super().train(mode)
        self.teachers.eval()  # teachers always predict with their running statistics
        return self

    @torch.no_grad()
    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Log of the mean teacher distribution at temperature T, times T (so softmax(./T) gives it back)."""
        t = self.temperature
        probs = []
        for teacher, size in zip(self.teachers, self.teacher_sizes, strict=True):
            xi = (
                x
                if x.shape[-1] == size
                else F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
            )
            probs.append((teacher(xi) / t).softmax(dim=1))
        return torch.stack(probs).mean(dim=0).clamp_min(1e-8).log() * t

    def training_loss(self, batch: Any) -> torch.Tensor:
        if isinstance(batch, dict):
            (xl, yl), (xu, _) = batch["x"], batch["u"]
        else:
            (xl, yl), xu = batch, None
        x = xl if xu is None or xu.shape[0] == 0 else torch.cat([xl, self.transfer_images(xu)])
        logits = self(x)
        self.count_images("teacher_inference", x.shape[0] * len(self.teachers))
        return kd_loss(logits, self.teacher_logits(x), yl, self.temperature, self.alpha, self.criterion)


@register_method("kd")
class KnowledgeDistillation(Method):
    summary = "Hinton soft-target distillation from one or more teachers (on labelled + unlabelled images)"
    options: ClassVar[dict[str, Any]] = {
        **TEACHER_OPTIONS,
        "teachers": list(RECOMMENDED_TEACHERS),
        "temperature": 4.0,
        "alpha": 0.7,
        "unlabelled": True,
        "mu": 1,
        "transfer_augment": False,
        "mixup": 0.0,
        **POOL_OPTIONS,
    }

    def needs_unlabelled(self) -> bool:
        return bool(self.config["unlabelled"])

    def no_unlabelled_hint(self) -> str:
        return "or distil on the labelled images only with --option unlabelled=false"

    def run(self, train: TrainConfig, resume: bool = False) -> RunResult:
        c = self.config
        number(c, "temperature", 0.1, 100.0, self.name)
        number(c, "alpha", 0.0, 1.0, self.name)
        number(c, "mu", 1, 64, self.name)
        flag(c, "transfer_augment", self.name)
        number(c, "mixup", 0.0, 100.0, self.name)
        run_dir, train, split = start_run(self, train, resume)
        dirs = prepare_teachers(self.name, c, train, run_dir, split)
        hooks = FitHooks(
            module_factory=functools.partial(
                _module,
                teachers=load_teachers(dirs),
                temperature=float(c["temperature"]),
                alpha=float(c["alpha"]),
                transfer_augment=bool(c["transfer_augment"]),
                mixup=float(c["mixup"]),
                vflip=train.vflip,
                invariances=train.invariances,
            ),
            summary={"method": self.name, "options": dict(c), "teachers": [str(d) for d in dirs]},
            teacher_cost=runs_cost(dirs),
        )
        if c["unlabelled"]:
            hooks.datamodule_factory = pool_datamodule(c, self.name)
        return fit(train, resume=resume and (run_dir / "config.json").is_file(), hooks=hooks)


@register_method("function_matching")
class FunctionMatching(KnowledgeDistillation):
    """KD whose transfer images are weak views mixed pairwise, seen alike by teachers and student
    (Beyer et al., CVPR 2022); their long schedules ("patient") are the user's step budget."""

    summary = "KD with consistent augmented + MixUp transfer images (function matching, Beyer et al. 2022)"
    options: ClassVar[dict[str, Any]] = {
        **KnowledgeDistillation.options,
        "transfer_augment": True,
        "mixup": 1.0,
    }


def _module(model: Any, classes: list[str], datamodule: Any, **kwargs: Any) -> DistillationModule:
    return DistillationModule(model, classes, **kwargs)
