"""What a run's numbers depend on besides its recipe: library versions, CPU, threads.

Why: the same recipe and seed give bit-identical runs on one installation, but not across
installations (a MobileNetV2 run on RetinaMNIST gave macro-F1 0.295 in one environment and 0.360 in
another, with the same code), and not across machines even with the same library versions (a
ResNet-18 BloodMNIST run gave 0.772 on one virtual machine and 0.770 on another). The CPU's name
alone ("AMD EPYC") does not tell machines apart, so its family, model, stepping and the instruction
set torch uses are recorded too. Each result records its environment so that a study can check that
the runs it compares come from one.
"""

from __future__ import annotations

import functools
import platform
from importlib import metadata
from typing import Any

PACKAGES = ("torch", "torchvision", "timm", "lightning", "kornia", "torchmetrics", "numpy", "onnxruntime")


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def _cpu() -> str:
    info = _cpuinfo()
    name = info.get("model name") or platform.processor() or platform.machine()
    ids = [f"{k} {info[k]}" for k in ("cpu family", "model", "stepping") if k in info]
    return f"{name} ({', '.join(ids)})" if ids else name


def _cpu_capability() -> str | None:
    """The vector instruction set torch's CPU kernels use (e.g. AVX2, AVX512)."""
    import torch

    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        return None


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@functools.cache
def _static_environment() -> dict[str, Any]:
    """What cannot change while the process runs (looked up once: package metadata is slow)."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu(),
        "cpu_capability": _cpu_capability(),
        "packages": {name: _version(name) for name in PACKAGES},
    }


def environment() -> dict[str, Any]:
    """Python, platform, CPU, torch threads and the versions of the libraries that shape a run.

    The thread count is read at each call: the grid changes it between runs."""
    import torch

    static = _static_environment()
    # a copy: callers store it, and the cached dict must not change under them
    return {**static, "packages": dict(static["packages"]), "torch_threads": torch.get_num_threads()}
