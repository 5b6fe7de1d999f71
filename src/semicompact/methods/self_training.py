"""Self-training as in the seed paper: teachers label the unlabelled pool, the student learns from both.

``plain_distillation`` (one teacher), ``data_distillation`` (one teacher x test-time transforms),
``model_distillation`` (several teachers) and ``model_data_distillation`` (teachers x transforms) are
the same procedure with different defaults, so each is a four-line subclass.
"""

from __future__ import annotations

import functools
import json
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import torch
from rich.console import Console
from torch.nn import functional as F

from ..data import SemiCompactDataModule, open_source
from ..data.tta import PAPER_TTA, build_tta
from ..errors import ConfigError
from ..evaluate.metrics import classification_metrics
from ..evaluate.predict import inference_device, predict_loader
from ..io import write_json
from ..models import get_spec
from ..training.config import TrainConfig
from ..training.module import ClassifierModule
from ..training.run import (
    FitHooks,
    RunResult,
    build_model,
    build_split,
    fit,
    is_worker_process,
    start_files,
)
from ..training.rundir import check_accelerator, check_reusable, with_resume_safe
from ._options import as_list, number
from .base import Method, register_method
from .losses import coded_targets
from .pseudo import (
    PseudoLabels,
    balance_mode,
    ensemble_predict,
    fit_temperature,
    labelled_prior,
    select_pseudo,
    subsample_pool,
    teacher_weights,
)
from .teachers import load_teachers, runs_cost, train_teachers
from .views import check_transforms, is_auto, run_transforms, select_views

console = Console(stderr=True)

PAPER_TRANSFORMS = list(PAPER_TTA)


class SoftTargetModule(ClassifierModule):
    """Cross-entropy against a distribution: one-hot for labelled images, the teachers' for pseudo ones.

    Labels ``>= k`` index the soft-target table (the data module encodes them), so the data pipeline
    stays the plain ``(image, int label)`` one.
    """

    def __init__(self, *args: Any, soft_targets: torch.Tensor, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register_buffer("soft_targets", soft_targets.float(), persistent=False)

    def training_loss(self, batch: Any) -> torch.Tensor:
        x, y = batch[0], batch[1]
        target = coded_targets(y, len(self.classes), self.soft_targets)
        return F.cross_entropy(self(x), target, weight=self.criterion.weight)

    def count_labelled(self, batch: Any, size: int) -> None:
        count_coded(self, batch[1], size)


class CodedTrainDataModule(SemiCompactDataModule):
    """Trains on ``codes`` (int labels, ``>= k`` = soft-target index) instead of the manifest labels."""

    def __init__(self, *args: Any, codes: list[int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.codes = codes

    def train_dataloader(self) -> Any:
        entries = [[e[0], c] for e, c in zip(self.manifest.labelled, self.codes, strict=True)]
        drop_last = len(entries) > self.batch_size
        return self._loader(entries, self.batch_size, shuffle=True, drop_last=drop_last, name="train")


def check_fresh(run_dir: Path, resume: bool) -> None:
    """Refuse to overwrite a run (before any pseudo-label is written), as ``fit`` does; a folder
    holding only a failed start (no checkpoint, no metrics) is not a run."""
    if is_worker_process():
        return
    if resume:
        if not (run_dir / "method.json").is_file():
            raise ConfigError(f"--resume: '{run_dir}' holds no semi-supervised run to resume; drop --resume")
    else:
        check_reusable(run_dir)


def check_teacher_options(method: str, c: dict[str, Any]) -> None:
    """The teachers' names, weight files and finished runs, checked before the run folder is made."""
    runs = [Path(str(d)) for d in as_list(c.get("teacher_runs"))]
    for d in runs:
        if not (d / "best.safetensors").is_file() or not (d / "split.json").is_file():
            raise ConfigError(f"--method {method}: teacher_runs: '{d}' is not a finished semicompact run")
    if runs:
        return
    names = [str(n) for n in as_list(c.get("teachers"))]
    if not names:
        raise ConfigError(f"--method {method}: no teacher given: set the option teachers=NAME[,NAME...]")
    for name in names:
        get_spec(name)  # unknown names fail here, with suggestions
    weights = as_list(c.get("teacher_weights"))
    if weights and len(weights) != len(names):
        raise ConfigError(
            f"--method {method}: teacher_weights lists {len(weights)} file(s) for {len(names)} "
            "teacher(s); give one per teacher"
        )
    for w in weights:
        if w and not Path(str(w)).is_file():
            raise ConfigError(f"--method {method}: teacher_weights file '{w}' does not exist")


def start_run(method: Method, train: TrainConfig, resume: bool) -> tuple[Path, TrainConfig, Path]:
    """Check every input, then create the run folder and its split; returns (run_dir, config, split path)."""
    run_dir = Path(train.out)
    check_fresh(run_dir, resume)
    if resume:
        stored = json.loads((run_dir / "method.json").read_text(encoding="utf-8"))
        train = with_resume_safe(TrainConfig.from_dict(stored["train"]), train)
        method.config = {**method.options, **stored["options"]}  # options added since keep defaults
    source = open_source(train.data, unlabelled=train.unlabelled, class_names=train.class_names)
    manifest = build_split(train, run_dir, source, reuse_own=resume or is_worker_process(), save=False)
    build_model(train, len(manifest.classes))  # name, weights, image size: before any file is written
    check_accelerator(train.accelerator, train.devices)
    if "teachers" in method.config:
        check_teacher_options(method.name, method.config)
    # the data's fault comes after every option's (a typo is the likelier mistake), before any file
    if method.needs_unlabelled() and not manifest.unlabelled:
        raise ConfigError(
            f"--method {method.name}: no unlabelled images in the split of '{train.data}'; put them in "
            f"unlabelled/ or pass --unlabelled DIR, {method.no_unlabelled_hint()}"
        )
    start_files(run_dir, resume, clear=True)
    if not is_worker_process():
        if not (run_dir / "split.json").is_file():
            manifest.save(run_dir / "split.json")
        write_json(
            run_dir / "method.json",
            {"method": method.name, "options": method.config, "train": train.to_dict()},
        )
    return run_dir, train, run_dir / "split.json"


def check_teacher_runs(dirs: list[Path], split: Path, method: str) -> list[Path]:
    """Finished runs given as teachers must share the student's split: a teacher that trained on
    the student's test images would leak them into the pseudo-labels."""
    ours = json.loads(split.read_text(encoding="utf-8"))
    for d in dirs:
        if not (d / "best.safetensors").is_file() or not (d / "split.json").is_file():
            raise ConfigError(f"--method {method}: teacher_runs: '{d}' is not a finished semicompact run")
        theirs = json.loads((d / "split.json").read_text(encoding="utf-8"))
        if theirs.get("test") != ours.get("test") or theirs.get("labelled") != ours.get("labelled"):
            raise ConfigError(
                f"--method {method}: teacher_runs: '{d}' was trained on another split; "
                "train the teacher with the same --split (or data and --seed) as the student"
            )
    return dirs


def teacher_cache(run_dir: Path, option: Any) -> Path:
    """Teachers live beside the run (shared by the runs of one benchmark folder) unless told otherwise."""
    return Path(option) if option else run_dir.resolve().parent / "teachers"


#: the options of every method that learns from teachers (self-training and KD)
TEACHER_OPTIONS: dict[str, Any] = {
    # works offline: its ImageNet weights come with the install (the paper's ResNet-50 needs the hub)
    "teachers": ["tf_efficientnet_lite0"],
    "teacher_weights": None,
    "teacher_pretrained": True,
    "teacher_epochs": None,
    "teacher_image_size": None,
    "teacher_cache": None,
    "teacher_runs": None,
}


def prepare_teachers(
    method: str, c: dict[str, Any], train: TrainConfig, run_dir: Path, split: Path
) -> list[Path]:
    """The run folders of the teachers: given finished runs, or trained (once, cached) now."""
    given = [Path(str(d)) for d in as_list(c["teacher_runs"])]
    if given:
        return check_teacher_runs(given, split, method)
    return train_teachers(
        train,
        [str(n) for n in as_list(c["teachers"])],
        split,
        teacher_cache(run_dir, c["teacher_cache"]),
        weights=as_list(c["teacher_weights"]) or None,
        # None: as the student (Noisy Student's default teacher is the student's own supervised model)
        pretrained=None if c["teacher_pretrained"] is None else bool(c["teacher_pretrained"]),
        epochs=c["teacher_epochs"],
        image_size=c["teacher_image_size"],
    )


class SelfTraining(Method):
    summary = "teachers pseudo-label the unlabelled pool; the student learns from labelled + confident images"
    uses_unlabelled = True
    options: ClassVar[dict[str, Any]] = {
        **TEACHER_OPTIONS,
        "transforms": [],
        # transforms: auto keeps the candidates that do not lower the teachers' validation accuracy
        "auto_candidates": None,
        "confidence": 0.8,
        "labels": "hard",
        "balance": False,
        "rounds": 1,
        "max_unlabelled": None,
        "inference_batch_size": 256,
        "calibrate": True,
        "ensemble": "weighted",
    }

    def validate(self) -> None:
        c = self.config
        number(c, "confidence", 0.0, 1.0, self.name)
        if c["labels"] not in ("hard", "soft"):
            raise ConfigError(
                f"--method {self.name}: option labels must be hard or soft, got '{c['labels']}'"
            )
        if c["ensemble"] not in ("weighted", "mean"):
            raise ConfigError(
                f"--method {self.name}: option ensemble must be weighted or mean, got '{c['ensemble']}'"
            )
        if int(c["rounds"]) < 1:
            raise ConfigError(f"--method {self.name}: option rounds must be at least 1, got {c['rounds']}")
        balance_mode(c["balance"], self.name)
        check_transforms(self.name, c)  # unknown names fail here, before any training

    def run(self, train: TrainConfig, resume: bool = False) -> RunResult:
        self.validate()
        run_dir, train, split = start_run(self, train, resume)
        c = self.config
        teacher_dirs = prepare_teachers(self.name, c, train, run_dir, split)
        transforms = run_transforms(c, train.invariances)  # the declared flips only; auto: candidates
        rounds = int(c["rounds"])
        result: RunResult | None = None
        earlier: list[dict[str, Any]] = []
        for r in range(1, rounds + 1):
            last = r == rounds
            out = run_dir if last else run_dir / "rounds" / f"round-{r}"
            student = replace(train, out=str(out), split=str(split))
            result = self._round(
                student, teacher_dirs, transforms, out, resume or (out / "config.json").is_file(), earlier
            )
            teacher_dirs = [out]  # the student becomes the next round's teacher
            earlier.append(round_cost(r, out, result.metrics.get("cost") or {}))
        assert result is not None
        return result

    def select_pseudo(
        self, pseudo: PseudoLabels, prior: torch.Tensor
    ) -> tuple[PseudoLabels, list[int], dict[str, Any]]:
        """The pseudo-labels the student learns from, the indices it trains on (repeats allowed)
        and extra summary fields; Noisy Student adds its duplication of rare classes."""
        c = self.config
        pseudo, selected = select_pseudo(pseudo, float(c["confidence"]), c["balance"], prior)
        return pseudo, selected, {}

    def student_hooks(self, hooks: FitHooks, student: TrainConfig) -> FitHooks:
        """How the student trains; Noisy Student adds its noise here. Unchanged for the paper's methods."""
        return hooks

    def _round(
        self,
        student: TrainConfig,
        teacher_dirs: list[Path],
        transforms: list[Any],
        out: Path,
        resume: bool,
        earlier: list[dict[str, Any]] | None = None,
    ) -> RunResult:
        c = self.config
        source = open_source(student.data, unlabelled=student.unlabelled, class_names=student.class_names)
        out.mkdir(parents=True, exist_ok=True)
        manifest = build_split(student, out, source)
        cache = out / "pseudo_labels.pt"
        if cache.is_file():
            stored = torch.load(cache, map_location="cpu", weights_only=True)
            pseudo = PseudoLabels(stored["refs"], stored["probs"], stored["true"], manifest.classes)
            teacher_checks = stored.get("teacher_checks", [])
            view_choice = stored.get("view_selection")
            if view_choice is not None:
                transforms = build_tta(view_choice["chosen"])
        else:
            dm = SemiCompactDataModule(
                source,
                manifest,
                image_size=student.image_size,
                batch_size=student.batch_size,
                num_workers=student.num_workers,
                skip_log=out / "skipped_images.tsv",
                seed=student.seed,
            )
            # never empty: start_run stopped the run before any teacher when the split had none
            pool = subsample_pool(manifest.unlabelled, c["max_unlabelled"], student.seed)
            device = inference_device() if student.accelerator in ("auto", "gpu", "cuda") else "cpu"
            teachers = load_teachers(teacher_dirs)
            checks = [_val_check(m, size, dm, device) for m, size in teachers]
            teacher_checks = [{"temperature": t, "val_macro_f1": f1} for t, f1 in checks]
            temperatures = [t for t, _ in checks] if c["calibrate"] else None
            view_choice = None
            if is_auto(c):
                transforms, view_choice = select_views(teachers, dm, transforms, device)
            weights = None
            if c["ensemble"] == "weighted" and len(teachers) > 1:
                weights = teacher_weights([f1 for _, f1 in checks], len(manifest.classes))
                for check, w in zip(teacher_checks, weights, strict=True):
                    check["weight"] = w
                shown = ", ".join(f"{w:.2f}" for w in weights)
                console.print(f"teacher weights from validation macro-F1: {shown}")
            pseudo = ensemble_predict(
                teachers, dm, pool, transforms, device, int(c["inference_batch_size"]), temperatures, weights
            )
            if not is_worker_process():
                buffer = {
                    "refs": pseudo.refs,
                    "probs": pseudo.probs,
                    "true": pseudo.true,
                    "teacher_checks": teacher_checks,
                    "view_selection": view_choice,
                }
                _atomic_torch_save(buffer, cache)
        threshold = float(c["confidence"])
        prior = labelled_prior(manifest.labelled, len(manifest.classes))
        pseudo, selected, extra = self.select_pseudo(pseudo, prior)
        unique = sorted(set(selected))
        summary = pseudo.summary(unique, threshold)
        summary["balance"] = balance_mode(c["balance"])
        summary.update(extra)
        summary["teachers"] = [str(d) for d in teacher_dirs]
        summary["transforms"] = [t.name for t in transforms]
        summary["teacher_checks"] = teacher_checks
        if view_choice is not None:
            summary["view_selection"] = view_choice
        if not is_worker_process():
            pseudo.write(out / "pseudo_labels.csv", unique)
            write_json(out / "pseudo_summary.json", summary)
        acc = summary["accuracy_selected"]
        console.print(
            f"pseudo-labels: {len(unique)}/{len(pseudo.refs)} images at confidence >= {threshold}"
            + (f", {100 * acc:.1f}% correct where known" if acc is not None else "")
        )
        if not selected and pseudo.refs:
            console.print(
                f"[yellow]warning:[/] no unlabelled image reached confidence {threshold}: this round "
                "trains on the labelled images only; lower the option confidence (--option confidence=0.6) "
                "or check the teachers' validation macro-F1"
            )
        entries, codes, soft = student_targets(manifest.labelled, pseudo, selected)
        hooks = FitHooks(train_entries=entries, summary={"method": self.name, "pseudo_labels": summary})
        # both kinds of labels train on codes (k + j = the j-th pseudo-labelled image), so that the
        # run counts labelled and pseudo-labelled images exactly
        hooks.datamodule_factory = functools.partial(CodedTrainDataModule, codes=codes)
        if c["labels"] == "soft":
            hooks.module_factory = functools.partial(_soft_module, soft_targets=soft)
        else:
            hard = pseudo.labels[selected] if selected else torch.empty(0, dtype=torch.long)
            hooks.module_factory = functools.partial(_hard_module, pseudo_labels=hard)
        views = max(1, len(transforms)) * len(teacher_dirs)
        hooks.teacher_cost = {
            **runs_cost(teacher_dirs),
            "teacher_inference_images_seen": len(pseudo.refs) * views
            + int((view_choice or {}).get("inference_images", 0)),
        }
        if earlier:  # later rounds: the earlier rounds' own cost, one entry each
            hooks.folder_checked = True  # start_run refused an existing run; rounds/ is this run's
            hooks.teacher_cost["rounds"] = list(earlier)
            hooks.teacher_cost["earlier_rounds_steps"] = sum(int(e["optimizer_steps"] or 0) for e in earlier)
        hooks = self.student_hooks(hooks, student)
        return fit(student, resume=resume and (out / "config.json").is_file(), hooks=hooks)


#: what each earlier round of a multi-round run cost, recorded in the last round's ``cost.rounds``
ROUND_COST_KEYS = (
    "optimizer_steps",
    "labelled_images_seen",
    "unlabelled_images_seen",
    "teacher_inference_images_seen",
    "wall_time_s",
)


def round_cost(r: int, out: Path, cost: dict[str, Any]) -> dict[str, Any]:
    """One earlier round's own cost (its steps are also inside the next round's ``teacher_steps``)."""
    return {"round": r, "run_dir": str(out), **{k: cost.get(k) for k in ROUND_COST_KEYS}}


def student_targets(
    labelled: list[list[Any]], pseudo: PseudoLabels, selected: list[int]
) -> tuple[list[list[Any]], list[int], torch.Tensor]:
    """What the student learns from: ``entries`` (labelled images with their labels, then the
    selected pool images with the teachers' argmax: hard pseudo-labels), and for soft labels the
    ``codes`` (a labelled image's class, ``k + j`` for the j-th selected image) with the soft-target
    table (row j = the teachers' mean distribution for that image)."""
    k = len(pseudo.classes)
    labels = pseudo.labels.tolist()
    entries = [list(e) for e in labelled] + [[pseudo.refs[i], labels[i]] for i in selected]
    codes = [int(e[1]) for e in labelled] + [k + j for j in range(len(selected))]
    soft = pseudo.probs[selected] if selected else torch.empty(0, k)
    return entries, codes, soft


def _val_check(model: Any, size: int, dm: SemiCompactDataModule, device: Any) -> tuple[float, float]:
    """The teacher's temperature fitted on the validation split and its macro-F1 there (at the
    teacher's input size)."""
    val = SemiCompactDataModule(dm.source, dm.manifest, image_size=size, batch_size=256, skip_log=dm.skip_log)
    probs, targets = predict_loader(model, val.val_dataloader(), device)
    temperature = fit_temperature(probs, targets)
    f1 = classification_metrics(probs, targets, list(dm.classes))["macro_f1"] if targets.numel() else 0.0
    console.print(f"teacher on the validation split: temperature {temperature:.3f}, macro-F1 {f1:.3f}")
    return temperature, float(f1)


def _soft_module(model: Any, classes: list[str], datamodule: Any, **kwargs: Any) -> ClassifierModule:
    return SoftTargetModule(model, classes, **kwargs)


def _hard_module(model: Any, classes: list[str], datamodule: Any, **kwargs: Any) -> ClassifierModule:
    return HardPseudoModule(model, classes, **kwargs)


def count_coded(module: ClassifierModule, codes: torch.Tensor, size: int) -> None:
    """Codes ``>= k`` are pseudo-labelled pool images: they count as unlabelled images seen."""
    pseudo = int((codes >= len(module.classes)).sum())
    module.count_images("labelled", size - pseudo)
    module.count_images("unlabelled", pseudo)


class HardPseudoModule(ClassifierModule):
    """Plain cross-entropy on labelled + hard pseudo-labelled images (code ``k + j`` = the j-th
    pseudo-labelled image, whose class is ``pseudo_labels[j]``)."""

    def __init__(self, *args: Any, pseudo_labels: torch.Tensor, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register_buffer("pseudo_labels", pseudo_labels.long(), persistent=False)

    def training_loss(self, batch: Any) -> torch.Tensor:
        x, y = batch[0], batch[1]
        k = len(self.classes)
        labels = y.clone()
        pseudo = y >= k
        if pseudo.any():
            labels[pseudo] = self.pseudo_labels[y[pseudo] - k]
        return self.criterion(self(x), labels)

    def count_labelled(self, batch: Any, size: int) -> None:
        count_coded(self, batch[1], size)


def _atomic_torch_save(obj: Any, path: Path) -> None:
    import io as _io

    from ..io import write_bytes

    buffer = _io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getvalue())


@register_method("plain_distillation")
class PlainDistillation(SelfTraining):
    summary = "one teacher pseudo-labels the unlabelled images (the paper's Plain distillation)"


@register_method("data_distillation")
class DataDistillation(SelfTraining):
    summary = "one teacher x test-time transforms, ensembled by mean probability"
    options: ClassVar[dict[str, Any]] = {**SelfTraining.options, "transforms": PAPER_TRANSFORMS}


@register_method("model_distillation")
class ModelDistillation(SelfTraining):
    summary = "several teachers, ensembled by mean probability"
    options: ClassVar[dict[str, Any]] = {
        **SelfTraining.options,
        "teachers": ["resnet50", "resnet101", "efficientnet_b3"],
    }


@register_method("model_data_distillation")
class ModelDataDistillation(SelfTraining):
    summary = "several teachers x test-time transforms"
    options: ClassVar[dict[str, Any]] = {
        **SelfTraining.options,
        "teachers": ["resnet50", "resnet101", "efficientnet_b3"],
        "transforms": PAPER_TRANSFORMS,
    }
