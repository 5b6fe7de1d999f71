"""Streaming torch datasets over a :class:`DataSource`.

Images are decoded on demand (never preloaded) and one unreadable file must not kill an hours-long
run: it is skipped, logged to a shared file and reported at the end.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from semicompact.data.images import _scale_to_uint8
from semicompact.data.sources import DataSource, Item
from semicompact.data.transforms import resize_uint8, to_uint8_tensor
from semicompact.errors import ImageReadError

UNLABELLED = -1
Sample = tuple[torch.Tensor, int]


class SkippedImageWarning(UserWarning):
    """An unreadable image was skipped while streaming."""


def _clean(text: str) -> str:
    return " ".join(text.replace("\t", " ").splitlines())


def append_skip(skip_log: Path, ref: str, reason: str) -> None:
    """One ``ref<TAB>reason`` line; a single O_APPEND write so that worker processes never interleave."""
    skip_log.parent.mkdir(parents=True, exist_ok=True)
    line = f"{_clean(ref)}\t{_clean(reason)}\n".encode()
    fd = os.open(skip_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_skip_log(skip_log: Path | None) -> list[tuple[str, str]]:
    """Unique (ref, reason) pairs from a skip log, in first-seen order."""
    if skip_log is None or not Path(skip_log).is_file():
        return []
    seen: dict[str, str] = {}
    for line in Path(skip_log).read_text(encoding="utf-8").splitlines():
        ref, _, reason = line.partition("\t")
        if ref and ref not in seen:
            seen[ref] = reason
    return list(seen.items())


class ImageDataset(Dataset):
    """(uint8 (3, S, S), label) pairs; label -1 for unlabelled; None for an unreadable image."""

    def __init__(
        self,
        source: DataSource,
        entries: Sequence[Sequence[Any]],
        image_size: int,
        skip_log: Path | None = None,
    ) -> None:
        self.source = source
        self.entries: list[tuple[str, int | None]] = [
            (str(e[0]), None if e[1] is None else int(e[1])) for e in entries
        ]
        self.image_size = int(image_size)
        self.skip_log = Path(skip_log) if skip_log is not None else None

    def __len__(self) -> int:
        return len(self.entries)

    def _npz_tensor(self, ref: str) -> torch.Tensor:
        arr = self.source.array(ref)
        if arr.dtype != np.uint8:
            arr = _scale_to_uint8(arr)
        t = torch.from_numpy(np.ascontiguousarray(arr))
        t = t.unsqueeze(0).expand(3, -1, -1) if t.ndim == 2 else t.permute(2, 0, 1)
        if t.shape[0] == 1:
            t = t.expand(3, -1, -1)
        return resize_uint8(t, self.image_size)

    def __getitem__(self, index: int) -> Sample | None:
        ref, label = self.entries[index]
        target = UNLABELLED if label is None else label
        if self.source.kind == "npz":
            return self._npz_tensor(ref), target
        try:
            img = self.source.load(Item(ref, label))
        except ImageReadError as exc:
            if self.skip_log is not None:
                append_skip(self.skip_log, ref, exc.reason)
            message = f"skipping unreadable image '{exc.path}': {exc.reason}"
            warnings.warn(message, SkippedImageWarning, stacklevel=2)
            return None
        return to_uint8_tensor(img, self.image_size), target


def collate_skip(batch: Sequence[Sample | None], image_size: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack the readable samples: (uint8 (B, 3, S, S), int64 (B,)); B may be 0."""
    kept = [b for b in batch if b is not None]
    if not kept:
        empty = torch.empty((0, 3, image_size, image_size), dtype=torch.uint8)
        return empty, torch.empty(0, dtype=torch.int64)
    images = torch.stack([b[0] for b in kept])
    labels = torch.tensor([b[1] for b in kept], dtype=torch.int64)
    return images, labels


class SkipCollate:
    """Picklable collate function that knows the image size (for all-skipped batches)."""

    def __init__(self, image_size: int) -> None:
        self.image_size = image_size

    def __call__(self, batch: Sequence[Sample | None]) -> tuple[torch.Tensor, torch.Tensor]:
        return collate_skip(batch, self.image_size)
