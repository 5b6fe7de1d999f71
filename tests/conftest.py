"""Shared fixtures: offline hub, the real-data folder, small generated datasets; slow tests opt-in."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never wait on the hub in tests
os.environ.setdefault("PYTHONHASHSEED", "0")
# One torch thread per process (this one and the CLI subprocesses), unless OMP_NUM_THREADS is set:
# the tests are small, and on a busy 2-core machine two threads made them about 3x slower
# (OpenMP threads wait for each other); measured 2026-12-03, 876 s against 310 s on the same tests.
if "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["SEMICOMPACT_TESTS_SET_OMP"] = "1"  # _shared.user_env() gives commands the default back
    if "torch" in sys.modules:  # imported before this file by a plugin: apply it now
        sys.modules["torch"].set_num_threads(1)

SLOW_HOW = "slow test, not in the default run: run it with --runslow, SEMICOMPACT_SLOW=1 or CI=true"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--runslow", action="store_true", default=False, help="also run the tests marked slow (CI=true does)"
    )


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() not in ("", "0", "false", "no")


def run_slow(config: pytest.Config) -> bool:
    """Slow tests run in CI (CI=true), on request, or when ``-m`` names the marker (``-m slow``);
    a plain ``pytest`` here skips them so the default run stays within about 15 minutes."""
    if config.getoption("--runslow") or _truthy(os.environ.get("SEMICOMPACT_SLOW")):
        return True
    if _truthy(os.environ.get("CI")):
        return True
    markexpr = config.getoption("markexpr", default="") or ""
    return "slow" in markexpr and "not slow" not in markexpr


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if run_slow(config):
        return
    skip = pytest.mark.skip(reason=SLOW_HOW)
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """A test that sets torch's thread count (the bench grid sets it per job) gives it back: the
    tests after it keep OMP_NUM_THREADS or the default, and no test oversubscribes the cores."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    yield
    if before is not None and torch.get_num_threads() != before:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def cells_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic cell dataset in the seed paper's folder layout (train/test/unlabelled)."""
    from semicompact.data.synthetic import make_synthetic_cells

    root = tmp_path_factory.mktemp("cells")
    return make_synthetic_cells(root, n_per_class_train=60, n_test=25, n_unlabelled=40, size=32, seed=0)
