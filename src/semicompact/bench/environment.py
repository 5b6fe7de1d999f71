"""What a run's numbers depend on besides its recipe: library versions, CPU, threads.

Why: the same recipe and seed give bit-identical runs on one installation, but not across
installations (a MobileNetV2 run on RetinaMNIST gave macro-F1 0.295 in one environment and 0.360 in
another, with the same code). Each result records its environment so that a study can check that
the runs it compares come from one.
"""

from __future__ import annotations

import functools
import platform
from importlib import metadata
from typing import Any

PACKAGES = ("torch", "torchvision", "timm", "lightning", "kornia", "torchmetrics", "numpy", "onnxruntime")


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@functools.cache
def environment() -> dict[str, Any]:
    """Python, platform, CPU, torch threads and the versions of the libraries that shape a run."""
    import torch

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu(),
        "torch_threads": torch.get_num_threads(),
        "packages": {name: _version(name) for name in PACKAGES},
    }
