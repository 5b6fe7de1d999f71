"""The seed library's API names, as thin wrappers over :func:`semicompact.methods.run_method`.

``plainDistillation(baseModel, targetModel, path, pathUnlabelled, outputPath, confidence)`` and its
siblings keep their names and positional arguments; model names may use the paper's spellings
("ResNet-50", "EfficientNet"), transforms the seed's ("H Flip", "Gamma"...). Any further keyword
(``epochs=``, ``image_size=``, ``pretrained=``, ``seed=``...) is a :class:`TrainConfig` option, or a
method option (``balance=``, ``labels=``, ``rounds=``...).
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from ..models.registry import resolve_name
from ..training.config import TrainConfig
from ..training.run import RunResult
from .base import method_class, run_method

# Defaults of the seed library that differ from a bare TrainConfig: it always fine-tuned pretrained nets.
_SEED_DEFAULTS: dict[str, Any] = {"pretrained": True}


def _split_kwargs(method: str, kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    train_keys = {f.name for f in fields(TrainConfig)}
    method_keys = set(method_class(method).options)
    train = {k: v for k, v in kwargs.items() if k in train_keys}
    options = {k: v for k, v in kwargs.items() if k in method_keys}
    unknown = set(kwargs) - train_keys - method_keys
    if unknown:
        from ..errors import ConfigError

        raise ConfigError(f"{method}: unknown argument(s) {', '.join(sorted(unknown))}")
    return train, options


def _names(models: str | list[str]) -> list[str]:
    return [resolve_name(m) for m in ([models] if isinstance(models, str) else list(models))]


def _run(
    method: str,
    target_model: str,
    path: str | Path,
    path_unlabelled: str | Path | None,
    output_path: str | Path,
    options: dict[str, Any],
    kwargs: dict[str, Any],
) -> RunResult:
    train_kwargs, method_kwargs = _split_kwargs(method, kwargs)
    values = {**_SEED_DEFAULTS, **train_kwargs}
    config = TrainConfig(
        data=str(path),
        unlabelled=str(path_unlabelled) if path_unlabelled else None,
        out=str(output_path),
        model=resolve_name(target_model),
        **values,
    )
    return run_method(method, config, {**options, **method_kwargs}, resume=bool(kwargs.get("resume")))


def plainDistillation(
    baseModel: str,
    targetModel: str,
    path: str | Path,
    pathUnlabelled: str | Path | None,
    outputPath: str | Path,
    confidence: float = 0.8,
    **kwargs: Any,
) -> RunResult:
    """One teacher ``baseModel`` pseudo-labels ``pathUnlabelled``; ``targetModel`` learns from both."""
    options = {"teachers": _names(baseModel), "confidence": confidence}
    return _run("plain_distillation", targetModel, path, pathUnlabelled, outputPath, options, kwargs)


def dataDistillation(
    baseModel: str,
    targetModel: str,
    transforms: list[str],
    path: str | Path,
    pathUnlabelled: str | Path | None,
    outputPath: str | Path,
    confidence: float = 0.8,
    **kwargs: Any,
) -> RunResult:
    """``baseModel`` x ``transforms`` (seed names accepted) ensembled by mean probability."""
    options = {"teachers": _names(baseModel), "transforms": list(transforms), "confidence": confidence}
    return _run("data_distillation", targetModel, path, pathUnlabelled, outputPath, options, kwargs)


def modelDistillation(
    baseModels: list[str],
    targetModel: str,
    path: str | Path,
    pathUnlabelled: str | Path | None,
    outputPath: str | Path,
    confidence: float = 0.8,
    **kwargs: Any,
) -> RunResult:
    """Several teachers ``baseModels`` ensembled by mean probability."""
    options = {"teachers": _names(baseModels), "confidence": confidence}
    return _run("model_distillation", targetModel, path, pathUnlabelled, outputPath, options, kwargs)


def modelDataDistillation(
    baseModels: list[str],
    targetModel: str,
    transforms: list[str],
    path: str | Path,
    pathUnlabelled: str | Path | None,
    outputPath: str | Path,
    confidence: float = 0.8,
    **kwargs: Any,
) -> RunResult:
    """Teachers x transforms."""
    options = {"teachers": _names(baseModels), "transforms": list(transforms), "confidence": confidence}
    return _run("model_data_distillation", targetModel, path, pathUnlabelled, outputPath, options, kwargs)


def FixMatch(
    targetModel: str,
    path: str | Path,
    pathUnlabelled: str | Path | None,
    outputPath: str | Path,
    **kwargs: Any,
) -> RunResult:
    """FixMatch with the published defaults (threshold 0.95, mu 7, lambda_u 1, EMA)."""
    return _run("fixmatch", targetModel, path, pathUnlabelled, outputPath, {}, kwargs)


def MixMatch(
    targetModel: str,
    path: str | Path,
    pathUnlabelled: str | Path | None,
    outputPath: str | Path,
    **kwargs: Any,
) -> RunResult:
    """MixMatch with the published defaults (K 2, T 0.5, alpha 0.75, ramped lambda_u 75, EMA)."""
    return _run("mixmatch", targetModel, path, pathUnlabelled, outputPath, {}, kwargs)
