"""Training methods: one registry, one short class per method, one entry point (:func:`run_method`).

A method turns a :class:`~semicompact.training.TrainConfig` (data, model, seed, epochs...) plus its
own options into a finished run folder with ``metrics.json``, exactly like ``semicompact train``.
Adding a method is one class with ``@register_method("name")``; the CLI, the benchmark grid and the
report pick it up without changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from ..errors import ConfigError
from ..training.config import TrainConfig
from ..training.run import RunResult

_METHODS: dict[str, type[Method]] = {}


class Method:
    """Base class; ``options`` maps each option to its default (and so documents it)."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    options: ClassVar[dict[str, Any]] = {}
    #: learns from unlabelled images: the run stops before any training when the split has none
    uses_unlabelled: ClassVar[bool] = False

    def __init__(self, **options: Any) -> None:
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            valid = ", ".join(sorted(self.options)) or "none"
            raise ConfigError(f"--method {self.name}: unknown option(s) {', '.join(unknown)}; valid: {valid}")
        self.config: dict[str, Any] = {**self.options, **options}

    def needs_unlabelled(self) -> bool:
        """Whether this configuration needs unlabelled images (checked before teachers train)."""
        return self.uses_unlabelled

    def no_unlabelled_hint(self) -> str:
        """How to run without unlabelled images, appended to the error when the split has none."""
        return "or use --method supervised"

    def run(self, train: TrainConfig, resume: bool = False) -> RunResult:
        raise NotImplementedError


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    def add(cls: type[Method]) -> type[Method]:
        if name in _METHODS:
            raise ValueError(f"method '{name}' registered twice")
        cls.name = name
        _METHODS[name] = cls
        return cls

    return add


def _import_builtin() -> None:
    import importlib
    import pkgutil

    from . import __path__ as pkg_path

    for info in pkgutil.iter_modules(pkg_path):
        if not info.name.startswith("_") and info.name not in ("base", "compat"):
            importlib.import_module(f"{__package__}.{info.name}")


def list_methods() -> list[str]:
    _import_builtin()
    return sorted(_METHODS)


def method_class(name: str) -> type[Method]:
    _import_builtin()
    if name not in _METHODS:
        raise ConfigError(f"unknown --method '{name}'; available: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]


def get_method(name: str, **options: Any) -> Method:
    return method_class(name)(**options)


def run_method(
    name: str, train: TrainConfig, options: dict[str, Any] | None = None, resume: bool = False
) -> RunResult:
    """Run method ``name`` with ``options``; the run folder is ``train.out``."""
    return get_method(name, **(options or {})).run(train, resume=resume)
