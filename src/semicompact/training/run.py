"""One training run, start to finish: split, model, two-stage fit, evaluation, artefacts.

The run directory is the unit of work: everything a run writes goes there atomically, and
``resume=True`` continues an interrupted run (even after ``kill -9``) from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from rich.console import Console

from ..artifacts import ModelCard, save_model
from ..data import SemiCompactDataModule, SplitManifest, make_split, open_source
from ..errors import ConfigError
from ..evaluate.metrics import classification_metrics, collapse_check
from ..evaluate.plots import plot_confusion_matrix, plot_learning_curves
from ..evaluate.predict import inference_device, predict_loader, prediction_cells
from ..io import atomic_open, write_json
from ..models import Classifier, check_input_size, create_model
from .callbacks import (
    AtomicCheckpointIO,
    CostMeter,
    EpochTimer,
    RngState,
    StageAwareEarlyStopping,
    TwoStageFreeze,
    TwoStageLRFinder,
)
from .config import TrainConfig
from .module import ClassifierModule
from .progress import PlainProgress
from .rundir import (
    check_accelerator,
    check_checkpoint,
    check_reusable,
    claim,
    clear_failed_start,
    release,
    with_resume_safe,
)

console = Console(stderr=True)


class _NoAdverts(logging.Filter):
    """Drop Lightning's product tips from the console; keep its real information."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in record.getMessage()


for _name in ("lightning.pytorch", "lightning.fabric"):
    for _handler in logging.getLogger(_name).handlers:
        _handler.addFilter(_NoAdverts())
warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated")


@dataclass
class FitHooks:
    """How a training method changes a plain supervised run, without touching the engine.

    ``module_factory(model, classes, datamodule, **common)`` builds the LightningModule (a
    :class:`ClassifierModule` subclass); ``datamodule_factory(**kwargs)`` the data module;
    ``train_entries`` replaces the labelled list (e.g. labelled + pseudo-labelled images) and is
    stored as ``train_entries.json``; ``callbacks`` are added to the trainer; ``summary`` is merged
    into ``metrics.json``.
    """

    module_factory: Callable[..., ClassifierModule] | None = None
    datamodule_factory: Callable[..., SemiCompactDataModule] | None = None
    train_entries: list[list[Any]] | None = None
    callbacks: list[L.Callback] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    #: what the run's teachers (or the model a warm start begins from) cost: merged into ``cost``
    teacher_cost: dict[str, Any] = field(default_factory=dict)
    #: the method refused an existing run itself and the folder holds its earlier stages (the last
    #: round of multi-round self-training writes beside ``rounds/``): fit does not refuse it again
    folder_checked: bool = False


@dataclass
class Schedule:
    """The run's budget in optimiser steps, resolved from the options (epochs are converted)."""

    head_steps: int
    max_steps: int | None  # None: the epochs decide
    max_epochs: int
    val_every: int | None  # None: validate once per epoch
    labelled_steps_per_epoch: int
    warmup_steps: int | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def resolve_schedule(config: TrainConfig, n_labelled: int, two_stage: bool) -> Schedule:
    """Convert the epoch options to steps; ``max_steps`` makes every method take the same steps.

    One "labelled epoch" is one pass over the labelled training images (the last partial batch
    dropped when there is more than one batch, as the loader does). The head-only stage lasts
    ``head_steps`` or ``head_epochs`` labelled epochs whatever the method, so an equal-step budget
    also gives every method the same head stage.
    """
    bs = config.batch_size * max(1, config.devices) * max(1, config.num_nodes)
    per_epoch = max(1, n_labelled // bs) if n_labelled > bs else 1
    if not two_stage:
        head = 0
    elif config.head_steps is not None:
        head = int(config.head_steps)
    else:
        head = config.head_epochs * per_epoch
    if config.max_steps is None:
        epochs = (config.head_epochs if two_stage else 0) + config.epochs
        return Schedule(head, None, epochs, config.val_every, per_epoch, config.warmup_steps)
    if head >= config.max_steps:
        raise ConfigError(
            f"--head-epochs {config.head_epochs} is {head} steps here, the whole --max-steps "
            f"{config.max_steps} budget; raise --max-steps or set --head-steps"
        )
    every = config.val_every or max(per_epoch, -(-config.max_steps // 25))
    every = min(every, config.max_steps)
    return Schedule(head, int(config.max_steps), -1, every, per_epoch, config.warmup_steps)


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)


def is_worker_process() -> bool:
    """True in the extra processes DDP starts (they re-run the command); only rank 0 writes files."""
    return any(int(os.environ.get(v, "0") or 0) > 0 for v in ("LOCAL_RANK", "NODE_RANK"))


def prepare_run_dir(config: TrainConfig, resume: bool, checked: bool = False) -> tuple[Path, TrainConfig]:
    """The run folder and the configuration to run, refusing to overwrite a run unless resuming.

    Nothing is written here (see ``start_files``). A folder holding only a failed start (no
    checkpoint, no metrics) is not a run; on resume the stored configuration wins, except the
    options in ``rundir.RESUME_SAFE``, taken from ``config``. ``checked``: the method refused an
    existing run before writing anything (``FitHooks.folder_checked``).
    """
    run_dir = Path(config.out)
    stored = run_dir / "config.json"
    if is_worker_process():
        return run_dir, TrainConfig.load(stored) if resume and stored.is_file() else config
    if resume:
        if not stored.is_file():
            raise ConfigError(f"--resume: '{run_dir}' holds no run to resume (no config.json); drop --resume")
        return run_dir, with_resume_safe(TrainConfig.load(stored), config)
    if not checked:
        check_reusable(run_dir)
    return run_dir, config


def start_files(run_dir: Path, resume: bool, clear: bool) -> None:
    """Called once every input is checked: create the folder; ``clear`` removes a failed start's files."""
    if is_worker_process():
        return
    claim(run_dir)  # before clearing: a run in progress has no checkpoint yet either
    if clear and not resume and clear_failed_start(run_dir):
        console.print(f"note: '{run_dir}' held only a failed start (no checkpoint); starting afresh")
    run_dir.mkdir(parents=True, exist_ok=True)


def build_split(
    config: TrainConfig, run_dir: Path, source: Any, reuse_own: bool = True, save: bool = True
) -> SplitManifest:
    """The split of this run: kept from an earlier start (``reuse_own``), given by --split, or made
    from the seed; ``save`` writes it as the run's split.json when the run has none yet."""
    own = run_dir / "split.json"
    if own.is_file() and reuse_own:
        manifest = SplitManifest.load(own)
    elif config.split:
        manifest = SplitManifest.load(config.split)
    else:
        manifest = split_from_config(config, source)
    manifest.check_source(source)
    if save and not own.is_file() and not is_worker_process():
        manifest.save(own)
    return manifest


def split_from_config(config: TrainConfig, source: Any) -> SplitManifest:
    """The split a run's options make (its seed, label budget, validation and test choices)."""
    return make_split(
        source,
        n_labelled=config.n_labelled,
        test_fraction=config.test_fraction,
        val_fraction=config.val_fraction,
        seed=config.seed,
        val=config.val,
        val_share=config.val_share,
        test_seed=config.test_seed,
    )


def transfer_learning(config: TrainConfig) -> bool:
    """Two stages only make sense when the body starts from learnt weights."""
    return bool(config.pretrained or config.weights)


def build_model(config: TrainConfig, num_classes: int) -> Classifier:
    model = create_model(
        config.model,
        num_classes=num_classes,
        pretrained=config.pretrained,  # a local --weights file wins inside create_model
        weights=config.weights,
        small_input=config.small_input,
    )
    check_input_size(model, config.image_size)
    return model.set_channels_last(config.channels_last)


def _log_version(run_dir: Path, resume: bool) -> str:
    """A fresh CSV/TensorBoard folder for each resumption, so no earlier log line is ever deleted."""
    if not resume:
        return ""
    k = 1
    while (run_dir / "logs" / f"resume-{k}").exists():
        k += 1
    return f"resume-{k}"


def _trainer(
    config: TrainConfig,
    run_dir: Path,
    schedule: Schedule,
    body_lr_mult: float,
    resume: bool = False,
    extra_callbacks: list[L.Callback] | None = None,
) -> tuple[L.Trainer, EpochTimer]:
    accelerator = config.accelerator
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    precision = config.precision if config.precision != "auto" else ("16-mixed" if on_gpu else "32-true")
    distributed = config.devices > 1 or config.num_nodes > 1
    head = schedule.head_steps
    timer = EpochTimer()
    mode = "max"
    callbacks: list[L.Callback] = [TwoStageFreeze(head)]
    if config.lr_find:
        callbacks.append(TwoStageLRFinder(milestones=(0, head), body_lr_mult=body_lr_mult))
    callbacks += [timer, RngState(), CostMeter()]
    if config.early_stopping:
        callbacks.append(
            StageAwareEarlyStopping(
                start_step=head + config.min_steps,
                monitor=f"val/{config.monitor}",
                mode=mode,
                patience=config.patience,
            )
        )
    callbacks.append(
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="best",
            monitor=f"val/{config.monitor}",
            mode=mode,
            save_top_k=1,
            enable_version_counter=False,
        )
    )
    # last.ckpt after EVERY validation: Lightning's save_last writes it only when the monitored best
    # improves, so --resume could go back to an early step; with no monitor, top-1 is the latest
    callbacks.append(
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="last",
            monitor=None,
            save_top_k=1,
            enable_version_counter=False,
        )
    )
    callbacks += list(extra_callbacks or [])
    interactive = config.progress and sys.stderr.isatty()
    if interactive:
        callbacks.append(RichProgressBar())
    elif config.progress:  # redirected output (nohup, CI, a cluster job): one line per epoch
        callbacks.append(PlainProgress())
    version = _log_version(run_dir, resume)
    loggers: list[Any] = [CSVLogger(run_dir, name="logs", version=version)]
    if config.tensorboard:
        with contextlib.suppress(ModuleNotFoundError):  # tensorboard is optional
            loggers.append(TensorBoardLogger(run_dir, name="tensorboard", version=version))
    by_steps: dict[str, Any] = {}
    if schedule.max_steps is not None:
        by_steps = {"max_steps": schedule.max_steps, "check_val_every_n_epoch": None}
    if schedule.val_every is not None:
        by_steps.update(val_check_interval=schedule.val_every, check_val_every_n_epoch=None)
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=config.devices,
        num_nodes=config.num_nodes,
        # frozen body parameters in stage 1 are "unused" for DDP's gradient reducer
        strategy=("ddp_find_unused_parameters_true" if head else "ddp") if distributed else "auto",
        precision=precision,
        max_epochs=schedule.max_epochs,
        callbacks=callbacks,
        logger=loggers,
        default_root_dir=run_dir,
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=interactive,
        enable_model_summary=False,
        log_every_n_steps=1,
        deterministic="warn" if on_gpu else True,
        **by_steps,
    )
    return trainer, timer


def fit(config: TrainConfig, resume: bool = False, hooks: FitHooks | None = None) -> RunResult:
    """Train and evaluate one model as configured; returns the run folder and its test metrics."""
    plain = hooks is None  # methods (with hooks) cleared a failed start in their own start_run
    hooks = hooks or FitHooks()
    run_dir, config = prepare_run_dir(config, resume, checked=hooks.folder_checked)
    L.seed_everything(config.seed, workers=True, verbose=False)
    source = open_source(config.data, unlabelled=config.unlabelled, class_names=config.class_names)
    own_split = resume or is_worker_process() or not plain
    manifest = build_split(config, run_dir, source, reuse_own=own_split, save=False)
    classes = manifest.classes

    started = time.perf_counter()
    two_stage = transfer_learning(config)
    schedule = resolve_schedule(config, len(manifest.labelled), two_stage)
    model = build_model(config, len(classes))
    check_accelerator(config.accelerator, config.devices)
    # every input is checked: only now does the run folder get files
    start_files(run_dir, resume, clear=plain)
    if not is_worker_process():
        if not (own_split and (run_dir / "split.json").is_file()):
            manifest.save(run_dir / "split.json")
        write_json(run_dir / "config.json", config.to_dict())
        write_json(run_dir / "schedule.json", schedule.to_dict())
    n_labels = len(manifest.labelled)
    if hooks.train_entries is not None:
        manifest.labelled = [list(e) for e in hooks.train_entries]
        if not is_worker_process():
            write_json(run_dir / "train_entries.json", manifest.labelled)

    body_lr_mult = config.body_lr_mult if two_stage else 1.0
    datamodule = (hooks.datamodule_factory or SemiCompactDataModule)(
        source=source,
        manifest=manifest,
        image_size=config.image_size,
        batch_size=config.batch_size,
        num_workers=config.num_workers,
        skip_log=run_dir / "skipped_images.tsv",
        augment=config.augment,
        vflip=config.vflip,
        seed=config.seed,
        invariances=config.invariances,
    )
    module = (hooks.module_factory or _supervised_module)(
        model,
        classes,
        datamodule,
        lr=config.lr,
        weight_decay=config.weight_decay,
        head_steps=schedule.head_steps,
        warmup_steps=schedule.warmup_steps,
        body_lr_mult=body_lr_mult,
        class_weights=datamodule.class_weights() if config.class_weights else None,
        label_smoothing=config.label_smoothing,
    )
    trainer, timer = _trainer(
        config, run_dir, schedule, body_lr_mult, resume=resume, extra_callbacks=hooks.callbacks
    )
    last = run_dir / "checkpoints" / "last.ckpt"
    ckpt_path = str(last) if resume and last.is_file() else None
    if resume and ckpt_path is None:
        console.print(f"[yellow]no checkpoint in {last.parent}; starting the run from step 0[/]")
    if ckpt_path is not None:
        check_checkpoint(last)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    if not trainer.is_global_zero:
        return RunResult(run_dir)
    cost = {
        "label_budget": n_labels + len(manifest.val) if manifest.val_source == "labelled" else None,
        "train_labels": n_labels,
        "val_images": len(manifest.val),
        "val_source": manifest.val_source,
        **hooks.teacher_cost,
    }
    summary = {**hooks.summary, "schedule": schedule.to_dict()}
    result = finish_run(config, run_dir, trainer, module, datamodule, timer, schedule, summary, cost, started)
    release(run_dir)
    return result


def _supervised_module(
    model: Classifier, classes: list[str], datamodule: Any, **kwargs: Any
) -> ClassifierModule:
    return ClassifierModule(model, classes, **kwargs)


def finish_run(
    config: TrainConfig,
    run_dir: Path,
    trainer: L.Trainer,
    module: ClassifierModule,
    datamodule: SemiCompactDataModule,
    timer: EpochTimer,
    schedule: Schedule,
    extra_summary: dict[str, Any] | None = None,
    cost: dict[str, Any] | None = None,
    started: float | None = None,
) -> RunResult:
    """Evaluate the last and the best-on-validation weights on the test split, keep the one
    ``config.select`` names, and write every artefact of the run.

    Both scores are recorded (``test_last``, ``test_best``) so that a study can measure whether a
    small validation set picks better models than the end of a fixed schedule.
    """
    device = inference_device() if config.accelerator in ("auto", "gpu", "cuda") else "cpu"
    test_entries = datamodule.manifest.test
    classes = list(module.classes)

    def score() -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        probs, targets = predict_loader(module.model.eval(), datamodule.test_dataloader(), device)
        found = classification_metrics(probs, targets, classes) if len(targets) else {"n": 0}
        return probs, targets, found

    last_state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
    scored = {"last": score()}
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if best and Path(best).is_file():
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
        scored["best"] = score()
    else:
        scored["best"] = scored["last"]
    if config.select == "last":
        module.load_state_dict(last_state)
    probs, targets, metrics = scored[config.select]
    model = module.model.cpu().eval()
    card = ModelCard(
        model=config.model,
        classes=classes,
        image_size=config.image_size,
        small_input=config.small_input,
        mean=tuple(float(v) for v in model.mean.flatten()),
        std=tuple(float(v) for v in model.std.flatten()),
    )
    save_model(run_dir / "best.safetensors", model, card)

    skipped = datamodule.skipped_images()
    times = timer.times
    meter = next((c for c in trainer.callbacks if isinstance(c, CostMeter)), None)
    steps = int(trainer.global_step)
    wall = meter.elapsed if meter else None
    run_cost = {
        "optimizer_steps": steps,
        "labelled_images_seen": 0,
        "unlabelled_images_seen": 0,
        # counted on this process; every DDP process sees as many images
        **{f"{kind}_images_seen": int(n) * trainer.world_size for kind, n in module.images_seen.items()},
        "validations": meter.validations if meter else None,
        "wall_time_s": wall,
        **(cost or {}),
    }
    teacher_steps = run_cost.get("teacher_steps") or 0
    run_cost["total_steps"] = steps + int(teacher_steps)
    summary = {
        "model": config.model,
        "run_dir": str(run_dir),
        "epochs_trained": trainer.current_epoch,
        "head_epochs": config.head_epochs if schedule.head_steps else 0,
        "head_steps": schedule.head_steps,
        "best_epoch_score": _best_score(trainer),
        "monitor": f"val/{config.monitor}",
        "select": config.select,
        "train_time_per_epoch_s": (sum(times) / len(times)) if times else None,
        "train_time_per_step_s": (wall / steps) if wall and steps else None,
        "labelled_images": len(datamodule.manifest.labelled),
        "skipped_images": len(skipped),
        "lr_found": _lr_found(trainer),
        "cost": run_cost,
        "test": metrics,
        "test_last": _headline(scored["last"][2]),
        "test_best": _headline(scored["best"][2]),
        "collapse": collapse_check(metrics),
        **(extra_summary or {}),
    }
    if started is not None:
        summary["run_wall_time_s"] = time.perf_counter() - started
    write_json(run_dir / "metrics.json", summary)
    if len(targets):
        _write_predictions(run_dir / "test_predictions.csv", test_entries, skipped, probs, targets, classes)
        plot_confusion_matrix(metrics["confusion_matrix"], classes, run_dir / "confusion_matrix.png")
    if (run_dir / "logs" / "metrics.csv").is_file():
        head_epochs = schedule.head_steps // max(1, schedule.labelled_steps_per_epoch)
        marker = head_epochs if schedule.max_steps is None else 0
        plot_learning_curves(run_dir / "logs", run_dir / "learning_curve.png", head_epochs=marker)
    if summary["collapse"]:
        console.print(f"[bold red]COLLAPSED RUN {run_dir}: {summary['collapse']}[/]")
    if skipped:
        console.print(
            f"[yellow]{len(skipped)} unreadable image(s) skipped; "
            f"listed in {run_dir / 'skipped_images.tsv'}[/]"
        )
    return RunResult(run_dir, summary)


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics[k] for k in ("macro_f1", "f1", "accuracy", "n") if k in metrics}


def _lr_found(trainer: L.Trainer) -> dict[str, float]:
    for callback in trainer.callbacks:
        if isinstance(callback, TwoStageLRFinder):
            return {str(k): v for k, v in sorted(callback.found.items())}
    return {}


def _best_score(trainer: L.Trainer) -> float | None:
    cb = trainer.checkpoint_callback
    score = getattr(cb, "best_model_score", None)
    return float(score) if score is not None else None


def _write_predictions(
    path: Path,
    entries: list[Any],
    skipped: list[tuple[str, str]],
    probs: torch.Tensor,
    targets: torch.Tensor,
    classes: list[str],
) -> None:
    """One row per test image: reference, true and predicted class, and every class probability."""
    skipped_refs = {ref for ref, _ in skipped}
    refs = [e[0] for e in entries if e[0] not in skipped_refs]
    if len(refs) != len(targets):  # should not happen; keep the file honest rather than misaligned
        refs = [f"#{i}" for i in range(len(targets))]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["image", "label", "prediction", "confidence", *[f"p_{c}" for c in classes]])
    for ref, target, row in zip(refs, targets.tolist(), probs.tolist(), strict=True):
        writer.writerow([ref, classes[target], *prediction_cells(row, classes)])
    with atomic_open(path, "w") as fh:
        fh.write(buffer.getvalue())


def load_run_data(
    run_dir: str | Path, batch_size: int | None = None, augment: str | None = None
) -> SemiCompactDataModule:
    """The data module a finished run trained on (its source, split and training entries).

    Semi-supervised runs store their extra (pseudo-labelled) training entries in
    ``train_entries.json``; they are used in place of the labelled list, so that anything built on
    the run (compression fine-tuning, distillation) sees the same training data.
    """
    import json

    root = Path(run_dir)
    if not (root / "config.json").is_file() or not (root / "split.json").is_file():
        raise ConfigError(f"'{root}' is not a semicompact run folder (no config.json / split.json)")
    config = TrainConfig.load(root / "config.json")
    source = open_source(config.data, unlabelled=config.unlabelled, class_names=config.class_names)
    manifest = SplitManifest.load(root / "split.json")
    extra = root / "train_entries.json"
    if extra.is_file():
        manifest.labelled = [list(e) for e in json.loads(extra.read_text(encoding="utf-8"))]
    return SemiCompactDataModule(
        source,
        manifest,
        image_size=config.image_size,
        batch_size=batch_size or config.batch_size,
        num_workers=config.num_workers,
        augment=augment or config.augment,
        vflip=config.vflip,
        seed=config.seed,
        invariances=config.invariances,
    )
