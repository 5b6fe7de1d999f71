"""The one model registry: every network of the seed paper under a clear, timm-style name.

A :class:`ModelSpec` says how to build a network (randomly initialised, ``num_classes`` outputs), where
its pretrained weights come from, which module is its classification head and how to adapt its stem
to small (28-64 px) images. :func:`resolve_name` maps what a user types ("ResNet-18", "MobileNet",
"efficientnet") to a spec; any other name that timm knows passes through with family ``"timm"``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from semicompact.errors import ConfigError, ModelError

FAMILIES = ("manual", "automatic", "quantized", "standard", "timm")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Builder = Callable[..., nn.Module]


@dataclass
class ModelSpec:
    """How to build one registered network.

    ``builder(num_classes=..., drop_rate=..., pretrained=False, **kwargs)`` returns the bare network
    (``pretrained=True`` is only passed to timm builders, see :mod:`semicompact.models.weights`).
    ``head`` is the dotted name of the classification head module inside that network (None: ask
    timm's ``get_classifier()``). ``small_input`` adapts the stem in place for 28-64 px images.
    ``default_pretrained_source`` is ``"timm:<name>"`` or ``"torchvision:<WeightsEnum.MEMBER>"``.
    """

    name: str
    family: str
    builder: Builder
    description: str
    aliases: tuple[str, ...] = ()
    default_pretrained_source: str | None = None
    source: str = "timm"
    head: str | None = None
    small_input: Callable[[nn.Module], None] | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, ModelSpec] = {}
_ALIASES: dict[str, str] = {}  # normalised alias or name -> registered name


def _norm(name: str) -> str:
    return re.sub(r"[-_\s]", "", name.strip().lower())


def register_model(
    name: str,
    family: str,
    builder: Builder,
    description: str,
    aliases: tuple[str, ...] | list[str] = (),
    default_pretrained_source: str | None = None,
    *,
    source: str = "timm",
    head: str | None = None,
    small_input: Callable[[nn.Module], None] | None = None,
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
) -> ModelSpec:
    """Register a network under ``name`` (lower case) and its ``aliases``; returns the spec."""
    if family not in FAMILIES:
        raise ConfigError(
            f"cannot register model '{name}' with family '{family}'; use one of {', '.join(FAMILIES)}."
        )
    spec = ModelSpec(
        name=name,
        family=family,
        builder=builder,
        description=description,
        aliases=tuple(aliases),
        default_pretrained_source=default_pretrained_source,
        source=source,
        head=head,
        small_input=small_input,
        mean=mean,
        std=std,
    )
    _REGISTRY[name] = spec
    _ALIASES[_norm(name)] = name
    for alias in spec.aliases:
        _ALIASES[_norm(alias)] = name
    return spec


def registered_models() -> dict[str, ModelSpec]:
    """The registered specs by name (registration order)."""
    return dict(_REGISTRY)


def resolve_name(name: str) -> str:
    """The canonical model name for ``name`` (registered name, alias, or a timm model name)."""
    return get_spec(name).name


def get_spec(name: str) -> ModelSpec:
    """The spec for ``name``; timm names that are not registered get a generic spec (family "timm")."""
    if not isinstance(name, str) or not name.strip():
        raise ModelError("model name is empty; pass a name such as resnet18 (run `semicompact models`).")
    key = _norm(name)
    if key in _ALIASES:
        return _REGISTRY[_ALIASES[key]]
    raw = name.strip()
    if _timm_knows(raw):
        return _timm_passthrough(raw)
    if _timm_knows(raw.lower()):
        return _timm_passthrough(raw.lower())
    candidates = sorted(set(_REGISTRY) | {a for s in _REGISTRY.values() for a in s.aliases})
    close = difflib.get_close_matches(raw.lower(), candidates, n=3, cutoff=0.5)
    hint = (
        f"did you mean {', '.join(dict.fromkeys(_ALIASES.get(_norm(c), c) for c in close))}? "
        if close
        else ""
    )
    raise ModelError(f"unknown model '{raw}'; {hint}Run `semicompact models` to list them.")


def _timm_knows(name: str) -> bool:
    import timm

    try:
        return bool(timm.is_model(name))
    except Exception:
        return False


_PASSTHROUGH: dict[str, ModelSpec] = {}


def _timm_passthrough(name: str) -> ModelSpec:
    if name not in _PASSTHROUGH:
        _PASSTHROUGH[name] = ModelSpec(
            name=name,
            family="timm",
            builder=_timm_builder(name),
            description=f"timm model {name} (not one of the paper's networks).",
            default_pretrained_source=f"timm:{name}",
            source="timm",
            small_input=_first_conv_stride1,
        )
    return _PASSTHROUGH[name]


# --------------------------------------------------------------------------------------- builders


def _timm_builder(timm_name: str) -> Builder:
    def build(num_classes: int, drop_rate: float = 0.0, pretrained: bool = False, **kwargs: Any) -> nn.Module:
        import timm

        return timm.create_model(
            timm_name, pretrained=pretrained, num_classes=num_classes, drop_rate=drop_rate, **kwargs
        )

    build.timm_name = timm_name  # type: ignore[attr-defined]
    return build


class _DropoutLinear(nn.Linear):
    """A linear head with dropout on its input; same state_dict keys as ``nn.Linear``."""

    def __init__(self, in_features: int, out_features: int, drop_rate: float) -> None:
        super().__init__(in_features, out_features)
        self.drop_rate = float(drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_rate > 0:
            x = nn.functional.dropout(x, self.drop_rate, self.training)
        return super().forward(x)


def _with_dropout_fc(net: nn.Module, drop_rate: float) -> nn.Module:
    if drop_rate > 0:
        fc = net.fc
        net.fc = _DropoutLinear(fc.in_features, fc.out_features, drop_rate)
    return net


def _tv_quantizable_resnet(depth: int) -> Builder:
    def build(num_classes: int, drop_rate: float = 0.0, **_: Any) -> nn.Module:
        from torchvision.models import quantization

        fn = getattr(quantization, f"resnet{depth}")
        return _with_dropout_fc(fn(weights=None, quantize=False, num_classes=num_classes), drop_rate)

    return build


def _tv_squeezenet(num_classes: int, drop_rate: float = 0.0, **_: Any) -> nn.Module:
    from torchvision.models import squeezenet1_1

    # torchvision's SqueezeNet has dropout 0.5 built in; drop_rate > 0 overrides it.
    return squeezenet1_1(weights=None, num_classes=num_classes, dropout=drop_rate if drop_rate > 0 else 0.5)


def _tv_shufflenet(num_classes: int, drop_rate: float = 0.0, **_: Any) -> nn.Module:
    from torchvision.models import shufflenet_v2_x1_0

    return _with_dropout_fc(shufflenet_v2_x1_0(weights=None, num_classes=num_classes), drop_rate)


# ---------------------------------------------------------------------------- small-input stems


def _set_stride1(conv: nn.Conv2d) -> None:
    conv.stride = (1, 1)


def _resnet_small(net: nn.Module) -> None:
    # Keep the pretrained 7x7 conv1 weights (stride 2 -> 1, padding 3 keeps the size); drop the maxpool.
    _set_stride1(net.conv1)
    net.maxpool = nn.Identity()


def _efficientnet_small(net: nn.Module) -> None:
    _set_stride1(net.conv_stem)  # weights kept; timm's Conv2dSame pads dynamically from the stride


def _squeezenet_small(net: nn.Module) -> None:
    _set_stride1(net.features[0])


def _shufflenet_small(net: nn.Module) -> None:
    _set_stride1(net.conv1[0])
    net.maxpool = nn.Identity()


def _first_conv_stride1(net: nn.Module) -> None:
    """Generic fallback: the first strided convolution of the network gets stride 1."""
    first = getattr(net, "pretrained_cfg", {}).get("first_conv") if hasattr(net, "pretrained_cfg") else None
    conv = None
    if isinstance(first, str):
        try:
            conv = net.get_submodule(first)
        except AttributeError:
            conv = None
    if not isinstance(conv, nn.Conv2d):
        conv = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is not None:
        _set_stride1(conv)


# --------------------------------------------------------------------------------- registrations

_LITE_MEAN = (127 / 255,) * 3
_LITE_STD = (128 / 255,) * 3


def _register_builtin() -> None:
    def timm_model(name: str, family: str, desc: str, aliases: tuple[str, ...] = (), **kw: Any) -> None:
        register_model(
            name,
            family,
            _timm_builder(name),
            desc,
            aliases,
            f"timm:{name}",
            source="timm",
            small_input=kw.pop("small_input", _efficientnet_small),
            **kw,
        )

    # standard (big) networks
    timm_model(
        "resnet50",
        "standard",
        "ResNet-50 (timm), the paper's big reference network.",
        small_input=_resnet_small,
    )
    timm_model(
        "resnet101", "standard", "ResNet-101 (timm), a big reference network.", small_input=_resnet_small
    )
    timm_model("efficientnet_b3", "standard", "EfficientNet-B3 (timm), a big NAS-derived network.")
    # manual compact networks
    timm_model(
        "resnet18",
        "manual",
        "ResNet-18 (timm), the smallest classic residual network.",
        small_input=_resnet_small,
    )
    timm_model(
        "mobilenetv2_100",
        "manual",
        "MobileNetV2 1.0 (timm): inverted residuals, depthwise convs.",
        ("mobilenet_v2", "mobilenet"),
    )
    register_model(
        "squeezenet1_1",
        "manual",
        _tv_squeezenet,
        "SqueezeNet 1.1 (torchvision): fire modules, ~1.2 M parameters.",
        ("squeezenet",),
        "torchvision:SqueezeNet1_1_Weights.IMAGENET1K_V1",
        source="torchvision",
        head="classifier.1",
        small_input=_squeezenet_small,
    )
    register_model(
        "shufflenet_v2_x1_0",
        "manual",
        _tv_shufflenet,
        "ShuffleNetV2 1.0x (torchvision): channel shuffle, depthwise convs.",
        ("shufflenet",),
        "torchvision:ShuffleNet_V2_X1_0_Weights.IMAGENET1K_V1",
        source="torchvision",
        head="fc",
        small_input=_shufflenet_small,
    )
    # automatic (NAS) compact networks
    timm_model("fbnetc_100", "automatic", "FBNet-C (timm), found by differentiable NAS.", ("fbnet",))
    timm_model("mixnet_s", "automatic", "MixNet-S (timm): mixed depthwise kernel sizes, NAS.")
    timm_model("mixnet_m", "automatic", "MixNet-M (timm): mixed depthwise kernel sizes, NAS.", ("mixnet",))
    timm_model(
        "mnasnet_100", "automatic", "MnasNet-A1 1.0 (timm), mobile NAS with latency reward.", ("mnasnet",)
    )
    timm_model(
        "efficientnet_b0",
        "automatic",
        "EfficientNet-B0 (timm), NAS baseline of the family.",
        ("efficientnet",),
    )
    timm_model(
        "tf_efficientnet_lite0",
        "automatic",
        "EfficientNet-Lite0 (timm, TF port): no SE, ReLU6, edge-friendly.",
        ("efficientnet_lite0",),
        mean=_LITE_MEAN,
        std=_LITE_STD,
    )
    for size, params in ((1, "5.4M"), (2, "6.1M")):
        timm_model(
            f"tf_efficientnet_lite{size}",
            "automatic",
            f"EfficientNet-Lite{size} (timm, TF port, {params} parameters): a larger Lite, e.g. a teacher.",
            (f"efficientnet_lite{size}",),
            mean=_LITE_MEAN,
            std=_LITE_STD,
        )
    # quantization-ready networks (float for now)
    for depth in (18, 50):
        register_model(
            f"resnet{depth}_quantized",
            "quantized",
            _tv_quantizable_resnet(depth),
            f"Quantizable ResNet-{depth} (torchvision) trained in float; it holds QuantStub/DeQuantStub "
            "and fuse_model(), the int8 conversion comes with the compression step.",
            (),
            f"torchvision:ResNet{depth}_Weights.IMAGENET1K_V1",
            source="torchvision",
            head="fc",
            small_input=_resnet_small,
        )


_register_builtin()
