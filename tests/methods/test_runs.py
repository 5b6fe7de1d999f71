"""Method runs end to end on the embedded cell data: outputs, teacher cache, resume, compatibility API."""

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
from _shared import Interrupt, Killed, clone_teacher_record, method_config

from semicompact.cli.main import main as cli_main
from semicompact.methods import run_method
from semicompact.training import TrainConfig


def _config(data: Path, out: Path, **kw) -> TrainConfig:
    return method_config(data, out, **kw)


TEACHER = {"teachers": "mobilenetv2_100", "max_unlabelled": 48, "inference_batch_size": 16}


@pytest.fixture(scope="module")
def teachers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """TEACHER with one teacher cache for the module: the self-training tests train the teacher once."""
    return {**TEACHER, "teacher_cache": str(tmp_path_factory.mktemp("teachers"))}


@pytest.fixture(scope="module")
def supervised(cells_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The supervised base on the official validation split: the KD teacher and the warm-start reference."""
    return run_method(
        "supervised", _config(cells_dir, tmp_path_factory.mktemp("base") / "supervised", val="official")
    )


def test_self_training_writes_pseudo_labels_and_reuses_its_teacher(
    cells_dir: Path, tmp_path: Path, teachers: dict[str, str]
) -> None:
    plain = run_method(
        "plain_distillation", _config(cells_dir, tmp_path / "plain"), {**teachers, "confidence": 0.3}
    )
    run = plain.run_dir
    rows = list(csv.DictReader((run / "pseudo_labels.csv").open()))
    assert len(rows) == 48
    summary = json.loads((run / "pseudo_summary.json").read_text())
    assert (
        summary["selected"]
        == sum(r["selected"] == "1" for r in rows)
        == plain.metrics["pseudo_labels"]["selected"]
    )
    assert sum(summary["selected_per_class"].values()) == summary["selected"]
    entries = json.loads((run / "train_entries.json").read_text())
    # labelled (8 per class, 2 of them kept for validation) + confident pseudo-labelled
    assert len(entries) == 6 * 4 + summary["selected"]
    cache = Path(teachers["teacher_cache"])
    teacher_runs = [t for t in cache.iterdir() if t.is_dir()]
    assert len(teacher_runs) == 1
    stamp = (teacher_runs[0] / "metrics.json").stat().st_mtime_ns

    # same data, split and teacher for another method: the cached teacher is reused, not retrained
    tta = run_method(
        "data_distillation",
        _config(cells_dir, tmp_path / "data"),
        {**teachers, "transforms": "hflip,gamma:gamma=0.7", "labels": "soft", "balance": True},
    )
    assert (teacher_runs[0] / "metrics.json").stat().st_mtime_ns == stamp
    assert len([t for t in cache.iterdir() if t.is_dir()]) == 1
    assert tta.metrics["pseudo_labels"]["transforms"] == ["hflip", "gamma"]
    assert tta.metrics["test"]["n"] == plain.metrics["test"]["n"]


def test_a_cached_teacher_without_its_weights_is_trained_again(
    cells_dir: Path, tmp_path: Path, teachers: dict[str, str], capsys
) -> None:
    """A results folder cloned from git keeps the teachers' records (metrics.json, config.json) but
    not their weights: the teacher is trained again, with the same settings and so the same scores."""
    run_method("plain_distillation", _config(cells_dir, tmp_path / "first"), teachers)
    (kept,) = [t for t in Path(teachers["teacher_cache"]).iterdir() if t.is_dir()]
    clone = clone_teacher_record(kept, tmp_path / "clone")
    capsys.readouterr()
    run_method(
        "plain_distillation",
        _config(cells_dir, tmp_path / "second"),
        {**teachers, "teacher_cache": str(clone.parent)},
    )
    err = " ".join(capsys.readouterr().err.split())
    assert "has its record but not its weights; training it again" in err
    assert (clone / "best.safetensors").is_file()
    again = json.loads((clone / "metrics.json").read_text())["test"]
    assert again["macro_f1"] == json.loads((kept / "metrics.json").read_text())["test"]["macro_f1"]


def test_self_training_says_when_no_pseudo_label_is_selected(
    cells_dir: Path, tmp_path: Path, capsys, teachers: dict[str, str]
) -> None:
    none = run_method(
        "plain_distillation", _config(cells_dir, tmp_path / "none"), {**teachers, "confidence": 1.0}
    )
    assert none.metrics["pseudo_labels"]["selected"] == 0
    assert "no unlabelled image reached confidence 1.0" in " ".join(capsys.readouterr().err.split())


FIXMATCH = {"mu": 2, "max_unlabelled": 32}


@pytest.fixture(scope="module")
def fixmatch(cells_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """A FixMatch run in this process; ``_ssl_cmd`` is its command-line twin."""
    out = tmp_path_factory.mktemp("fixmatch") / "a"
    return run_method("fixmatch", _config(cells_dir, out, epochs=2, batch_size=8), FIXMATCH)


def test_a_run_is_repeatable_from_its_seed(cells_dir: Path, tmp_path: Path, fixmatch) -> None:
    a = fixmatch
    b = run_method("fixmatch", _config(cells_dir, tmp_path / "b", epochs=2, batch_size=8), FIXMATCH)
    assert a.metrics["test"]["confusion_matrix"] == b.metrics["test"]["confusion_matrix"]
    assert a.metrics["test"]["macro_f1"] == b.metrics["test"]["macro_f1"]


def test_an_existing_run_is_never_overwritten(cells_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "method.json").write_text("{}")
    (out / "metrics.json").write_text("{}")  # a run that started (a failed start would be reused)
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["ssl", str(cells_dir), "--out", str(out), "--method", "fixmatch", "--no-progress"])
    assert exit_info.value.code == 2
    assert "already holds a run; pass --resume" in capsys.readouterr().err
    assert (out / "method.json").read_text() == "{}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "fixmach"], "unknown --method 'fixmach'; available:"),
        (["--method", "fixmatch", "--option", "treshold=0.9"], "unknown option(s) treshold; valid:"),
        (
            ["--method", "fixmatch", "--option", "threshold=1.5"],
            "option threshold must be in [0.0, 1.0], got 1.5",
        ),
        (["--method", "data_distillation", "--option", "transforms=hflip,sharpen"], "sharpen"),
        (
            ["--method", "plain_distillation", "--option", "labels=fuzzy"],
            "option labels must be hard or soft",
        ),
    ],
)
def test_bad_method_arguments_give_one_clear_line(
    cells_dir: Path, tmp_path: Path, capsys, args, message
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["ssl", str(cells_dir), "--out", str(tmp_path / "x"), "--no-progress", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in " ".join(err.split())
    assert "Traceback" not in err


def test_seed_api_names_map_onto_the_methods(cells_dir: Path, tmp_path: Path, monkeypatch) -> None:
    import semicompact
    from semicompact.methods import compat

    calls = []
    monkeypatch.setattr(compat, "run_method", lambda *a, **k: calls.append((a, k)))
    semicompact.dataDistillation(
        "ResNet-50",
        "MobileNet",
        ["H Flip", "Gamma"],
        cells_dir,
        None,
        tmp_path / "o",
        0.9,
        epochs=3,
        balance=True,
    )
    semicompact.modelDistillation(
        ["ResNet-50", "EfficientNet"], "ResNet18", cells_dir, None, tmp_path / "p", 0.7
    )
    semicompact.FixMatch("SqueezeNet", cells_dir, tmp_path / "unl", tmp_path / "q")
    (name, config, options), _ = calls[0]
    assert name == "data_distillation" and config.model == "mobilenetv2_100" and config.epochs == 3
    assert options == {
        "teachers": ["resnet50"],
        "transforms": ["H Flip", "Gamma"],
        "confidence": 0.9,
        "balance": True,
    }
    assert calls[1][0][2]["teachers"][0] == "resnet50" and calls[1][0][1].model == "resnet18"
    assert calls[2][0][0] == "fixmatch" and calls[2][0][1].unlabelled == str(tmp_path / "unl")
    from semicompact.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown argument"):
        semicompact.MixMatch("MobileNet", cells_dir, None, tmp_path / "r", epochz=3)


def _ssl_cmd(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "semicompact.cli.main", "ssl", str(data), "--out", str(out),
        "--method", "fixmatch", "--model", "mobilenetv2_100", "--small-input", "--pretrained",
        "--image-size", "32", "--n-labelled", "8",
        "--head-epochs", "1", "--epochs", "2", "--batch-size", "8", "--no-progress", "--no-tensorboard",
        "--option", "mu=2", "--option", "max_unlabelled=32", *extra,
    ]  # fmt: skip


def test_fixmatch_resumes_after_kill_with_the_same_result(cells_dir: Path, tmp_path: Path, fixmatch) -> None:
    """kill -9 after the first checkpoint, --resume: the result equals the run never interrupted
    (``fixmatch``, the same settings in this process)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    whole = fixmatch.run_dir
    cut = tmp_path / "cut"
    proc = subprocess.Popen(
        _ssl_cmd(cells_dir, cut), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while not (cut / "checkpoints" / "last.ckpt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (cut / "metrics.json").exists(), "the run finished before it could be interrupted"
    subprocess.run(_ssl_cmd(cells_dir, cut, "--resume"), check=True, env=env, capture_output=True)
    ours, theirs = (json.loads((d / "config.json").read_text()) for d in (cut, whole))
    assert {k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k)} == {"out"}
    ours, theirs = (json.loads((d / "method.json").read_text()) for d in (cut, whole))
    assert (ours["method"], ours["options"]) == (theirs["method"], theirs["options"])
    a = json.loads((whole / "metrics.json").read_text())["test"]
    b = json.loads((cut / "metrics.json").read_text())["test"]
    assert a["confusion_matrix"] == b["confusion_matrix"]
    assert a["macro_f1"] == pytest.approx(b["macro_f1"], abs=1e-6)


def test_fixmatch_resumes_from_the_middle_of_an_epoch_with_the_same_result(
    cells_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checkpoint at step 3 of 4-step epochs, the unlabelled loader in its second cycle (2 batches
    of 16 from 40 images): both loaders continue where they were, and the result is the same."""
    from semicompact.training import run as run_mod

    budget = dict(n_labelled=10, max_steps=10, head_steps=2, early_stopping=False, batch_size=8, val_every=3)
    options = {"mu": 2, "max_unlabelled": 40}
    whole = run_method("fixmatch", _config(cells_dir, tmp_path / "whole", **budget), options)
    trainer = run_mod._trainer

    def interrupted(*args, extra_callbacks=None, **kw):
        return trainer(*args, extra_callbacks=[*(extra_callbacks or []), Interrupt(at=5)], **kw)

    monkeypatch.setattr(run_mod, "_trainer", interrupted)
    with pytest.raises(Killed):
        run_method("fixmatch", _config(cells_dir, tmp_path / "cut", **budget), options)
    monkeypatch.setattr(run_mod, "_trainer", trainer)
    ckpt = torch.load(tmp_path / "cut" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 3
    assert ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"batches": 3}, {"batches": 1}]
    resumed = run_method("fixmatch", _config(cells_dir, tmp_path / "cut", **budget), options, resume=True)
    assert resumed.metrics["cost"] == {
        **whole.metrics["cost"],
        "wall_time_s": resumed.metrics["cost"]["wall_time_s"],
    }
    assert resumed.metrics["test"] == whole.metrics["test"]


def test_kd_trains_from_a_finished_teacher_run_and_reloads_its_checkpoint(
    cells_dir: Path, tmp_path: Path, supervised
) -> None:
    teacher = supervised
    student = run_method(
        "kd",
        _config(cells_dir, tmp_path / "kd", epochs=1, val="official"),
        {"teacher_runs": str(teacher.run_dir), "unlabelled": True, "mu": 1, "max_unlabelled": 16},
    )  # the best checkpoint is reloaded with weights_only=True: teachers must not be pickled into it
    assert student.metrics["test"]["n"] == teacher.metrics["test"]["n"]
    assert student.metrics["teachers"] == [str(teacher.run_dir)]
    other = _config(cells_dir, tmp_path / "other-split", epochs=1, seed=1, val="official")
    from semicompact.errors import ConfigError

    with pytest.raises(ConfigError, match="was trained on another split"):
        run_method("kd", other, {"teacher_runs": str(teacher.run_dir)})


def _first_val_loss(run_dir: Path) -> float:
    rows = csv.DictReader(next((run_dir / "logs").rglob("metrics.csv")).open())
    return next(float(r["val/loss"]) for r in rows if r.get("val/loss"))


def test_warm_start_begins_from_the_supervised_model_of_the_same_network(
    cells_dir: Path, tmp_path: Path, supervised
) -> None:
    # the official validation split (10 % of train, 24 images) makes the loss comparison below stable
    base = supervised
    options = {"mu": 1, "max_unlabelled": 32}
    cold = run_method("mixmatch", _config(cells_dir, tmp_path / "cold", val="official"), options)
    warm = run_method(
        "mixmatch", _config(cells_dir, tmp_path / "warm", val="official"), {**options, "warm_start": True}
    )
    (start,) = [d for d in (tmp_path / "teachers").iterdir() if d.is_dir()]
    assert json.loads((warm.run_dir / "config.json").read_text())["weights"] == str(
        start / "best.safetensors"
    )
    # the model it starts from is the supervised base itself: same network, data, split and seed
    assert json.loads((start / "config.json").read_text())["model"] == "mobilenetv2_100"
    assert json.loads((start / "metrics.json").read_text())["test"] == base.metrics["test"]
    # and it is loaded: after one head step the warm run fits the validation images better than a cold one
    assert _first_val_loss(warm.run_dir) < _first_val_loss(cold.run_dir) - 0.05
    fixmatch = run_method(
        "fixmatch", _config(cells_dir, tmp_path / "fixmatch", val="official"), {**options, "warm_start": True}
    )
    assert [d for d in (tmp_path / "teachers").iterdir() if d.is_dir()] == [start]  # trained once, reused
    assert json.loads((fixmatch.run_dir / "config.json").read_text())["weights"] == str(
        start / "best.safetensors"
    )
