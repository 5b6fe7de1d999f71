"""Which int8 types are fast *and* accurate on which CPU (no torch import here).

onnxruntime's int8 kernels (MLAS) differ by CPU, and the quantized file's types decide which kernel
runs:

- x86 with VNNI (AVX-512 VNNI or AVX-VNNI) or AMX multiplies uint8 activations by int8 weights
  (``u8s8``) straight into int32: fast and exact. uint8 weights (``u8u8``) take a 16-bit path there
  that measured 0.8x onnxruntime fp32 for ResNet-18 at 224 px, against 0.37x for ``u8s8``; int8
  activations (``s8s8``) are not fused on x86 (0.9x).
- x86 with AVX2 (or AVX-512) but no VNNI runs ``u8s8`` with ``vpmaddubsw``, which adds two uint8 x
  int8 products in int16 and saturates at 32767 (2 x 255 x 127 = 64770 does not fit). 7-bit weights
  (onnxruntime's ``reduce_range``; |w| <= 64, 2 x 255 x 64 = 32640) keep that kernel without
  saturation at one bit less weight precision; ``u8u8`` is exact but slower.
- ARM64 with the dot-product extension has ``sdot`` (s8 x s8) and ``udot`` (u8 x u8) kernels.

Types are not the whole story for MobileNet-style networks: their first convolutions (few weights
per channel, on the full- and half-resolution maps) lose the most in int8. ``int8-early-float``
keeps the convolutions that read the input at more than a quarter of its resolution in float and
calibrates the ranges with a moving average of the batch minima and maxima. Measured on a trained
BloodMNIST MobileNetV2 (64 px, 3421 test images): top-1 agreement with fp32 92.7 % (plain ``int8``)
-> 97.2 %, at the same speed within noise (224 px, 1 thread: 0.52x vs 0.50x onnxruntime fp32).

Each target lists its candidate schemes, fastest expected first; ``export`` measures them on the
calibration images when the target is the CPU that runs the command and keeps the fastest one
whose agreement passes the gate (``export/int8.py``).
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError


@dataclass(frozen=True)
class Scheme:
    """One int8 type choice for onnxruntime ``quantize_static``."""

    name: str
    activations: str  # "uint8" | "int8"
    weights: str  # "uint8" | "int8"
    reduce_range: bool
    description: str
    early_float: bool = False  # convolutions reading the input above 1/4 resolution stay float
    moving_average: bool = False  # calibrate ranges on the moving average of batch min/max


# Keys are the values of ``--int8-weights`` (kept from before targets existed) plus ``s8s8``.
SCHEMES: dict[str, Scheme] = {
    "uint8": Scheme("uint8", "uint8", "uint8", False, "u8u8: uint8 weights; exact on every CPU, slow on x86"),
    "int8": Scheme(
        "int8", "uint8", "int8", False, "u8s8: int8 weights; fast and exact with VNNI/AMX, saturates on AVX2"
    ),
    "int8-7bit": Scheme(
        "int8-7bit", "uint8", "int8", True, "u8s8, 7-bit weights (reduce_range): fast on AVX2, no saturation"
    ),
    "s8s8": Scheme("s8s8", "int8", "int8", False, "s8s8: int8 activations too; sdot kernels on ARM64"),
    "int8-early-float": Scheme(
        "int8-early-float",
        "uint8",
        "int8",
        False,
        "u8s8 with the convolutions above 1/4 input resolution in float and moving-average ranges: "
        "keeps MobileNet-style networks' predictions at about the same speed",
        early_float=True,
        moving_average=True,
    ),
    "int8-7bit-early-float": Scheme(
        "int8-7bit-early-float",
        "uint8",
        "int8",
        True,
        "u8s8 with 7-bit weights, the convolutions above 1/4 input resolution in float and "
        "moving-average ranges: int8-early-float for CPUs without VNNI",
        early_float=True,
        moving_average=True,
    ),
    "uint8-early-float": Scheme(
        "uint8-early-float",
        "uint8",
        "uint8",
        False,
        "u8u8 with the convolutions above 1/4 input resolution in float and moving-average ranges: "
        "exact on every CPU with full 8-bit weights",
        early_float=True,
        moving_average=True,
    ),
}


@dataclass(frozen=True)
class Target:
    name: str
    candidates: tuple[str, ...]  # scheme names, the expected fastest first
    why: str


TARGETS: dict[str, Target] = {
    "x86-amx": Target(
        "x86-amx",
        ("int8", "int8-early-float", "s8s8"),
        "AMX/VNNI multiply uint8 x int8 into int32: full 8-bit weights, no saturation, fastest kernels",
    ),
    "x86-vnni": Target(
        "x86-vnni",
        ("int8", "int8-early-float", "s8s8"),
        "VNNI multiplies uint8 x int8 into int32: full 8-bit weights, no saturation, fastest kernels",
    ),
    "x86-avx2": Target(
        "x86-avx2",
        ("int8-7bit", "int8-7bit-early-float", "uint8", "uint8-early-float"),
        "without VNNI, uint8 x int8 pairs add up in int16 and can saturate: 7-bit weights keep the fast "
        "kernel exact (2 x 255 x 64 <= 32767), with the early convolutions in float where the "
        "network needs it; uint8 weights are exact but slower",
    ),
    "arm64-dotprod": Target(
        "arm64-dotprod",
        ("s8s8", "int8", "uint8"),
        "ARM64 dot-product instructions (sdot/udot) accumulate in int32: no saturation with any type",
    ),
    "arm64": Target(
        "arm64",
        ("int8", "uint8"),
        "ARM64 NEON without dot product widens to 16 bits before accumulating: no saturation",
    ),
    "generic": Target(
        "generic",
        ("uint8", "uint8-early-float"),
        "unknown CPU: uint8 weights cannot saturate on any onnxruntime kernel (may be slow on x86)",
    ),
}
TARGET_CHOICES = ("auto", *TARGETS)


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU feature flags of this machine (x86 ``flags`` or ARM ``Features`` in /proc/cpuinfo)."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return flags


def cpuid_features() -> dict[str, bool] | None:
    """x86 features as the CPUID instruction reports them (torch's cpuinfo library), or None.

    onnxruntime picks its kernels from CPUID, and /proc/cpuinfo can disagree with it: an emulator
    (``qemu-x86_64 -cpu Haswell``) or a hypervisor that masks features passes the host's flags
    through. Private torch helpers, so any failure means "unknown" and /proc/cpuinfo decides alone.
    """
    try:
        import torch.cpu as tcpu

        return {
            "avx2": bool(tcpu._is_avx2_supported()),
            "avx512_vnni": bool(tcpu._is_vnni_supported()),
            "amx": bool(tcpu._is_amx_tile_supported()),
        }
    except Exception:  # optional refinement: the /proc flags still decide
        return None


_CPUID_VETO = {  # feature CPUID denies -> /proc/cpuinfo flags that cannot be used without it
    "avx2": {"avx2", "avx512_vnni", "avx_vnni", "amx_int8", "amx_tile"},
    "avx512_vnni": {"avx512_vnni"},
    "amx": {"amx_int8", "amx_tile"},
}


def detect_target(
    cpuinfo: str | None = None, machine: str | None = None, cpuid: dict[str, bool] | None = None
) -> tuple[str, str]:
    """(target name, the flags that decided it) for the CPU that runs this process.

    ``cpuid`` (default: this CPU's, when ``cpuinfo`` is not given) removes the /proc/cpuinfo flags
    that the CPUID instruction denies, so that the target is the one onnxruntime's kernels see.
    """
    machine = (machine or platform.machine()).lower()
    flags = cpu_flags(cpuinfo)
    if machine in ("x86_64", "amd64", "i686", "x86"):
        if cpuid is None and cpuinfo is None:
            cpuid = cpuid_features()
        denied = [name for name, ok in (cpuid or {}).items() if not ok and flags & _CPUID_VETO[name]]
        for name in denied:
            flags -= _CPUID_VETO[name]
        note = f"; CPUID denies {','.join(denied)} that /proc/cpuinfo lists" if denied else ""
        return _x86_target(flags, note)
    if machine in ("aarch64", "arm64"):
        if "asimddp" in flags or (not flags and machine == "arm64"):  # macOS arm64: every M-series has it
            return "arm64-dotprod", "asimddp" if flags else "Apple arm64"
        return "arm64", "no asimddp"
    return "generic", f"machine {machine}"


def _x86_target(flags: set[str], note: str) -> tuple[str, str]:
    if "amx_int8" in flags:
        return "x86-amx", "amx_int8" + note
    vnni = sorted(flags & {"avx512_vnni", "avx_vnni"})
    if vnni:
        return "x86-vnni", ",".join(vnni) + note
    if "avx2" in flags:
        return "x86-avx2", "avx2 without avx512_vnni/avx_vnni" + note
    return "generic", "x86 without avx2" + note


def resolve_target(target: str, option: str = "--target") -> tuple[Target, bool, str]:
    """(target, whether it is this CPU, how it was decided); ``auto`` reads this CPU."""
    host, flags = detect_target()
    if target == "auto":
        return TARGETS[host], True, f"auto: this CPU is {host} ({flags})"
    if target not in TARGETS:
        given = f"{option}{target}" if option.endswith("=") else f"{option} {target}"
        raise ConfigError(f"{given}: use one of {', '.join(TARGET_CHOICES)}")
    same = target == host
    how = f"given; this CPU is {host}" + ("" if same else ", so the candidates are not timed here")
    return TARGETS[target], same, how


def check_scheme(value: str, given_as: str | None = None) -> str:
    """``value`` if it is ``auto`` or a known scheme, else one line naming the option and the choices."""
    if value != "auto" and value not in SCHEMES:
        raise ConfigError(f"{given_as or f'--int8-weights {value}'}: use one of auto, {', '.join(SCHEMES)}")
    return value
