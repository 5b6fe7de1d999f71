"""Teachers: trained once on the labelled images, cached by their configuration, reused by every method.

A benchmark runs plain, data, model and model+data distillation and KD on the same dataset and seed;
they all need the same teachers, so a teacher's run folder is named by a hash of everything that
determines it (data, split, network, weights, size, epochs, seed). A file lock makes two processes
(e.g. two shards of a grid) wait for each other instead of training the same teacher twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console

from ..artifacts import load_model
from ..errors import ConfigError
from ..models import Classifier
from ..models.weights import PACKAGED_WEIGHTS, PretrainedUnavailable
from ..training.config import TrainConfig
from ..training.run import fit

console = Console(stderr=True)

#: settings that do not change what a teacher learns (channels_last: memory layout, float rounding
#: only), so teachers cached before or with either value are shared
_NOT_IN_KEY = ("out", "progress", "tensorboard", "split", "channels_last")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def teacher_config(student: TrainConfig, name: str, split: Path, **overrides: Any) -> TrainConfig:
    """The student's data, split and seed with the teacher's network and training options."""
    values = {k: v for k, v in overrides.items() if v is not None}
    weights = values.pop("weights", None)  # the student's weights never pass to another network
    config = replace(student, model=name, split=str(split), weights=weights, **values)
    config.progress, config.tensorboard = False, False
    return config


def teacher_key(config: TrainConfig, split_sha: str) -> str:
    values = {k: v for k, v in config.to_dict().items() if k not in _NOT_IN_KEY}
    if values.get("invariances") is None:  # undeclared: the key of the teachers cached before it existed
        values.pop("invariances", None)
    values["split_sha"] = split_sha
    digest = hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{config.model}-{digest}"


def reusable(run_dir: Path, name: str) -> bool:
    """A finished teacher with its weights. A results folder cloned or copied without its weights
    (git ignores them; only the teachers' records are committed) keeps ``metrics.json`` but cannot
    teach: its folder is cleared and the teacher trained again (same key, so the same settings)."""
    if not (run_dir / "metrics.json").is_file():
        return False
    if (run_dir / "best.safetensors").is_file():
        console.print(f"teacher {name}: reusing {run_dir}")
        return True
    console.print(f"teacher {name}: {run_dir} has its record but not its weights; training it again")
    shutil.rmtree(run_dir)
    return False


def train_teacher(config: TrainConfig, cache: Path) -> Path:
    """Train (or reuse, or resume) one teacher; returns its run folder."""
    split_sha = hashlib.sha256(Path(config.split or "").read_bytes()).hexdigest() if config.split else ""
    run_dir = cache / teacher_key(config, split_sha)
    with _locked(cache / f".{run_dir.name}.lock"):
        if reusable(run_dir, config.model):
            return run_dir
        resume = (run_dir / "config.json").is_file()
        console.print(f"teacher {config.model}: {'resuming' if resume else 'training'} in {run_dir}")
        fit(replace(config, out=str(run_dir)), resume=resume)
    return run_dir


def train_teachers(
    student: TrainConfig,
    names: list[str],
    split: Path,
    cache: Path,
    weights: list[str | None] | None = None,
    **overrides: Any,
) -> list[Path]:
    if not names:
        raise ConfigError("no teacher given: set the method option teachers=NAME[,NAME...]")
    weights = list(weights or [None] * len(names))
    if len(weights) != len(names):
        raise ConfigError(
            f"teacher_weights lists {len(weights)} file(s) for {len(names)} teacher(s); give one per teacher"
        )
    dirs = []
    for name, weight in zip(names, weights, strict=True):
        extra = dict(overrides)
        if weight:
            extra.update(weights=weight, pretrained=False)
        config = teacher_config(student, name, split, **extra)
        if weight:  # teacher_config clears weights; a given teacher file wins
            config.weights = weight
        try:
            dirs.append(train_teacher(config, cache))
        except PretrainedUnavailable as error:
            raise no_teacher_weights(name, error) from None
    return dirs


def no_teacher_weights(name: str, error: Exception) -> ConfigError:
    """The teacher's own options, not the student's --weights / --no-pretrained, in the fix."""
    reason = str(error).split(";")[0]
    *first, last = sorted(PACKAGED_WEIGHTS)
    packaged = f"{', '.join(first)} or {last}" if first else last
    return ConfigError(
        f"teacher {name}: {reason}; give the teacher a local file with --option teacher_weights=PATH "
        "(one .pth/.safetensors per teacher, in the order of `teachers`), train it from scratch with "
        "--option teacher_pretrained=false, or pick a teacher whose ImageNet weights come with the "
        f"install ({packaged}, e.g. --option teachers=tf_efficientnet_lite0)"
    )


def load_teachers(dirs: list[Path]) -> list[tuple[Classifier, int]]:
    """(model in eval mode, channels-last for faster inference, its input size) for each teacher run."""
    out = []
    for d in dirs:
        model, card = load_model(d)
        out.append((model.set_channels_last(), card.image_size))
    return out


def runs_cost(dirs: list[Path]) -> dict[str, Any]:
    """What training the given runs cost (their ``metrics.json``): the price a student pays for its
    teachers, or a warm start for the model it begins from. Runs from before costs were recorded
    count as unknown (``None``), never as free."""
    steps: int | None = 0
    wall: float | None = 0.0
    images: int | None = 0
    for d in dirs:
        try:
            cost = json.loads((Path(d) / "metrics.json").read_text(encoding="utf-8")).get("cost") or {}
        except (OSError, ValueError):
            cost = {}
        if "optimizer_steps" not in cost:
            steps = wall = images = None
            break
        # a teacher that had teachers itself (a later self-training round) brings their steps,
        # labelled images and wall time too
        steps = int(steps) + int(cost.get("total_steps", cost["optimizer_steps"]))
        images = int(images) + int(cost.get("labelled_images_seen", 0))
        images += int(cost.get("teacher_labelled_images_seen") or 0)
        own, nested = cost.get("wall_time_s"), cost.get("teacher_wall_time_s", 0.0)
        wall = None if wall is None or own is None or nested is None else wall + float(own) + float(nested)
    return {
        "teacher_runs": len(dirs),
        "teacher_steps": steps,
        "teacher_labelled_images_seen": images,
        "teacher_wall_time_s": wall,
    }
