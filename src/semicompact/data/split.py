"""The paper's split protocol: N labelled images per class, the rest unlabelled.

The split is saved as JSON with the source's fingerprint so that every later stage (training,
evaluation, semi-supervised rounds) uses exactly the same images and notices if the data changed.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from semicompact.data.medmnist import is_default_names
from semicompact.data.sources import DataSource, Item
from semicompact.errors import DataError
from semicompact.io import write_json

Entry = list[Any]  # [ref, label_or_None]
SUBSETS = ("labelled", "unlabelled", "val", "test")
FORMAT = "semicompact-split/1"
_STAGE_TEST, _STAGE_VAL, _STAGE_LABELLED = 1, 2, 3


@dataclass
class SplitManifest:
    """Which image goes where; every subset is a list of ``[ref, label]`` (label None if unknown)."""

    source_kind: str
    source_path: str
    source_sha256: str
    classes: list[str]
    seed: int
    n_labelled: int
    test_fraction: float
    val_fraction: float
    # where the validation labels come from: "labelled" (out of the n_labelled budget) or "official"
    # (the source's own validation split, else a val_fraction of train); older manifests are official
    val_source: str = "official"
    val_share: float = 0.0
    # the seed of the drawn test split, fixed across --seed so that every seed is scored on the same
    # images; None: the source's own test split, or (older manifests) drawn with ``seed``
    test_seed: int | None = None
    labelled: list[Entry] = field(default_factory=list)
    unlabelled: list[Entry] = field(default_factory=list)
    val: list[Entry] = field(default_factory=list)
    test: list[Entry] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self)}

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the manifest as JSON, atomically."""
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str], source: DataSource | None = None) -> SplitManifest:
        """Read a manifest; with ``source``, also check that the data did not change."""
        p = Path(path)
        if not p.is_file():
            raise DataError(f"split file '{p}' does not exist: run semicompact split first")
        try:
            raw = json.loads(p.read_text(encoding="utf-8"))
            if not isinstance(raw, dict):
                raise ValueError("not a JSON object")
            raw.pop("format", None)
            manifest = cls(**raw)
            for name in SUBSETS:
                rows = getattr(manifest, name)
                setattr(manifest, name, [[str(r), None if lab is None else int(lab)] for r, lab in rows])
        except (ValueError, TypeError) as exc:
            raise DataError(
                f"split file '{p}' is not a valid semicompact split ({exc}): re-run semicompact split"
            ) from None
        if source is not None:
            manifest.check_source(source)
        return manifest

    def check_source(self, source: DataSource) -> None:
        """Raise DataError when ``source`` is not the data this split was made from."""
        if source.fingerprint() != self.source_sha256:
            raise DataError(
                f"the data in {source.root} changed since the split was made; re-run semicompact split"
            )
        if list(source.classes) != list(self.classes) and not self._numbered_medmnist(source):
            raise DataError(
                f"the classes of {source.root} ({', '.join(source.classes)}) differ from those of the "
                f"split ({', '.join(self.classes)}); re-run semicompact split"
            )

    def _numbered_medmnist(self, source: DataSource) -> bool:
        """A split made before MedMNIST files got their class names ("0".."K-1", same file): valid."""
        return (
            source.kind == "npz"
            and is_default_names(self.classes)
            and len(self.classes) == len(source.classes)
        )

    def entries(self, subset: str) -> list[tuple[str, int | None]]:
        if subset not in SUBSETS:
            raise ValueError(f"unknown subset {subset!r}; expected one of {SUBSETS}")
        return [(r, lab) for r, lab in getattr(self, subset)]

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per subset per class name (``"unknown"`` for unlabelled images without a label)."""
        out: dict[str, dict[str, int]] = {}
        for name in SUBSETS:
            c = Counter(lab for _, lab in getattr(self, name))
            row = {cls: c.get(i, 0) for i, cls in enumerate(self.classes)}
            if c.get(None):
                row["unknown"] = c[None]
            out[name] = row
        return out


def _rng(seed: int, stage: int, class_index: int) -> np.random.Generator:
    # One stream per (stage, class): changing n_labelled never changes the test or val sets.
    return np.random.default_rng([seed, stage, class_index])


def _by_class(items: list[Item], n_classes: int) -> list[list[Item]]:
    groups: list[list[Item]] = [[] for _ in range(n_classes)]
    for it in items:
        if it.label is not None:
            groups[it.label].append(it)
    return [sorted(g, key=lambda it: it.ref) for g in groups]


def _take(group: list[Item], n: int, rng: np.random.Generator) -> tuple[list[Item], list[Item]]:
    order = rng.permutation(len(group))
    shuffled = [group[i] for i in order]
    return shuffled[:n], shuffled[n:]


def _entries(items: list[Item]) -> list[Entry]:
    return [[it.ref, it.label] for it in items]


def make_split(
    source: DataSource,
    n_labelled: int = 75,
    test_fraction: float = 0.25,
    val_fraction: float = 0.1,
    seed: int = 0,
    val: str = "labelled",
    val_share: float = 0.2,
    test_seed: int | None = 0,
) -> SplitManifest:
    """Split ``source`` following the paper: test (own or stratified), N labelled per class, rest
    unlabelled.

    ``val="labelled"`` (the default, as in the paper's fastai setup) takes the validation images out
    of the labelled budget (``val_share`` of each class's N: 75 -> 60 train + 15 val), so that early
    stopping, checkpoint choice, temperature scaling and ensemble weights use no label beyond the
    budget (Oliver et al. 2018). ``val="official"`` uses the source's own validation split (or a
    ``val_fraction`` of train), which holds far more labels than the budget: results that use it
    must say so.

    Without a test split in the source, the test images are drawn with ``test_seed`` (0 unless
    asked otherwise), not ``seed``: runs with different seeds are scored on the same test images.
    ``test_seed=None`` draws them with ``seed``, as manifests made before it did.
    """
    if val not in ("labelled", "official"):
        raise DataError(f"--val is '{val}': use labelled (inside the label budget) or official")
    if not 0.0 < val_share < 1.0:
        raise DataError(f"--val-share is {val_share}: it must be between 0 and 1")
    if n_labelled < 1:
        raise DataError(f"--n-labelled is {n_labelled}: it must be at least 1 image per class")
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"--test-fraction is {test_fraction}: it must be between 0 and 1")
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"--val-fraction is {val_fraction}: it must be between 0 (inclusive) and 1")
    k = len(source.classes)
    notes: list[str] = []
    groups = _by_class(source.items.get("train", []), k)

    test: list[Item] = []
    drawn_with = int(seed if test_seed is None else test_seed)
    own_test = bool(source.items.get("test"))
    if own_test:
        test = list(source.items["test"])
        notes.append("test: the source's own test split")
    else:
        for c, g in enumerate(groups):
            n_test = round(len(g) * test_fraction)
            if len(g) >= 2:
                n_test = min(max(n_test, 1), len(g) - 1)
            taken, groups[c] = _take(g, n_test, _rng(drawn_with, _STAGE_TEST, c))
            test.extend(taken)
        notes.append(f"test: a stratified {test_fraction:.0%} of train (test seed {drawn_with})")

    val_items: list[Item] = []
    if val == "labelled":
        if source.items.get("valid"):
            notes.append("val: out of the labelled budget; the source's own validation split is not used")
        else:
            notes.append("val: out of the labelled budget")
    elif source.items.get("valid"):
        val_items = list(source.items["valid"])
        notes.append("val: the source's own validation split")
    elif val_fraction > 0:
        for c, g in enumerate(groups):
            n_val = round(len(g) * val_fraction)
            if len(g) >= 3:
                n_val = max(n_val, 1)
            taken, groups[c] = _take(g, n_val, _rng(seed, _STAGE_VAL, c))
            val_items.extend(taken)
        notes.append(f"val: a stratified {val_fraction:.0%} of the remaining train images")

    labelled: list[Item] = []
    unlabelled: list[Item] = []
    for c, g in enumerate(groups):
        if len(g) < n_labelled:
            notes.append(
                f"warning: class '{source.classes[c]}' has only {len(g)} training images left for "
                f"{n_labelled} labelled; all of them are labelled"
            )
        taken, rest = _take(g, n_labelled, _rng(seed, _STAGE_LABELLED, c))
        if val == "labelled" and len(taken) >= 2:
            n_val = min(max(1, round(len(taken) * val_share)), len(taken) - 1)
            val_items.extend(taken[len(taken) - n_val :])
            taken = taken[: len(taken) - n_val]
        labelled.extend(taken)
        unlabelled.extend(rest)
    unlabelled.extend(source.items.get("unlabelled", []))
    if not labelled:
        raise DataError(f"no labelled training images in '{source.root}': add labelled images to train")

    return SplitManifest(
        source_kind=source.kind,
        source_path=str(source.root),
        source_sha256=source.fingerprint(),
        classes=list(source.classes),
        seed=int(seed),
        n_labelled=int(n_labelled),
        test_fraction=float(test_fraction),
        val_fraction=float(val_fraction),
        val_source=val,
        val_share=float(val_share) if val == "labelled" else 0.0,
        test_seed=None if own_test else drawn_with,
        labelled=_entries(labelled),
        unlabelled=_entries(unlabelled),
        val=_entries(val_items),
        test=_entries(test),
        notes=notes,
    )
