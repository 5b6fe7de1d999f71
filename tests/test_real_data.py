"""Slow tests on the real data in ../shared (skipped with a reason when it is not there)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _shared import require_shared, user_env

from semicompact.data import make_split, open_source
from semicompact.training import TrainConfig, fit

pytestmark = pytest.mark.slow


def test_ham10000_folder_split_follows_the_paper() -> None:
    root = require_shared("data", "ham10000")
    source = open_source(root)
    assert source.classes == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    # the paper's split: 75 labelled per class, validation from the rest of train (--val official)
    manifest = make_split(source, n_labelled=75, seed=0, val="official")
    counts = manifest.counts()
    # 75 labelled per class, all of a class when it has fewer (df: 60 train images, 6 go to val)
    assert counts["labelled"] == {
        "akiec": 75,
        "bcc": 75,
        "bkl": 75,
        "df": 54,
        "mel": 75,
        "nv": 75,
        "vasc": 72,
    }
    assert counts["unlabelled"]["df"] == 0 and any("'df'" in note for note in manifest.notes)
    assert sum(counts["test"].values()) == 1512  # the official ISIC 2018 test set is kept
    assert counts["test"]["df"] == 44
    # val comes from train, never from test, and nothing is in two subsets
    refs = [set(r for r, _ in getattr(manifest, s)) for s in ("labelled", "unlabelled", "val", "test")]
    assert sum(len(r) for r in refs) == len(set().union(*refs))
    assert sum(len(r) for r in refs) == 5984 + 1512


def test_pretrained_mobilenet_beats_chance_clearly_on_pneumoniamnist(tmp_path: Path) -> None:
    """The paper's protocol on a real set: 75 labelled per class (15 of them for validation), the
    official test split, ImageNet weights, a 300-step budget with the body at the head's rate."""
    data = require_shared("data", "medmnist", "pneumoniamnist.npz")
    weights = require_shared("weights", "mobilenet_v2-b0353104.pth")
    config = TrainConfig(
        data=str(data),
        out=str(tmp_path / "run"),
        model="mobilenetv2_100",
        weights=str(weights),
        image_size=64,
        head_epochs=2,
        max_steps=300,
        early_stopping=False,
        select="last",
        body_lr_mult=1.0,
        progress=False,
        tensorboard=False,
    )
    metrics = fit(config).metrics
    test = metrics["test"]
    assert test["n"] == 624 and metrics["cost"]["optimizer_steps"] == 300
    assert metrics["cost"]["val_images"] == 30  # validation inside the budget: 15 per class
    # one-class guessing: 0.38; 600 steps (bench/results/supervised_convergence): 0.887
    assert test["macro_f1"] > 0.75


def test_demo_runs_end_to_end_in_under_ten_minutes(tmp_path: Path) -> None:
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "semicompact.cli.main", "demo", "--out", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=900,
        env=user_env(),  # the threads a user gets, not the tests' one-thread default
    )
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stderr[-2000:]
    assert elapsed < 600
    assert "outputs in" in result.stdout
    runs = tmp_path / "demo" / "runs"
    scores = {}
    for method in ("supervised", "data_distillation"):
        metrics = json.loads((runs / method / "metrics.json").read_text())
        scores[method] = metrics["test"]["macro_f1"]
        assert (runs / method / "learning_curve.png").is_file()
        assert (runs / method / "confusion_matrix.png").is_file()
    assert scores["supervised"] > 0.6
    # the first student labels the pool for the second: it must not make things worse
    assert scores["data_distillation"] >= scores["supervised"] - 0.02
    summary = json.loads((runs / "data_distillation" / "pseudo_summary.json").read_text())
    assert summary["selected"] > 100 and summary["accuracy_selected"] > 0.85
    check = json.loads((tmp_path / "demo" / "export" / "export.json").read_text())["exports"]["onnx-int8"]
    assert check["top1_agreement"] > 0.95
    assert (tmp_path / "demo" / "summary.md").is_file()
