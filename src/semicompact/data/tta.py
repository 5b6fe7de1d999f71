"""The paper's ten deterministic test-time transforms, batched on the device, registered by name.

Data distillation (self-training) predicts each unlabelled image under several transforms and
ensembles the predictions; these are those transforms. Each takes a float batch (B, 3, H, W) in
[0, 1] and returns the same shape, dtype, device and range, with one kornia/torch call per batch
(no per-image loop). Names follow the seed library ("H Flip", "2D-Filter", ...) or the short
canonical names in :data:`TTA_NAMES`; parameters come from "name:key=value,..." strings or dicts.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from semicompact.errors import ConfigError

if TYPE_CHECKING:  # torch/kornia load lazily so CLI help can list the transforms without them
    import torch

    Fn = Callable[[torch.Tensor, Mapping[str, Any]], torch.Tensor]

TTA_NAMES = (
    "hflip",
    "vflip",
    "hvflip",
    "blur",
    "gamma",
    "gaussian_blur",
    "median_blur",
    "bilateral",
    "equalize",
    "filter2d",
)
# The six transforms the paper's data distillation used (section 2.4).
PAPER_TTA = ("hflip", "vflip", "hvflip", "blur", "gaussian_blur", "gamma")
# Quarter turns, beyond the paper's ten: label-keeping only for images declared rot90-invariant
# (``--invariances``, data.invariances), e.g. cells; square images only.
EXTRA_TTA = ("rot90", "rot270")

SHARPEN_KERNEL = [[0.0, -1.0, 0.0], [-1.0, 5.0, -1.0], [0.0, -1.0, 0.0]]
# gamma 0.8 lifts mid-tones by ~0.07 (0.5 -> 0.57): a visible change that keeps the label, in the
# brightening direction that reveals detail in the dark regions common in microscopy/dermoscopy.
DEFAULT_GAMMA = 0.8


@dataclass(frozen=True)
class _Spec:
    """One registered transform: canonical name, seed-library name, summary, defaults and function."""

    name: str
    seed_name: str
    summary: str
    defaults: dict[str, Any]
    fn: Fn
    aliases: tuple[str, ...] = ()


def _key(name: str) -> str:
    """Case/space/underscore/dash/plus-insensitive lookup key: "H+V Flip" -> "hvflip"."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


# --- the transform functions (x is (B, 3, H, W) float in [0, 1]) --------------------------------


def _hflip(x: torch.Tensor, p: Mapping[str, Any]) -> torch.Tensor:
    return x.flip(dims=[3])  # mirror left-right: the width axis


def _vflip(x: torch.Tensor, p: Mapping[str, Any]) -> torch.Tensor:
    return x.flip(dims=[2])  # mirror up-down: the height axis


def _hvflip(x: torch.Tensor, p: Mapping[str, Any]) -> torch.Tensor:
    return x.flip(dims=[2, 3])


def _quarter_turns(x: torch.Tensor, k: int) -> torch.Tensor:
    import torch

    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"a quarter turn needs square images, got {tuple(x.shape[-2:])}")
    return torch.rot90(x, k, dims=[2, 3])


def _rot90(x: torch.Tensor, p: Mapping[str, Any]) -> torch.Tensor:
    return _quarter_turns(x, 1)  # counter-clockwise


def _rot270(x: torch.Tensor, p: Mapping[str, Any]) -> torch.Tensor:
    return _quarter_turns(x, 3)


def _blur(x: torch.Tensor, p: Mapping[str, Any]) -> torch.Tensor:
    from kornia.filters import box_blur

    return box_blur(x, p["kernel_size"], border_type="reflect")


def _gamma(x: torch.Tensor, p: Mapping[str, Any]) -> torch.Tensor:
    from kornia.enhance import adjust_gamma

    return adjust_gamma(x, float(p["gamma"]))


def _gaussian(x: torch.Tensor, p: Mapping[str, Any]) -> torch.Tensor:
    from kornia.filters import gaussian_blur2d

    s = float(p["sigma"])
    return gaussian_blur2d(x, p["kernel_size"], (s, s), border_type="reflect")


def _median(x: torch.Tensor, p: Mapping[str, Any]) -> torch.Tensor:
    from kornia.filters import median_blur

    return median_blur(x, p["kernel_size"], border_type="reflect")


def _bilateral(x: torch.Tensor, p: Mapping[str, Any]) -> torch.Tensor:
    from kornia.filters import bilateral_blur

    s = float(p["sigma_space"])
    return bilateral_blur(x, p["kernel_size"], float(p["sigma_color"]), (s, s), border_type="reflect")


def _equalize(x: torch.Tensor, p: Mapping[str, Any]) -> torch.Tensor:
    from kornia.enhance import equalize

    return equalize(x)


def _filter2d(x: torch.Tensor, p: Mapping[str, Any]) -> torch.Tensor:
    import torch
    from kornia.filters import filter2d

    kernel = torch.as_tensor(p["kernel"], dtype=x.dtype, device=x.device).unsqueeze(0)
    return filter2d(x, kernel, border_type="reflect")


_REGISTRY: tuple[_Spec, ...] = (
    _Spec("hflip", "H Flip", "mirror left-right (reverse the width axis)", {}, _hflip,
          ("horizontalflip", "fliplr", "flipleftright", "horizontal")),
    _Spec("vflip", "V Flip", "mirror up-down (reverse the height axis)", {}, _vflip,
          ("verticalflip", "flipud", "flipupdown", "vertical")),
    _Spec("hvflip", "H+V Flip", "both flips (a 180-degree rotation)", {}, _hvflip,
          ("vhflip", "bothflips", "flipboth", "horizontalverticalflip", "rotate180")),
    _Spec("blur", "Blurring", "box (mean) blur", {"kernel_size": 3}, _blur,
          ("blurring", "boxblur", "meanblur", "averageblur")),
    _Spec("gamma", "Gamma", "gamma correction x -> x**gamma (gamma != 1)", {"gamma": DEFAULT_GAMMA}, _gamma,
          ("gammacorrection", "adjustgamma")),
    _Spec("gaussian_blur", "Gaussian Blur", "Gaussian blur", {"kernel_size": 5, "sigma": 1.0}, _gaussian,
          ("gaussian", "gaussianblurring")),
    _Spec("median_blur", "Median Blur", "median filter (removes salt-and-pepper noise)", {"kernel_size": 3},
          _median, ("median", "medianfilter")),
    _Spec("bilateral", "Bilateral Filter", "edge-preserving bilateral filter",
          {"kernel_size": 5, "sigma_color": 0.3, "sigma_space": 1.5}, _bilateral,
          ("bilateralfilter", "bilateralblur")),
    _Spec("equalize", "Equalize histogram", "per-channel histogram equalisation", {}, _equalize,
          ("equalizehistogram", "equalisehistogram", "histogramequalization", "histogramequalisation",
           "equalizehist", "equalise", "histeq")),
    _Spec("filter2d", "2D-Filter", "2D convolution with a kernel (sharpen by default)",
          {"kernel": SHARPEN_KERNEL}, _filter2d, ("2dfilter", "filter", "convolution")),
    _Spec("rot90", "Rotate 90", "quarter turn counter-clockwise (square images)", {}, _rot90,
          ("rotate90", "rotation90", "quarterturn")),
    _Spec("rot270", "Rotate 270", "quarter turn clockwise (square images)", {}, _rot270,
          ("rotate270", "rotation270", "rotate90cw")),
)  # fmt: skip

_BY_NAME = {s.name: s for s in _REGISTRY}
_LOOKUP: dict[str, str] = {}
for _s in _REGISTRY:
    for _alias in (_s.name, _s.seed_name, *_s.aliases):
        _LOOKUP[_key(_alias)] = _s.name


def canonical_tta_name(name: str) -> str:
    """Map a canonical or seed-library name ("H Flip", "flipLR", "2D-Filter") to its canonical name."""
    found = _LOOKUP.get(_key(str(name)))
    if found is None:
        raise ConfigError(
            f"unknown test-time transform '{name}': choose one of {', '.join(TTA_NAMES + EXTRA_TTA)} "
            "(or a seed-library name such as 'H Flip', 'Gaussian Blur', '2D-Filter')"
        )
    return found


# --- parameter validation -----------------------------------------------------------------------


def _odd_int(name: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise ConfigError(f"test-time transform '{name}': {key} must be an odd integer >= 1, got {value!r}")
    v = int(value)
    if v < 1 or v % 2 == 0:
        raise ConfigError(f"test-time transform '{name}': {key} must be an odd integer >= 1, got {v}")
    return v


def _positive(name: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"test-time transform '{name}': {key} must be a number > 0, got {value!r}")
    return float(value)


def _kernel(name: str, value: Any) -> list[list[float]]:
    msg = (
        f"test-time transform '{name}': kernel must be an odd square matrix of numbers given as nested "
        f"lists, e.g. {SHARPEN_KERNEL}; got {value!r}"
    )
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(msg)
    n = len(value)
    if n % 2 == 0 or any(not isinstance(row, (list, tuple)) or len(row) != n for row in value):
        raise ConfigError(msg)
    try:
        rows = [[float(v) for v in row] for row in value]
    except (TypeError, ValueError):
        raise ConfigError(msg) from None
    if any(isinstance(v, bool) for row in value for v in row):
        raise ConfigError(msg)
    return rows


def _validate(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    spec = _BY_NAME[name]
    unknown = sorted(set(params) - set(spec.defaults))
    if unknown:
        valid = ", ".join(spec.defaults) or "none"
        raise ConfigError(
            f"test-time transform '{name}' has no parameter {', '.join(unknown)}: valid parameters: {valid}"
        )
    out = {**spec.defaults, **params}
    for key, value in out.items():
        if key == "kernel_size":
            out[key] = _odd_int(name, key, value)
        elif key in ("sigma", "sigma_color", "sigma_space"):
            out[key] = _positive(name, key, value)
        elif key == "gamma":
            g = _positive(name, key, value)
            if g == 1.0:
                raise ConfigError(
                    f"test-time transform 'gamma': gamma=1 leaves the image unchanged; use a value such as "
                    f"{DEFAULT_GAMMA} (brighter) or 1.25 (darker)"
                )
            out[key] = g
        elif key == "kernel":
            out[key] = _kernel(name, value)
    return out


# --- public API ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TestTimeTransform:
    """A named, parameterised, deterministic batch transform: ``tt(x)`` on (B, 3, H, W) in [0, 1]."""

    __test__ = False  # not a pytest test class despite the name

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        canonical = canonical_tta_name(self.name)
        object.__setattr__(self, "name", canonical)
        object.__setattr__(self, "params", _validate(canonical, self.params))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or not x.is_floating_point():
            raise ValueError(
                f"{self.name}: expected a float batch (B, C, H, W), got {x.dtype} {tuple(x.shape)}"
            )
        out = _BY_NAME[self.name].fn(x, self.params)
        return out.clamp(0.0, 1.0).to(x.dtype)

    def __str__(self) -> str:
        changed = {k: v for k, v in self.params.items() if v != _BY_NAME[self.name].defaults.get(k)}
        if not changed:
            return self.name
        return self.name + ":" + ",".join(f"{k}={v}" for k, v in changed.items())


def _split_top_level(text: str) -> list[str]:
    """Split "a=1,kernel=[[0,1],[1,0]]" on commas outside brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_tta_spec(spec: str | Mapping[str, Any]) -> TestTimeTransform:
    """One spec -> transform: "gamma", "gamma:gamma=1.5", "H Flip" or {"name": "blur", "kernel_size": 5}."""
    if isinstance(spec, Mapping):
        params = dict(spec)
        if "name" not in params:
            raise ConfigError(f"test-time transform {dict(spec)!r} has no 'name': add e.g. name='hflip'")
        name = params.pop("name")
        return TestTimeTransform(str(name), params)
    if not isinstance(spec, str):
        raise ConfigError(f"test-time transform {spec!r}: give a name string or a dict with 'name'")
    name, _, rest = spec.partition(":")
    params: dict[str, Any] = {}
    for item in _split_top_level(rest):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(
                f"test-time transform '{spec}': parameter '{item}' is not key=value "
                "(write e.g. 'gamma:gamma=1.5' or 'blur:kernel_size=5')"
            )
        params[key.strip()] = _parse_value(value.strip())
    return TestTimeTransform(name.strip(), params)


def build_tta(
    specs: list[str | Mapping[str, Any]] | tuple[str | Mapping[str, Any], ...],
) -> list[TestTimeTransform]:
    """Specs (names, "name:key=value,..." strings or dicts) -> transforms, validated up front."""
    if isinstance(specs, (str, Mapping)):
        specs = [specs]
    return [parse_tta_spec(s) for s in specs]


def describe() -> str:
    """One line per transform (canonical name, seed name, what it does, parameters) for docs/CLI help."""
    lines = []
    for s in _REGISTRY:
        params = ", ".join(f"{k}={v}" for k, v in s.defaults.items()) or "no parameters"
        lines.append(f"{s.name:<14} ({s.seed_name}): {s.summary}; {params}")
    return "\n".join(lines)
