"""Semi-supervised teacher, distilled: train a teacher with a consistency method, then Hinton KD.

Chen et al. 2020 ("Big self-supervised models are strong semi-supervised learners", SimCLRv2)
found that the unlabelled images pay twice: once to make a good semi-supervised model, and again
when that model's soft predictions on the unlabelled images train a smaller student (distillation
with Hinton et al. 2015's soft targets at temperature T). Here the teacher is trained by any
registered method (``teacher_method``, FixMatch by default) on the student's split with the
student's step budget, cached like the supervised teachers (one run per configuration, split and
method, shared by every run that needs it, under a file lock), and charged to the student's cost.
The student then learns ``(1 - alpha) CE(labels) + alpha T^2 KL(teacher_T || student_T)`` on the
labelled batch and the soft term alone on the unlabelled images (a weak view, the same for both,
made only of the declared invariances).

``supervised_teachers`` adds networks trained supervised on the same labels (cached and shared with
``kd``'s teachers) to the ensemble, averaged with the semi-supervised teacher at temperature T: the
semi-supervised teacher brings what the unlabelled images taught it, the supervised ones steady it
where it drifted (the hypothesis; measured at 64 px on four MedMNIST sets it was no better than
``kd``'s supervised teachers alone and less safe: docs/methods.md).
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import torch
from rich.console import Console

from ..data.ssl_augment import weak_augment
from ..errors import ConfigError
from ..models import get_spec
from ..models.weights import PretrainedUnavailable
from ..training.config import TrainConfig
from ..training.run import FitHooks, RunResult, fit
from ._options import as_list, choice, number
from .base import Method, get_method, method_class, register_method
from .consistency import POOL_OPTIONS, pool_datamodule
from .kd import DistillationModule
from .self_training import start_run, teacher_cache
from .teachers import (
    _locked,
    load_teachers,
    reusable,
    runs_cost,
    teacher_config,
    teacher_key,
    train_teachers,
)

console = Console(stderr=True)

UNLABELLED_VIEWS = ("weak", "none")


class SSLDistillationModule(DistillationModule):
    """KD whose unlabelled images arrive as a weak view (flip/shift within the declared
    invariances): teacher and student see the same view, so the student matches the teacher on
    more than the raw pool (SimCLRv2 distils with augmentation too)."""

    def __init__(
        self,
        *args: Any,
        unlabelled_view: str = "weak",
        vflip: bool = False,
        invariances: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.view = weak_augment(vflip=vflip, invariances=invariances) if unlabelled_view == "weak" else None

    def training_loss(self, batch: Any) -> torch.Tensor:
        if self.view is not None and isinstance(batch, dict):
            xu, yu = batch["u"]
            if xu.shape[0]:
                with torch.no_grad():
                    xu = self.view(xu)
            batch = {**batch, "u": (xu, yu)}
        return super().training_loss(batch)


@register_method("ssl_kd")
class SSLDistillation(Method):
    summary = (
        "a teacher trained by a semi-supervised method (FixMatch) on the same split and budget, "
        "distilled into the student on labelled + unlabelled images (SimCLRv2-style)"
    )
    uses_unlabelled = True
    options: ClassVar[dict[str, Any]] = {
        "teacher": None,  # None: the student's own network
        "teacher_method": "fixmatch",
        "teacher_options": None,
        "teacher_weights": None,
        "teacher_pretrained": True,
        "teacher_image_size": None,
        "teacher_cache": None,
        "supervised_teachers": [],
        "temperature": 4.0,
        "alpha": 0.7,
        "mu": 1,
        "unlabelled_view": "weak",
        **POOL_OPTIONS,
    }

    def validate(self) -> dict[str, Any]:
        """Every option checked before the run folder is made; returns the teacher method's options."""
        c = self.config
        number(c, "temperature", 0.1, 100.0, self.name)
        number(c, "alpha", 0.0, 1.0, self.name)
        number(c, "mu", 1, 64, self.name)
        choice(c, "unlabelled_view", UNLABELLED_VIEWS, self.name)
        for name in [c["teacher"], *as_list(c["supervised_teachers"])]:
            if name is not None:
                get_spec(str(name))  # unknown names fail here, with suggestions
        teacher_method = str(c["teacher_method"])
        if teacher_method == self.name:
            raise ConfigError(
                f"--method {self.name}: option teacher_method cannot be {self.name} itself; "
                "use a semi-supervised method such as fixmatch or mixmatch"
            )
        method_class(teacher_method)  # unknown names fail with the list of methods
        given = c["teacher_options"] or {}
        if not isinstance(given, dict):
            raise ConfigError(
                f"--method {self.name}: option teacher_options must be a mapping of the teacher "
                f"method's options, e.g. --option 'teacher_options={{mu: 2}}', got '{given}'"
            )
        options = teacher_method_options(teacher_method, given, c)
        try:
            get_method(teacher_method, **options)
        except ConfigError as error:
            raise ConfigError(f"--method {self.name}: teacher_options: {error}") from None
        weights = c["teacher_weights"]
        if weights and not Path(str(weights)).is_file():
            raise ConfigError(f"--method {self.name}: teacher_weights file '{weights}' does not exist")
        return options

    def run(self, train: TrainConfig, resume: bool = False) -> RunResult:
        self.validate()
        run_dir, train, split = start_run(self, train, resume)
        c = self.config
        teacher_options = self.validate()  # after a resume, the stored options
        cache = teacher_cache(run_dir, c["teacher_cache"])
        teacher_dir = train_ssl_teacher(train, c, str(c["teacher_method"]), teacher_options, split, cache)
        supervised_dirs = supervised_teacher_dirs(train, c, split, cache)
        hooks = FitHooks(
            module_factory=functools.partial(
                _module,
                teachers=load_teachers([teacher_dir, *supervised_dirs]),
                temperature=float(c["temperature"]),
                alpha=float(c["alpha"]),
                unlabelled_view=str(c["unlabelled_view"]),
                vflip=train.vflip,
                invariances=train.invariances,
            ),
            datamodule_factory=pool_datamodule(c, self.name),
            summary={
                "method": self.name,
                "options": dict(c),
                "teacher": teacher_summary(teacher_dir, str(c["teacher_method"]), teacher_options),
                "supervised_teachers": [str(d) for d in supervised_dirs],
            },
            teacher_cost=runs_cost([teacher_dir, *supervised_dirs]),
        )
        return fit(train, resume=resume and (run_dir / "config.json").is_file(), hooks=hooks)


def supervised_teacher_dirs(train: TrainConfig, c: dict[str, Any], split: Path, cache: Path) -> list[Path]:
    """The ``supervised_teachers`` runs, trained (or reused) exactly as ``kd`` trains its teachers, so
    that both methods share one cached run per network, split and budget."""
    names = [str(n) for n in as_list(c["supervised_teachers"])]
    if not names:
        return []
    return train_teachers(
        train, names, split, cache, pretrained=True, epochs=None, image_size=c["teacher_image_size"]
    )


def teacher_method_options(method: str, given: dict[str, Any], c: dict[str, Any]) -> dict[str, Any]:
    """The teacher method's options: the given ones, plus the student's pool (``max_unlabelled``,
    ``epoch_length``) where the method takes them, so that both learn from the same images."""
    accepted = method_class(method).options
    options = dict(given)
    for name in POOL_OPTIONS:
        if name in accepted and name not in options:
            options[name] = c[name]
    return options


def ssl_teacher_config(train: TrainConfig, c: dict[str, Any], split: Path) -> TrainConfig:
    """The student's data, split, seed, budget and invariances with the teacher's network; the
    teacher of the student's own network starts from the student's weights file, if any."""
    name = str(c["teacher"] or train.model)
    weights = c["teacher_weights"] or (train.weights if name == train.model else None)
    config = teacher_config(
        train,
        name,
        split,
        pretrained=False if weights else bool(c["teacher_pretrained"]),
        image_size=c["teacher_image_size"],
    )
    config.weights = str(weights) if weights else None
    return config


def ssl_teacher_dir(config: TrainConfig, method: str, options: dict[str, Any], cache: Path) -> Path:
    """``<cache>/<method>-<network>-<hash>``: the hash covers the configuration, the split's bytes,
    the method and its resolved options, so any change trains a new teacher and nothing else does."""
    split_sha = hashlib.sha256(Path(config.split or "").read_bytes()).hexdigest() if config.split else ""
    resolved = {**method_class(method).options, **options}
    extra = json.dumps({"method": method, "options": resolved}, sort_keys=True, default=str)
    return cache / f"{method}-{teacher_key(config, split_sha + '|' + extra)}"


def train_ssl_teacher(
    train: TrainConfig, c: dict[str, Any], method: str, options: dict[str, Any], split: Path, cache: Path
) -> Path:
    """Train the teacher with ``method`` (or reuse, or resume it); returns its run folder."""
    config = ssl_teacher_config(train, c, split)
    run_dir = ssl_teacher_dir(config, method, options, cache)
    with _locked(cache / f".{run_dir.name}.lock"):
        if reusable(run_dir, f"{config.model} ({method})"):
            return run_dir
        resume = (run_dir / "method.json").is_file()
        console.print(
            f"teacher {config.model} ({method}): {'resuming' if resume else 'training'} in {run_dir}"
        )
        try:
            get_method(method, **options).run(replace(config, out=str(run_dir)), resume=resume)
        except PretrainedUnavailable as error:
            reason = str(error).split(";")[0]
            raise ConfigError(
                f"teacher {config.model}: {reason}; give it a local file with --option teacher_weights=PATH, "
                "train it from scratch with --option teacher_pretrained=false, or pick a network whose "
                "ImageNet weights come with the install (--option teacher=tf_efficientnet_lite0)"
            ) from None
    return run_dir


def teacher_summary(run_dir: Path, method: str, options: dict[str, Any]) -> dict[str, Any]:
    """Which teacher the student learnt from and how good it was (its own test scores)."""
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        metrics = {}
    test = metrics.get("test") or {}
    return {
        "run_dir": str(run_dir),
        "method": method,
        "options": options,
        "test_macro_f1": test.get("macro_f1"),
        "test_accuracy": test.get("accuracy"),
    }


def _module(model: Any, classes: list[str], datamodule: Any, **kwargs: Any) -> SSLDistillationModule:
    return SSLDistillationModule(model, classes, **kwargs)
