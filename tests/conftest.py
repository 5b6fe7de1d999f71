"""Shared fixtures: offline hub, the real-data folder, small generated datasets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never wait on the hub in tests
os.environ.setdefault("PYTHONHASHSEED", "0")


@pytest.fixture(scope="session")
def cells_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic cell dataset in the seed paper's folder layout (train/test/unlabelled)."""
    from semicompact.data.synthetic import make_synthetic_cells

    root = tmp_path_factory.mktemp("cells")
    return make_synthetic_cells(root, n_per_class_train=60, n_test=25, n_unlabelled=40, size=32, seed=0)
