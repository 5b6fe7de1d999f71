"""Declared invariances: the flips and quarter turns that keep an image's label, declared once.

A blood smear or a skin lesion has no "up": its class survives any flip or quarter turn. A chest
X-ray has a top and a left (the heart is on the patient's left), so a vertical flip makes an image
no real scanner produces. ``--invariances hflip,vflip,rot90`` says which of these symmetries hold;
the training augmentation, the weak/strong views of the consistency methods and the test-time
views of data distillation then use only transforms made of them.

The declared names generate a group of the square's eight symmetries (the dihedral group D4):
declaring ``hflip`` and ``vflip`` also allows their composition, a 180-degree turn; ``hflip`` and
``rot90`` allow every flip and turn. A view is used only if its transform is in that group.

Only these discrete symmetries are governed here. The small perturbations of the augmentations
(rotation by a few degrees, shifts, shears, zoom, lighting) are not symmetries and are controlled by
``--augment``. ``invariances=None`` (the default) keeps what the code did before: the training and
consistency augmentations flip left-right (and up-down with ``--vflip``), and test-time transforms
are used as given.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import kornia.augmentation as K
import torch
from torch import nn

from semicompact.errors import ConfigError

INVARIANCE_NAMES = ("hflip", "vflip", "rot90", "rot180")

# An element of D4 is (k, m): mirror left-right if m, then turn k quarter turns counter-clockwise.
Element = tuple[int, int]
IDENTITY: Element = (0, 0)
ELEMENTS: dict[str, Element] = {
    "identity": (0, 0),
    "hflip": (0, 1),
    "rot90": (1, 0),
    "rot180": (2, 0),
    "rot270": (3, 0),
    "vflip": (2, 1),  # mirror left-right, then turn 180 degrees = mirror up-down
    "transpose": (1, 1),
    "antitranspose": (3, 1),
}
_NAME_OF = {e: n for n, e in ELEMENTS.items()}


def _compose(a: Element, b: Element) -> Element:
    """The element "b, then a". With r = quarter turn and s = mirror, a = r^ka s^ma; s r^k = r^-k s."""
    ka, ma = a
    kb, mb = b
    return ((ka + (-kb if ma else kb)) % 4, ma ^ mb)


def parse_invariances(value: Any, option: str = "--invariances") -> tuple[str, ...] | None:
    """``"hflip,vflip"`` / ``["rot90"]`` / ``"none"`` -> canonical names in a fixed order (None stays None).

    An unknown name is a one-line :class:`ConfigError` naming the option and the valid names.
    """
    if value is None:
        return None
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = [str(v).strip() for v in value]
    else:
        raise ConfigError(
            f"{option} must be a comma-separated list of {', '.join(INVARIANCE_NAMES)} (or none), "
            f"got {value!r}"
        )
    names = {v.lower() for v in items if v}
    if names == {"none"}:
        return ()
    unknown = sorted(names - set(INVARIANCE_NAMES))
    if unknown:
        raise ConfigError(
            f"{option}: unknown invariance {', '.join(repr(u) for u in unknown)}; "
            f"valid names: {', '.join(INVARIANCE_NAMES)} (or none)"
        )
    return tuple(n for n in INVARIANCE_NAMES if n in names)


def effective(invariances: Iterable[str] | None, vflip: bool = False) -> tuple[str, ...]:
    """The declared names, or for ``None`` what the code did before (left-right flips, plus
    up-down with ``vflip``); ``vflip=True`` always adds ``vflip`` (it is the older spelling)."""
    names = ("hflip",) if invariances is None else tuple(invariances)
    if vflip and "vflip" not in names:
        names = (*names, "vflip")
    return tuple(n for n in INVARIANCE_NAMES if n in names)


def group(names: Iterable[str]) -> frozenset[Element]:
    """Every symmetry the declared names generate (closure under composition)."""
    members = {IDENTITY}
    generators = [ELEMENTS[n] for n in names]
    frontier = list(members)
    while frontier:
        new = []
        for a in frontier:
            for g in generators:
                c = _compose(g, a)
                if c not in members:
                    members.add(c)
                    new.append(c)
        frontier = new
    return frozenset(members)


def group_names(names: Iterable[str]) -> list[str]:
    """The names of the group's elements, identity first (for messages and metrics)."""
    g = group(names)
    return [n for n, e in ELEMENTS.items() if e in g]


def allows(names: Iterable[str], element: str) -> bool:
    """Whether the symmetry ``element`` (a key of :data:`ELEMENTS`) keeps the label."""
    return ELEMENTS[element] in group(names)


def apply_element(x: torch.Tensor, element: Element) -> torch.Tensor:
    """Apply one symmetry to a (B, C, H, W) batch of square images."""
    k, m = element
    out = x.flip(dims=[3]) if m else x
    return torch.rot90(out, k, dims=[2, 3]) if k else out


class RandomGroupElement(nn.Module):
    """One uniformly drawn element of a symmetry group per image (a loop over the <= 8 elements,
    never over images), drawn on the CPU generator like the other views."""

    def __init__(self, elements: Iterable[Element]) -> None:
        super().__init__()
        self.elements = sorted(elements)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != x.shape[-2]:
            raise ValueError(f"quarter turns need square images, got {tuple(x.shape[-2:])}")
        pick = torch.randint(len(self.elements), (x.shape[0],))
        out = x.clone()
        for i, element in enumerate(self.elements):
            idx = (pick == i).nonzero().squeeze(1).to(x.device)
            if element != IDENTITY and idx.numel():
                out[idx] = apply_element(x[idx], element)
        return out

    def extra_repr(self) -> str:
        return "elements=" + ", ".join(_NAME_OF[e] for e in self.elements)


def random_symmetry(names: Iterable[str]) -> list[nn.Module]:
    """Modules that apply a uniformly random element of the group to each image.

    The two groups the code used before keep their exact modules (kornia's random flips), so runs
    without declared invariances draw the same random numbers as before.
    """
    g = group(names)
    if g == {IDENTITY}:
        return []
    if g == group(["hflip"]):
        return [K.RandomHorizontalFlip(p=0.5)]
    if g == group(["vflip"]):
        return [K.RandomVerticalFlip(p=0.5)]
    if g == group(["hflip", "vflip"]):
        return [K.RandomHorizontalFlip(p=0.5), K.RandomVerticalFlip(p=0.5)]
    return [RandomGroupElement(g)]


#: the test-time transforms (``data.tta``) that move pixels, and the symmetry each one is
TTA_SYMMETRY = {"hflip": "hflip", "vflip": "vflip", "hvflip": "rot180", "rot90": "rot90", "rot270": "rot270"}


def tta_allowed(name: str, invariances: Iterable[str] | None) -> bool:
    """Whether a test-time transform may be used: photometric ones (blur, gamma...) always; a flip
    only if it is in the declared group. ``None`` (nothing declared) allows all, as before."""
    element = TTA_SYMMETRY.get(name)
    return invariances is None or element is None or allows(invariances, element)
