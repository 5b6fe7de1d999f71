"""The contract every compression method follows, and the registry that finds it by name.

A compressor receives a :class:`CompressionContext` (the trained float model, its card, the data it
was trained on, an output folder) and returns a :class:`CompressedModel`: a module that predicts like
the original (float images in [0, 1] -> logits) plus the file(s) it wrote and their exact size.
Adding a method is one class with ``@register_compressor("name")``; no framework code changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from ..errors import ConfigError

_COMPRESSORS: dict[str, type[Compressor]] = {}


@dataclass
class CompressionContext:
    """Everything a compressor may use; ``datamodule`` is None when no data is available."""

    model: nn.Module  # the trained float Classifier (cpu, eval); compressors must not modify it
    card: Any  # semicompact.artifacts.ModelCard
    out_dir: Path
    datamodule: Any = None  # SemiCompactDataModule over the run's training data (labelled + pseudo)
    teacher: nn.Module | None = None  # for knowledge distillation while fine-tuning
    seed: int = 0
    finetune_epochs: int = 0
    finetune_lr: float = 1e-4
    kd_alpha: float = 0.0  # weight of the soft-target loss while fine-tuning (0: labels only)
    kd_temperature: float = 4.0
    finetune_unlabelled: int = 0  # unlabelled images distilled from the teacher too (-1: all, 0: none)

    def require_data(self, method: str, why: str) -> Any:
        if self.datamodule is None:
            raise ConfigError(f"--method {method} needs training images {why}: give --data (or a run folder)")
        return self.datamodule

    def finetune(self, module: nn.Module, epochs: int | None = None, lr: float | None = None) -> nn.Module:
        """Fine-tune ``module`` on the training data (with KD from ``teacher`` when kd_alpha > 0)."""
        from .finetune import finetune

        return finetune(
            module,
            self.require_data("fine-tuning", "to fine-tune on"),
            epochs=self.finetune_epochs if epochs is None else epochs,
            lr=self.finetune_lr if lr is None else lr,
            teacher=self.teacher,
            kd_alpha=self.kd_alpha,
            temperature=self.kd_temperature,
            seed=self.seed,
            unlabelled=self.finetune_unlabelled,
        )


@dataclass
class CompressedModel:
    """The result: a predicting module and the artefact(s) that store it."""

    module: nn.Module
    files: list[Path]
    size_bytes: int  # exact bytes on disk of the artefact(s) a user ships
    notes: dict[str, Any] = field(default_factory=dict)


class Compressor:
    """Base class: options arrive as keyword arguments (from the CLI's ``--option key=value``)."""

    name: ClassVar[str] = ""
    options: ClassVar[dict[str, Any]] = {}  # option -> default, shown by `semicompact compress --help`

    def __init__(self, **options: Any) -> None:
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            valid = ", ".join(sorted(self.options)) or "none"
            raise ConfigError(f"--method {self.name}: unknown option(s) {', '.join(unknown)}; valid: {valid}")
        self.config = {**self.options, **options}

    def compress(self, ctx: CompressionContext) -> CompressedModel:
        raise NotImplementedError


def register_compressor(name: str) -> Callable[[type[Compressor]], type[Compressor]]:
    def add(cls: type[Compressor]) -> type[Compressor]:
        if name in _COMPRESSORS:
            raise ValueError(f"compressor '{name}' registered twice")
        cls.name = name
        _COMPRESSORS[name] = cls
        return cls

    return add


def list_compressors() -> list[str]:
    _import_builtin()
    return sorted(_COMPRESSORS)


def get_compressor(name: str, **options: Any) -> Compressor:
    _import_builtin()
    if name not in _COMPRESSORS:
        raise ConfigError(f"unknown --method '{name}'; available: {', '.join(sorted(_COMPRESSORS))}")
    return _COMPRESSORS[name](**options)


def _import_builtin() -> None:
    """Import the built-in methods so that they register (each lives in its own module)."""
    import importlib
    import pkgutil

    from . import __path__ as pkg_path

    for info in pkgutil.iter_modules(pkg_path):
        if info.name not in ("base", "finetune", "run"):
            importlib.import_module(f"{__package__}.{info.name}")
