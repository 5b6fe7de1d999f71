"""The one factory: :func:`create_model` returns a :class:`Classifier` for any registered or timm name.

A :class:`Classifier` takes float images in [0, 1] of shape ``(B, 3, H, W)`` and returns logits; the
normalisation (the model's own mean/std) is inside, in the registered buffers ``mean`` and ``std``,
so exported models take the same input. ``net`` is the underlying network with the new head.

Small-input variants (``small_input=True``, for 28-64 px images) remove the early downsampling:
ResNets keep their pretrained 7x7 ``conv1`` with stride 1 (no new weights) and lose the stem max-pool;
the timm EfficientNet family (MobileNetV2, MnasNet, MixNet, FBNet, EfficientNet) gets ``conv_stem``
stride 1; SqueezeNet its first conv stride 1; ShuffleNetV2 ``conv1`` stride 1 and no max-pool; other
timm models their first convolution stride 1.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from semicompact.errors import ConfigError, ModelError
from semicompact.models import weights as _weights
from semicompact.models.registry import IMAGENET_MEAN, IMAGENET_STD, ModelSpec, get_spec, registered_models

_REDUCTION_PROBE = 256


class Classifier(nn.Module):
    """A network with its normalisation inside: ``forward(x in [0, 1]) -> logits``."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        net: nn.Module,
        *,
        name: str,
        family: str,
        num_classes: int,
        head_name: str,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        small_input: bool = False,
        source: str = "timm",
    ) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.name = name
        self.family = family
        self.num_classes = num_classes
        self.head_name = head_name
        self.small_input = small_input
        self.source = source
        self._reduction: int | None = None
        self.channels_last = False

    def set_channels_last(self, on: bool = True) -> Classifier:
        """Run the convolutions in NHWC (channels-last) layout: the same arithmetic, in a memory
        layout for which PyTorch's CPU kernels (oneDNN) and GPU tensor cores are faster.

        Measured on this project's CPU (``bench/channels_last.py``): about 2x faster training
        steps for MobileNetV2 and EfficientNet-Lite0. The weights are saved contiguous
        (``save_model``), so files do not depend on it; exports see the same logical shapes.
        """
        self.channels_last = on
        return self.to(memory_format=torch.channels_last if on else torch.contiguous_format)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std`` for float images in [0, 1]."""
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    # -- head / body -------------------------------------------------------------------------
    @property
    def head(self) -> nn.Module:
        """The classification head module (inside ``net``, not registered twice)."""
        return self.net.get_submodule(self.head_name)

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters())

    def body_parameters(self) -> list[nn.Parameter]:
        head_ids = {id(p) for p in self.head.parameters()}
        return [p for p in self.net.parameters() if id(p) not in head_ids]

    def named_head_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        prefix = f"net.{self.head_name}."
        return ((n, p) for n, p in self.named_parameters() if n.startswith(prefix))

    def freeze_body(self) -> None:
        """Only the head trains (stage 1 of the paper's transfer learning). BatchNorm layers keep their
        mode; the training engine decides whether frozen BN statistics update."""
        for p in self.body_parameters():
            p.requires_grad_(False)
        for p in self.head_parameters():
            p.requires_grad_(True)

    def unfreeze(self) -> None:
        """All layers train (stage 2)."""
        for p in self.parameters():
            p.requires_grad_(True)

    # -- geometry ----------------------------------------------------------------------------
    def reduction(self) -> int:
        """Total spatial downsampling of the feature map before global pooling (e.g. 32)."""
        if self._reduction is None:
            self._reduction = _measure_reduction(self.net)
        return self._reduction

    @property
    def min_input_size(self) -> int:
        """The smallest square image size (px) the network accepts."""
        return min_input_size(self)

    def extra_repr(self) -> str:
        return (
            f"name={self.name}, family={self.family}, num_classes={self.num_classes}, "
            f"small_input={self.small_input}"
        )


def _param_device_dtype(net: nn.Module) -> tuple[torch.device, torch.dtype]:
    p = next(net.parameters(), None)
    if p is None:
        return torch.device("cpu"), torch.float32
    return p.device, p.dtype


def _forward_probe(net: nn.Module, size: int, hook: bool = False) -> list[int] | None:
    """Run ``net`` in eval/no-grad mode on zeros of ``size`` px; the heights of the leaf 4-D outputs
    (when ``hook``) or None on a too-small-input failure."""
    device, dtype = _param_device_dtype(net)
    heights: list[int] = []
    handles = []
    if hook:

        def record(_m: nn.Module, _i: object, out: object) -> None:
            if isinstance(out, torch.Tensor) and out.dim() == 4:
                heights.append(int(out.shape[-2]))

        handles = [m.register_forward_hook(record) for m in net.modules() if next(m.children(), None) is None]
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            net(torch.zeros(1, 3, size, size, device=device, dtype=dtype))
    except (RuntimeError, ValueError, IndexError, ZeroDivisionError):
        return None
    finally:
        for h in handles:
            h.remove()
        net.train(was_training)
    return heights


def _measure_reduction(net: nn.Module, size: int = _REDUCTION_PROBE) -> int:
    heights = _forward_probe(net, size, hook=True)
    spatial = [h for h in heights or [] if h > 1]
    if not spatial:
        return 1
    return int(2 ** round(math.log2(size / min(spatial))))


# ------------------------------------------------------------------------------- input size

_MIN_SIZE_CACHE: dict[tuple[str, bool], int] = {}
_MAX_PROBE = 1024


def min_input_size(model: Classifier) -> int:
    """Smallest square input size for ``model`` (cached per (name, small_input))."""
    key = (model.name, bool(model.small_input))
    if key not in _MIN_SIZE_CACHE:
        net = model.net
        # exponential search up, then binary search down (forwards at tiny sizes are cheap)
        hi = 1
        while _forward_probe(net, hi) is None:
            hi *= 2
            if hi > _MAX_PROBE:
                raise ModelError(
                    f"{model.name} fails on every input size up to {_MAX_PROBE} px; check the model."
                )
        lo = hi // 2 + 1 if hi > 1 else 1
        while lo < hi:
            mid = (lo + hi) // 2
            if _forward_probe(net, mid) is None:
                lo = mid + 1
            else:
                hi = mid
        _MIN_SIZE_CACHE[key] = hi
    return _MIN_SIZE_CACHE[key]


def check_input_size(
    model: Classifier | str, image_size: int | tuple[int, int], small_input: bool = False
) -> int:
    """Raise :class:`ModelError` when ``image_size`` is too small for ``model``; returns the minimum.

    ``model`` is a :class:`Classifier` or a model name (then ``small_input`` selects the variant).
    """
    if isinstance(model, str):
        spec = get_spec(model)
        key = (spec.name, bool(small_input))
        if key not in _MIN_SIZE_CACHE:
            model = create_model(spec.name, num_classes=2, small_input=small_input)
        else:
            return _check(spec.name, bool(small_input), _MIN_SIZE_CACHE[key], image_size)
    need = min_input_size(model)
    return _check(model.name, bool(model.small_input), need, image_size)


def _check(name: str, small: bool, need: int, image_size: int | tuple[int, int]) -> int:
    size = min(image_size) if isinstance(image_size, (tuple, list)) else int(image_size)
    if size < need:
        hint = "" if small else ", or --small-input"
        raise ModelError(
            f"image size {size} is too small for {name}: it needs at least {need} px; "
            f"use --image-size {need} or more{hint}."
        )
    return need


# ---------------------------------------------------------------------------------- factory


def _head_name(spec: ModelSpec, net: nn.Module) -> str:
    if spec.head:
        return spec.head
    names = []
    cfg = getattr(net, "pretrained_cfg", None) or {}
    cls = cfg.get("classifier")
    if isinstance(cls, str):
        names.append(cls)
    getter = getattr(net, "get_classifier", None)
    if callable(getter):
        head = getter()
        if isinstance(head, nn.Module):
            names += [n for n, m in net.named_modules() if m is head and n]
    for n in names:
        try:
            mod = net.get_submodule(n)
        except AttributeError:
            continue
        if next(mod.parameters(), None) is not None:
            return n
    raise ModelError(f"cannot find the classification head of {spec.name}; register it with head=...")


def _mean_std(spec: ModelSpec, net: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if spec.mean is not None and spec.std is not None:
        return spec.mean, spec.std
    cfg = getattr(net, "pretrained_cfg", None) or {}
    mean, std = cfg.get("mean"), cfg.get("std")
    if mean is not None and std is not None and len(mean) == 3 and len(std) == 3:
        return tuple(float(v) for v in mean), tuple(float(v) for v in std)
    return IMAGENET_MEAN, IMAGENET_STD


def _init_head(head: nn.Module) -> None:
    """Small random head: logits start near zero, so the first steps do not wreck a pretrained body.

    (timm's EfficientNet-family init draws a 4-class head from U(-0.5, 0.5): initial losses near 10.)
    """
    for module in head.modules():
        if isinstance(module, nn.Linear | nn.Conv2d):
            nn.init.normal_(module.weight, std=0.01)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def create_model(
    name: str,
    num_classes: int,
    pretrained: bool = False,
    weights: str | os.PathLike[str] | None = None,
    small_input: bool = False,
    drop_rate: float = 0.0,
) -> Classifier:
    """Build ``name`` with a ``num_classes`` head.

    ``weights`` (a local file) wins over ``pretrained`` (the hub, or its local cache; offline this fails
    fast with a :class:`ModelError`). ``small_input`` selects the stem for 28-64 px images.
    """
    spec = get_spec(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive integer for {spec.name}, got {num_classes!r}.")
    if not 0.0 <= float(drop_rate) < 1.0:
        raise ConfigError(f"drop_rate must be in [0, 1) for {spec.name}, got {drop_rate!r}; use e.g. 0.2.")
    drop_rate = float(drop_rate)
    if weights is None and pretrained:
        weights = _weights.packaged_weights(spec.name)  # shipped inside a pip package: no download
    if weights is None and pretrained:
        net = _weights.build_pretrained(spec, num_classes, drop_rate)
    else:
        net = spec.builder(num_classes=num_classes, drop_rate=drop_rate)
    mean, std = _mean_std(spec, net)
    model = Classifier(
        net,
        name=spec.name,
        family=spec.family,
        num_classes=num_classes,
        head_name=_head_name(spec, net),
        mean=mean,
        std=std,
        small_input=bool(small_input),
        source=spec.source,
    )
    if not pretrained or weights is not None:
        _init_head(model.head)
    if weights is not None:
        _weights.load_weights(model, weights)
    if small_input:
        if spec.small_input is None:
            raise ModelError(
                f"{spec.name} has no small-input variant; drop --small-input or pick another model."
            )
        spec.small_input(net)
    return model


# ----------------------------------------------------------------------------------- listing


@dataclass(frozen=True)
class ModelInfo:
    """One row of :func:`list_models`; ``params`` in millions for a 1000-class head."""

    name: str
    family: str
    params: float
    source: str
    description: str
    aliases: tuple[str, ...] = ()


_PARAMS_CACHE: dict[str, float] = {}


def _count_params(spec: ModelSpec) -> float:
    if spec.name not in _PARAMS_CACHE:
        try:
            with torch.device("meta"):
                net = spec.builder(num_classes=1000, drop_rate=0.0)
        except Exception:
            net = spec.builder(num_classes=1000, drop_rate=0.0)
        _PARAMS_CACHE[spec.name] = round(sum(p.numel() for p in net.parameters()) / 1e6, 2)
    return _PARAMS_CACHE[spec.name]


def list_models(family: str | None = None) -> list[ModelInfo]:
    """The registered models (optionally of one family), with parameter counts in millions."""
    rows = []
    for spec in registered_models().values():
        if family is not None and spec.family != family:
            continue
        rows.append(
            ModelInfo(
                name=spec.name,
                family=spec.family,
                params=_count_params(spec),
                source=spec.source,
                description=spec.description,
                aliases=spec.aliases,
            )
        )
    return rows
