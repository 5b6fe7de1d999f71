"""Training configuration: one dataclass, validated once, saved with every run.

Configuration files are YAML or JSON read with ``yaml.safe_load`` / ``json.load``: they hold data
only and can never execute code.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError

MONITORS = ("macro_f1", "accuracy")
SELECTS = ("best", "last")
VALS = ("labelled", "official")


@dataclass
class TrainConfig:
    """Everything a training run depends on; the run directory stores it as ``config.json``."""

    data: str
    out: str = "runs/run"
    model: str = "mobilenetv2_100"
    unlabelled: str | None = None
    split: str | None = None
    n_labelled: int = 75
    test_fraction: float = 0.25
    val_fraction: float = 0.1
    test_seed: int = 0
    pretrained: bool = False
    weights: str | None = None
    small_input: bool = False
    image_size: int = 64
    batch_size: int = 32
    num_workers: int = 0
    head_epochs: int = 2
    epochs: int = 50
    # step budgets (issue 16): when max_steps is set the run takes exactly that many optimiser steps
    # (unless early stopping ends it), whatever the method's notion of an epoch
    max_steps: int | None = None
    head_steps: int | None = None
    val_every: int | None = None
    min_steps: int = 0
    warmup_steps: int | None = None
    early_stopping: bool = True
    select: str = "best"
    val: str = "labelled"
    val_share: float = 0.2
    lr: float = 1e-3
    body_lr_mult: float = 0.1
    lr_find: bool = False
    weight_decay: float = 1e-4
    patience: int = 10
    monitor: str = "macro_f1"
    class_weights: bool = False
    label_smoothing: float = 0.0
    augment: str = "standard"
    vflip: bool = False
    # the flips/turns that keep the label (data/invariances.py); None: hflip (+ vflip), as before
    invariances: list[str] | None = None
    seed: int = 0
    devices: int = 1
    num_nodes: int = 1
    accelerator: str = "auto"
    precision: str = "auto"
    progress: bool = True
    tensorboard: bool = True
    # NHWC convolutions while training (Classifier.set_channels_last): same results, faster
    channels_last: bool = True
    class_names: list[str] | None = field(default=None)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        self._resolve_invariances()

        def positive(name: str, minimum: float = 1) -> None:
            value = getattr(self, name)
            if value < minimum:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least {minimum}, got {value}")

        for name in ("image_size", "batch_size", "devices", "num_nodes", "n_labelled"):
            positive(name)
        for name in ("epochs", "head_epochs", "num_workers", "patience", "min_steps"):
            positive(name, 0)
        for name in ("max_steps", "val_every"):
            if getattr(self, name) is not None:
                positive(name)
        for name in ("head_steps", "warmup_steps"):
            if getattr(self, name) is not None:
                positive(name, 0)
        if self.max_steps is not None and self.head_steps is not None and self.head_steps >= self.max_steps:
            raise ConfigError(
                f"--head-steps {self.head_steps} leaves no step of the --max-steps {self.max_steps} budget "
                "for training all layers; lower --head-steps or raise --max-steps"
            )
        if self.select not in SELECTS:
            raise ConfigError(f"--select must be one of {', '.join(SELECTS)}, got '{self.select}'")
        if self.val not in VALS:
            raise ConfigError(f"--val must be one of {', '.join(VALS)}, got '{self.val}'")
        if not 0.0 < self.val_share < 1.0:
            raise ConfigError(f"--val-share must be between 0 and 1, got {self.val_share}")
        if self.epochs + self.head_epochs < 1:
            raise ConfigError(
                "--epochs and --head-epochs are both 0: nothing to train; set --epochs 1 or more"
            )
        for name in ("test_fraction", "val_fraction"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ConfigError(f"--{name.replace('_', '-')} must be between 0 and 1, got {value}")
        if not 0.0 < self.body_lr_mult <= 10.0:
            raise ConfigError(f"--body-lr-mult must be in (0, 10], got {self.body_lr_mult}")
        if not self.lr > 0:
            raise ConfigError(f"--lr must be positive, got {self.lr}")
        if self.monitor not in MONITORS:
            raise ConfigError(f"--monitor must be one of {', '.join(MONITORS)}, got '{self.monitor}'")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")

    def _resolve_invariances(self) -> None:
        """Canonical names; ``vflip`` and a declared ``vflip`` mean the same (older code reads
        ``vflip``): either one sets the other."""
        from ..data.invariances import allows, parse_invariances

        names = parse_invariances(self.invariances)
        if names is None:
            return
        if self.vflip and "vflip" not in names:
            names = parse_invariances([*names, "vflip"])
        self.invariances = list(names or ())
        self.vflip = allows(self.invariances, "vflip")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown configuration key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(known))}"
            )
        if "data" not in values:
            raise ConfigError("the configuration has no 'data' key: give the dataset folder, .npz or .csv")
        return cls(**values)

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        return cls.from_dict(load_mapping(path))


def load_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON mapping safely (no code execution, ever)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"configuration file '{p}' not found")
    try:
        text = p.read_text(encoding="utf-8")
        values = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as err:
        reason = " ".join(str(err).split())  # YAML errors span lines; the CLI prints one
        raise ConfigError(f"cannot parse configuration file '{p}': {reason}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"configuration file '{p}' must hold a mapping of option: value")
    return values
