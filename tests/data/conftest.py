"""Shared fixtures for the data tests."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _data_helpers import save_png


@pytest.fixture
def make_folder(tmp_path: Path) -> Callable[..., Path]:
    """make_folder({"train": {"a": 3, "b": 4}, "test": {...}}, unlabelled=5) -> root."""

    def _make(layout: dict[str, dict[str, int]], unlabelled: int = 0, name: str = "ds") -> Path:
        root = tmp_path / name
        seed = 0
        for split, classes in layout.items():
            for cls, n in classes.items():
                base = root / split / cls if split else root / cls
                base.mkdir(parents=True, exist_ok=True)
                for i in range(n):
                    seed += 1
                    save_png(base / f"img_{i:03d}.png", seed)
        for i in range(unlabelled):
            save_png(root / "unlabelled" / f"sub{i % 2}" / f"u_{i:03d}.png", 10_000 + i)
        root.mkdir(parents=True, exist_ok=True)
        return root

    return _make
