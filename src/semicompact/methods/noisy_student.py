"""Noisy Student self-training (Xie, Luong, Hovy and Le, "Self-training with Noisy Student improves
ImageNet classification", CVPR 2020).

The self-training loop of :mod:`.self_training` (teacher, pseudo-labels, rounds in which the student
becomes the next teacher) with the paper's two changes: the teacher labels the pool WITHOUT noise
(clean images, eval mode: what ``ensemble_predict`` does, with no test-time transform by default),
and the student learns WITH noise, so that it has to generalise beyond its teacher:

- input noise: RandAugment on every training batch, labelled and pseudo-labelled
  (:func:`~semicompact.data.ssl_augment.strong_augment`: flip + shift, 2 ops per image);
- model noise: dropout 0.5 on the head's input and stochastic depth (drop-path rate 0.2 at the last
  block, linear in depth) where the network has residual blocks (timm models; see
  :mod:`semicompact.models.noise`). Neither adds a parameter, so each round's student reloads as
  the next round's clean teacher;
- data filtering and balancing: images under confidence 0.3 are dropped, each predicted class keeps
  at most its quota of the most confident images (``balance: quota``) and a class under its quota
  gets its images repeated up to it (``duplicate: true``);
- soft pseudo-labels (the teacher's distribution) by default; ``labels: hard`` is the paper's other
  variant;
- ``rounds`` 2 by default (the paper iterated 3 times on ImageNet, with ever larger students).

Defaults that differ from the paper, and why: the first teacher is the student's own network trained
supervised (the cached model every method of a grid shares; the paper's students are equal or
larger, and ``teachers`` can name a smaller teacher to reproduce that); teachers are temperature
scaled on the validation split (``calibrate``, the project's default: a 0.3 threshold then means
what it says); RandAugment draws its magnitude per image up to ``randaugment_m`` on the 0-10 scale
(FixMatch's variant) instead of the fixed magnitude 27 of 30; repeats are the most confident images
first, cyclically, not a random draw; quotas come from the labelled class prior (equal under the
paper's equal-labels-per-class protocol, which is the paper's equal top-K) and their total is the
number of confident images, not a fixed 130K per class.

Cost: each round takes the run's whole budget (``--max-steps``); the last round's ``metrics.json``
charges everything before it: ``teacher_steps`` is the first teacher's steps plus every earlier
round's (a round's ``total_steps`` includes its teacher's), ``total_steps`` adds this round's,
``cost.rounds`` lists each earlier round's own steps and images seen, and
``earlier_rounds_steps`` their sum. Images seen count as in every self-training run
(pseudo-labelled images, repeats included, as unlabelled).
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import torch

from ..data.ssl_augment import RANDAUGMENT_OPS, strong_augment
from ..errors import ConfigError
from ..models.noise import add_noise
from ..training.config import TrainConfig
from ..training.run import FitHooks, RunResult
from ._options import as_list, flag
from .base import register_method
from .pseudo import PseudoLabels, balance_mode, class_quotas, fill_quotas
from .self_training import SelfTraining


@register_method("noisy_student")
class NoisyStudent(SelfTraining):
    summary = (
        "Noisy Student (Xie et al. 2020): a clean teacher pseudo-labels, a student with RandAugment, "
        "dropout and stochastic depth learns; rounds"
    )
    options: ClassVar[dict[str, Any]] = {
        **SelfTraining.options,
        "teachers": None,  # None: the student's own network, trained supervised (shared cache)
        "teacher_pretrained": None,  # None: as the student
        "confidence": 0.3,
        "labels": "soft",
        "balance": "quota",
        "duplicate": True,
        "rounds": 2,
        "drop_rate": 0.5,
        "drop_path_rate": 0.2,
        "randaugment_n": 2,
        "randaugment_m": 10,
        "cutout": 0.0,
    }

    def validate(self) -> None:
        super().validate()
        c = self.config
        for name in ("drop_rate", "drop_path_rate"):
            value = c[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ConfigError(
                    f"--method {self.name}: option {name} must be a number in [0, 1), got '{value}'"
                )
        n = c["randaugment_n"]
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(RANDAUGMENT_OPS):
            raise ConfigError(
                f"--method {self.name}: option randaugment_n must be an integer in "
                f"1..{len(RANDAUGMENT_OPS)}, got '{n}'"
            )
        m = c["randaugment_m"]
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not 0 < m <= 10:
            raise ConfigError(
                f"--method {self.name}: option randaugment_m must be a number in (0, 10], got '{m}'"
            )
        cut = c["cutout"]
        if isinstance(cut, bool) or not isinstance(cut, (int, float)) or not 0 <= cut <= 1:
            raise ConfigError(f"--method {self.name}: option cutout must be a number in [0, 1], got '{cut}'")
        if flag(c, "duplicate", self.name) and balance_mode(c["balance"]) != "quota":
            raise ConfigError(
                f"--method {self.name}: option duplicate=true fills the per-class quotas of balance=quota, "
                f"but balance is '{c['balance']}'; set balance=quota or duplicate=false"
            )

    def run(self, train: TrainConfig, resume: bool = False) -> RunResult:
        c = self.config
        if not as_list(c["teachers"]) and not as_list(c["teacher_runs"]):
            # the teacher is the student's own network trained on the labelled images, with the
            # student's settings and weights file: the supervised model every method shares
            weights = c["teacher_weights"] or ([train.weights] if train.weights else None)
            self.config = {**c, "teachers": [train.model], "teacher_weights": weights}
        return super().run(train, resume)

    def select_pseudo(
        self, pseudo: PseudoLabels, prior: torch.Tensor
    ) -> tuple[PseudoLabels, list[int], dict[str, Any]]:
        pseudo, selected, extra = super().select_pseudo(pseudo, prior)
        if not self.config["duplicate"]:
            return pseudo, selected, extra
        confident = int((pseudo.confidence >= float(self.config["confidence"])).sum())
        quotas = class_quotas(confident, prior)
        filled = fill_quotas(pseudo, selected, quotas)
        extra = {
            **extra,
            "quotas": dict(zip(pseudo.classes, quotas, strict=True)),
            "duplicated": len(filled) - len(selected),
            "pseudo_images_trained": len(filled),
        }
        return pseudo, filled, extra

    def student_hooks(self, hooks: FitHooks, student: TrainConfig) -> FitHooks:
        c = self.config
        noise = {
            "randaugment": {"n": int(c["randaugment_n"]), "m": float(c["randaugment_m"])},
            "cutout": float(c["cutout"]),
        }
        hooks.summary["noise"] = noise
        assert hooks.module_factory is not None and hooks.datamodule_factory is not None
        hooks.module_factory = functools.partial(
            _noisy_module,
            inner=hooks.module_factory,
            drop_rate=float(c["drop_rate"]),
            drop_path_rate=float(c["drop_path_rate"]),
            record=noise,
        )
        hooks.datamodule_factory = functools.partial(
            _noisy_datamodule,
            inner=hooks.datamodule_factory,
            n=int(c["randaugment_n"]),
            m=float(c["randaugment_m"]),
            cutout=float(c["cutout"]),
        )
        return hooks


def _noisy_module(
    model: Any,
    classes: list[str],
    datamodule: Any,
    *,
    inner: Any,
    drop_rate: float,
    drop_path_rate: float,
    record: dict[str, Any],
    **kwargs: Any,
) -> Any:
    """The self-training module (image counting, hard or soft targets) over a noised student."""
    record.update(add_noise(model, drop_rate, drop_path_rate))
    return inner(model, classes, datamodule, **kwargs)


def _noisy_datamodule(*, inner: Any, n: int, m: float, cutout: float, **kwargs: Any) -> Any:
    """The self-training data module whose training batches (labelled and pseudo-labelled) get
    RandAugment instead of the standard augmentation; validation and test stay clean."""
    dm = inner(**kwargs)
    dm.augment = strong_augment(
        n=n,
        m=m,
        vflip=bool(kwargs.get("vflip", False)),
        cutout=cutout,
        invariances=kwargs.get("invariances"),  # flips only within the run's declared invariances
    )
    return dm
