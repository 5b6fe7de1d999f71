"""Shared fixtures for the model tests: offline hub, the ../shared folder with real weights."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # never touch the network from tests


def shared_dir() -> Path:
    env = os.environ.get("SEMICOMPACT_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared"


@pytest.fixture(scope="session")
def shared_weights() -> Path:
    path = shared_dir() / "weights"
    if not path.is_dir():
        pytest.skip(f"no shared weights folder at {path} (set SEMICOMPACT_SHARED)")
    return path
