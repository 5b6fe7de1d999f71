"""semicompact: compact, accurate biomedical image classifiers from few labels.

Python API mirroring the command line::

    from semicompact import TrainConfig, fit, create_model, open_source, make_split
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "TrainConfig": "semicompact.training",
    "fit": "semicompact.training",
    "create_model": "semicompact.models",
    "list_models": "semicompact.models",
    "open_source": "semicompact.data",
    "make_split": "semicompact.data",
    "SplitManifest": "semicompact.data",
    "SemiCompactDataModule": "semicompact.data",
    "load_model": "semicompact.artifacts",
    "save_model": "semicompact.artifacts",
    "evaluate_model": "semicompact.evaluate.evaluate",
    "predict_files": "semicompact.evaluate.predict",
    "classification_metrics": "semicompact.evaluate.metrics",
    "run_demo": "semicompact.demo",
    "run_method": "semicompact.methods",
    "list_methods": "semicompact.methods",
    "plainDistillation": "semicompact.methods.compat",
    "dataDistillation": "semicompact.methods.compat",
    "modelDistillation": "semicompact.methods.compat",
    "modelDataDistillation": "semicompact.methods.compat",
    "FixMatch": "semicompact.methods.compat",
    "MixMatch": "semicompact.methods.compat",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    """Import heavy modules (torch, Lightning) only when their names are used."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'semicompact' has no attribute {name!r}")
