"""A method that learns from unlabelled images stops before any training (no teacher trained, no
file written) when the split has none, with one line that says how to fix it; KD's line names the
option that runs it on the labelled images only, and that option works."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from _shared import cli_error, run_cli

ARGS = (
    "--model", "mobilenetv2_100", "--small-input", "--pretrained", "--image-size", "32",
    "--n-labelled", "60", "--max-steps", "4", "--head-steps", "2", "--no-early-stopping",
    "--batch-size", "8", "--no-progress", "--no-tensorboard",
)  # fmt: skip


@pytest.fixture(scope="module")
def labelled_only(cells_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cell data without its unlabelled/ folder; 60 labels per class use every training image."""
    root = tmp_path_factory.mktemp("labelled_only") / "cells"
    shutil.copytree(cells_dir, root, ignore=shutil.ignore_patterns("unlabelled"))
    return root


@pytest.mark.parametrize(
    ("method", "hint"),
    [
        (None, "or distil on the labelled images only with --option unlabelled=false"),
        ("fixmatch", "or use --method supervised"),
        ("plain_distillation", "or use --method supervised"),
    ],
)
def test_no_unlabelled_images_stops_before_training(
    labelled_only: Path, tmp_path: Path, capsys, method: str | None, hint: str
) -> None:
    out = tmp_path / "run"
    name = method or "kd"
    extra = ["--method", method] if method else []
    line = cli_error(capsys, "ssl", str(labelled_only), "--out", str(out), *extra, *ARGS)
    assert line == (
        f"error: --method {name}: no unlabelled images in the split of '{labelled_only}'; put them "
        f"in unlabelled/ or pass --unlabelled DIR, {hint}"
    )
    assert not (tmp_path / "teachers").exists()  # no teacher trained
    assert not out.exists() or not any(out.iterdir())  # nothing written


def test_kd_hint_runs_on_the_labelled_images(labelled_only: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "labelled"
    code, _, err = run_cli(
        capsys, "ssl", str(labelled_only), "--out", str(out), "--option", "unlabelled=false",
        "--option", "teachers=[mobilenetv2_100]", *ARGS,
    )  # fmt: skip
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["cost"]["unlabelled_images_seen"] == 0
    assert metrics["cost"]["optimizer_steps"] == 4
