from __future__ import annotations

from pathlib import Path

import pytest
from tiny_run import build_tiny_run


@pytest.fixture(scope="session")
def tiny_run(cells_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_run(cells_dir, tmp_path_factory.mktemp("tiny") / "run")
