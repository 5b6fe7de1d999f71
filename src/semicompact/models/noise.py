"""Model noise for a student (Noisy Student): dropout before the head, stochastic depth in the blocks.

Added to a built :class:`~semicompact.models.Classifier` without changing its parameters or state
dict, so the student saves, reloads (as the next round's teacher, noise-free) and exports exactly as
the same network built without noise. Both are active only in training mode: ``eval()`` gives the
clean network.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.nn import functional as F

from ..errors import ConfigError
from .factory import Classifier


class InputDropout:
    """A forward pre-hook: dropout on the input of the head (as timm's ``drop_rate`` before the
    classifier), only while the head is in training mode. A class, not a lambda, so it pickles."""

    def __init__(self, p: float) -> None:
        self.p = float(p)

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        if not module.training or self.p <= 0:
            return args
        return (F.dropout(args[0], self.p, True), *args[1:])


def stochastic_depth_blocks(model: Classifier) -> list[nn.Module]:
    """The residual blocks that can drop their branch: timm blocks with a ``drop_path`` attribute
    (EfficientNet family, MobileNetV2, MnasNet, MixNet, FBNet, ResNets). torchvision networks have
    none."""
    return [m for m in model.net.modules() if hasattr(m, "drop_path") and m is not model.net]


def add_noise(model: Classifier, drop_rate: float, drop_path_rate: float) -> dict[str, Any]:
    """Dropout ``drop_rate`` on the head's input and stochastic depth up to ``drop_path_rate``.

    Stochastic depth follows timm's EfficientNet rule, linear in depth: block ``i`` of ``n`` drops
    its residual branch with probability ``drop_path_rate * i / n`` (Huang et al. 2016's linear
    decay; the paper's "survival probability 0.8 for the last layer" is ``drop_path_rate`` 0.2).
    A block without a skip connection does not use it (timm applies it only around a skip).
    Returns what was added, for ``metrics.json``.
    """
    from timm.layers import DropPath

    for name, value in (("drop_rate", drop_rate), ("drop_path_rate", drop_path_rate)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
            raise ConfigError(f"{name} must be a number in [0, 1), got '{value}'")
    if drop_rate > 0:
        model.head.register_forward_pre_hook(InputDropout(drop_rate))
    blocks = stochastic_depth_blocks(model) if drop_path_rate > 0 else []
    for i, block in enumerate(blocks):
        rate = drop_path_rate * i / len(blocks)
        block.drop_path = DropPath(rate) if rate > 0 else nn.Identity()
    return {
        "drop_rate": float(drop_rate),
        "drop_path_rate": float(drop_path_rate),
        "stochastic_depth_blocks": len(blocks),
    }


def is_noisy(model: Classifier) -> bool:
    """True when the model has head dropout or a dropping block (for tests and checks)."""
    hooks = model.head._forward_pre_hooks.values()
    dropout = any(isinstance(h, InputDropout) and h.p > 0 for h in hooks)
    depth = any(
        getattr(getattr(b, "drop_path", None), "drop_prob", 0) > 0 for b in stochastic_depth_blocks(model)
    )
    return dropout or depth
