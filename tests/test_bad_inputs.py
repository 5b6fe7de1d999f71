"""The bad-input corpus: every mistake a user can make gives one ``error:`` line, exit status 2, no
traceback, and leaves nothing behind that blocks the same command once the mistake is fixed.

Each case builds its bad input in ``tmp_path`` (no binary fixture); the few cases that need a
trained run share one tiny run (16 px, 1 epoch, ResNet-18 small input on a 3-class folder).
"""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from _shared import cli_error, run_cli
from PIL import Image

# the tiniest useful training run: 16 px, one epoch, no head stage, 6 labels per class
FAST = ["--model", "resnet18", "--small-input", "--image-size", "16", "--epochs", "1", "--head-epochs", "0"]
FAST += ["--n-labelled", "20", "--batch-size", "8", "--no-progress", "--no-tensorboard"]


# ------------------------------------------------------------------------------------------- inputs
def npz_file(path: Path, size: int = 16, **override: np.ndarray) -> Path:
    """A MedMNIST-like file of 3 classes (24 train, 6 val, 6 test images); ``override`` breaks it."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 24), ("val", 6), ("test", 6)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 3).reshape(-1, 1).astype(np.uint8)
    arrays.update(override)
    np.savez(path, **arrays)
    return path


def png(path: Path, seed: int, size: int = 16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


def folder(root: Path, layout: dict[str, dict[str, int]]) -> Path:
    """An image folder: {split: {class: number of 16 px images}}."""
    k = 0
    for split, classes in layout.items():
        for cls, n in classes.items():
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                png(root / split / cls / f"{i}.png", seed=k)
                k += 1
    return root


def _corrupt(tmp: Path) -> Path:
    path = tmp / "corrupt.npz"
    path.write_bytes(np.random.default_rng(1).bytes(4096))
    return path


def _truncated(tmp: Path) -> Path:
    data = npz_file(tmp / "whole.npz").read_bytes()
    path = tmp / "truncated.npz"
    path.write_bytes(data[: len(data) // 2])
    return path


def _pickled(tmp: Path) -> Path:
    path = tmp / "pickled.npz"
    path.write_bytes(pickle.dumps({"train_images": [1, 2, 3]}))
    return path


labels24 = (np.arange(24) % 3).reshape(-1, 1)
BAD_DATA: dict[str, tuple[Callable[[Path], Path], tuple[str, ...]]] = {
    "npz-random-bytes": (_corrupt, ("corrupt.npz", "is not a valid .npz file")),
    "npz-truncated": (_truncated, ("truncated.npz", "is not a valid .npz file")),
    "npz-pickle": (_pickled, ("pickled.npz", "is not a valid .npz file")),
    "npz-wrong-keys": (
        lambda t: (np.savez(t / "keys.npz", images=np.zeros((4, 8, 8), np.uint8)), t / "keys.npz")[1],
        ("keys.npz", "is not a MedMNIST file", "train_images"),
    ),
    "npz-length-mismatch": (
        lambda t: npz_file(t / "len.npz", train_labels=labels24[:23]),
        ("len.npz", "train_images holds 24 images but train_labels holds 23 labels"),
    ),
    "npz-1d-images": (
        lambda t: npz_file(t / "flat.npz", train_images=np.zeros(24, np.uint8)),
        ("flat.npz", "train_images has shape (24,)", "(N, H, W)"),
    ),
    "npz-float-labels": (
        lambda t: npz_file(t / "float.npz", train_labels=labels24 + 0.5),
        ("float.npz", "train_labels holds non-integer labels (e.g. 0.5)"),
    ),
    "npz-text-labels": (
        lambda t: npz_file(t / "text.npz", train_labels=np.array(["a", "b", "c"] * 8)),
        ("text.npz", "train_labels has shape (24,) and type <U1"),
    ),
    "npz-1x1-images": (
        lambda t: npz_file(t / "dots.npz", size=1),
        ("dots.npz", "train_images are 1x1 px, smaller than the minimum 8x8 px"),
    ),
    "folder-empty-class": (
        lambda t: folder(t / "ds", {"train": {"a": 4, "b": 0}}),
        ("contains no images",),
    ),
    "folder-single-class": (lambda t: folder(t / "ds", {"train": {"a": 4}}), ("at least 2",)),
    "folder-test-class-not-in-train": (
        lambda t: folder(t / "ds", {"train": {"a": 4, "b": 4}, "test": {"a": 2, "c": 2}}),
        ("'c'", "have no training images"),
    ),
    "folder-non-image-file": (
        lambda t: (
            (folder(t / "ds", {"train": {"a": 4, "b": 4}}) / "train/a/notes.txt").write_text("x") and t / "ds"
        ),
        ("notes.txt", "is not an image file"),
    ),
    "missing-path": (lambda t: t / "nope", ("nope", "does not exist")),
}


@pytest.mark.parametrize("command", ["split", "train"])
@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_bad_data_is_one_line_and_writes_nothing(capsys, tmp_path: Path, case: str, command: str) -> None:
    build, expected = BAD_DATA[case]
    data = build(tmp_path)
    out = tmp_path / ("s.json" if command == "split" else "run")
    text = cli_error(capsys, command, str(data), "--out", str(out))
    for part in expected:
        assert part in text, text
    assert "allow_pickle" not in text  # never an invitation to load pickles
    assert not out.exists()  # nothing written, so nothing blocks the fixed command


# ------------------------------------------------------------------------------------ train options
def _config(tmp: Path, text: str) -> list[str]:
    path = tmp / "c.yaml"
    path.write_text(text)
    return ["--config", str(path)]


BAD_OPTIONS: dict[str, tuple[Callable[[Path], list[str]], tuple[str, ...]]] = {
    "unknown-model": (lambda t: ["--model", "resnt18"], ("unknown model 'resnt18'", "resnet18")),
    "missing-weights": (lambda t: ["--weights", str(t / "w.pth")], ("w.pth", "--weights")),
    "image-too-small-for-model": (
        lambda t: ["--model", "squeezenet1_1", "--image-size", "8"],
        ("too small for squeezenet1_1", "--image-size"),
    ),
    "bad-monitor": (lambda t: ["--monitor", "loss"], ("--monitor must be one of macro_f1, accuracy",)),
    "config-unknown-key": (lambda t: _config(t, "epochz: 3\n"), ("unknown configuration key(s) epochz",)),
    "config-executes-no-code": (
        lambda t: _config(t, f"epochs: !!python/object/apply:os.system ['touch {t / 'pwned'}']\n"),
        ("cannot parse configuration file",),
    ),
    "accelerator-gpu-without-gpu": (
        lambda t: ["--accelerator", "gpu"],
        ("--accelerator gpu", "no usable GPU", "--accelerator auto or cpu"),
    ),
    "accelerator-unknown": (lambda t: ["--accelerator", "quantum"], ("--accelerator 'quantum' is unknown",)),
}


@pytest.fixture(scope="module")
def good_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return npz_file(tmp_path_factory.mktemp("good") / "good.npz")


@pytest.mark.parametrize("case", sorted(BAD_OPTIONS))
def test_bad_train_option_is_one_line_and_writes_nothing(
    capsys, tmp_path: Path, good_npz: Path, case: str
) -> None:
    build, expected = BAD_OPTIONS[case]
    if "gpu" in case and __import__("torch").cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = tmp_path / "run"
    text = cli_error(capsys, "train", str(good_npz), "--out", str(out), *FAST, *build(tmp_path))
    for part in expected:
        assert part in text, text
    assert not out.exists()
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--method", "plain_distillation", "--option", "teachers=resnt50"], "unknown model 'resnt50'"),
        (
            ["--method", "kd", "--option", "teachers=resnet18", "--option", "teacher_weights=t.pth"],
            "teacher_weights file 't.pth' does not exist",
        ),
        (["--method", "fixmatch", "--model", "resnt18"], "unknown model 'resnt18'"),
        (["--method", "fixmatch", "--accelerator", "cuda"], "--accelerator cuda"),
    ],
    ids=["unknown-teacher", "missing-teacher-weights", "unknown-student", "no-cuda"],
)
def test_bad_ssl_option_writes_nothing(capsys, tmp_path: Path, good_npz: Path, args, expected) -> None:
    """Methods check the student, the accelerator and the teachers before their folder exists."""
    if "cuda" in args and __import__("torch").cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = tmp_path / "run"
    text = cli_error(capsys, "ssl", str(good_npz), "--out", str(out), *FAST, *args)
    assert expected in text, text
    assert not out.exists() and not (tmp_path / "teachers").exists()


def test_offline_pretrained_fails_fast_and_writes_nothing(capsys, tmp_path: Path, good_npz: Path) -> None:
    start = time.perf_counter()
    out = tmp_path / "run"
    text = cli_error(capsys, "train", str(good_npz), "--model", "resnet18", "--pretrained", "--out", str(out))
    assert time.perf_counter() - start < 15
    assert "--weights" in text and not out.exists()


def test_bad_split_fraction(capsys, tmp_path: Path, good_npz: Path) -> None:
    text = cli_error(capsys, "split", str(good_npz), "--test-fraction", "1.5", "--out", str(tmp_path / "s"))
    assert "--test-fraction must be between 0 and 1" in text


def test_usage_error_exits_2_without_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "semicompact.cli.main", "train", "--epochs", "many", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "--epochs" in result.stderr


# --------------------------------------------------------------------------- runs: fix, reuse, resume
@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes x 10 train + 3 test images of 16 px, and one 1x1 image among the training images."""
    root = folder(tmp_path_factory.mktemp("tiny") / "data", {"train": dict.fromkeys("abc", 10)})
    folder(root, {"test": dict.fromkeys("abc", 3)})
    Image.new("RGB", (1, 1), (120, 40, 200)).save(root / "train" / "a" / "dot.png")
    return root


@pytest.fixture(scope="module")
def tiny_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run, made by fixing a failed command: the failure must not block the folder."""
    from semicompact.cli.main import main

    out = tmp_path_factory.mktemp("runs") / "run"
    with pytest.raises(SystemExit) as exc:  # the mistake: a GPU this machine does not have
        main(["train", str(tiny_data), "--out", str(out), *FAST, "--accelerator", "gpu"])
    assert exc.value.code == 2 or __import__("torch").cuda.is_available()
    with pytest.raises(SystemExit) as exc:  # the same command, fixed
        main(["train", str(tiny_data), "--out", str(out), *FAST, "--accelerator", "cpu"])
    assert exc.value.code in (0, None)
    return out


def test_the_fixed_command_trains_and_a_1x1_image_is_skipped_and_listed(tiny_run: Path) -> None:
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert metrics["skipped_images"] == 1
    skipped = (tiny_run / "skipped_images.tsv").read_text()
    assert "train/a/dot.png" in skipped and "1x1 px, smaller than the minimum 8x8 px" in skipped


def test_predict_refuses_a_1x1_image_like_training(
    capsys, tiny_run: Path, tiny_data: Path, tmp_path: Path
) -> None:
    dot = tiny_data / "train" / "a" / "dot.png"
    text = cli_error(capsys, "predict", str(tiny_run), str(dot), "--out", str(tmp_path / "p.csv"))
    assert "dot.png" in text and "1x1 px, smaller than the minimum 8x8 px" in text
    assert not (tmp_path / "p.csv").exists()
    good = tiny_data / "test" / "a" / "0.png"
    code, _, err = run_cli(
        capsys, "predict", str(tiny_run), str(good), str(dot), "--out", str(tmp_path / "p.csv")
    )
    assert code == 0, err
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 2  # header + the good image
    assert "dot.png" in err


def test_a_folder_holding_only_a_failed_start_is_reused(
    capsys, tiny_run: Path, tiny_data: Path, tmp_path: Path
) -> None:
    """config.json and split.json of a start that failed before training (other seed, other split)
    do not block the folder, and nothing of them leaks into the new run."""
    out = tmp_path / "run"
    out.mkdir()
    for name in ("config.json", "split.json"):
        shutil.copy(tiny_run / name, out / name)
    (out / "skipped_images.tsv").write_text("train/b/ghost.png\tstale\n")
    stale = json.loads((out / "split.json").read_text())
    assert stale["seed"] == 0
    code, _, err = run_cli(capsys, "train", str(tiny_data), "--out", str(out), *FAST, "--seed", "3")
    assert code == 0, err
    assert "held only a failed start" in " ".join(err.split())
    assert json.loads((out / "split.json").read_text())["seed"] == 3
    assert json.loads((out / "config.json").read_text())["seed"] == 3
    assert json.loads((out / "metrics.json").read_text())["skipped_images"] == 1  # the dot, no ghost
    assert "ghost" not in (out / "skipped_images.tsv").read_text()


def test_a_folder_in_use_by_another_command_is_not_cleared(
    capsys, tiny_run: Path, tiny_data: Path, tmp_path: Path
) -> None:
    """A run in progress has no checkpoint before its first validation: it looks like a failed
    start, but its folder is locked, so a second command is refused and nothing is cleared."""
    import subprocess
    import sys

    out = tmp_path / "busy"
    out.mkdir()
    shutil.copy(tiny_run / "config.json", out / "config.json")  # what a run writes at its start
    hold = "import sys, time; from pathlib import Path; from semicompact.training.rundir import claim; "
    hold += "claim(Path(sys.argv[1])); print('held', flush=True); time.sleep(120)"
    holder = subprocess.Popen([sys.executable, "-c", hold, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        text = cli_error(capsys, "train", str(tiny_data), "--out", str(out), *FAST)
        assert "is in use by another running semicompact command" in text and str(out) in text
        assert (out / "config.json").read_bytes() == (tiny_run / "config.json").read_bytes()
    finally:
        holder.kill()
        holder.wait()
    code, _, err = run_cli(capsys, "train", str(tiny_data), "--out", str(out), *FAST)  # free again
    assert code == 0, err


def test_a_started_run_is_not_overwritten(capsys, tiny_run: Path, tiny_data: Path) -> None:
    text = cli_error(capsys, "train", str(tiny_data), "--out", str(tiny_run), *FAST)
    assert "already holds a run" in text and "--resume" in text


def _copy(run: Path, tmp: Path) -> Path:
    return Path(shutil.copytree(run, tmp / "run"))


def test_resume_with_differing_options_lists_them(
    capsys, tiny_run: Path, tiny_data: Path, tmp_path: Path
) -> None:
    run = _copy(tiny_run, tmp_path)
    args = ["train", str(tiny_data), "--out", str(run), "--resume"]
    text = cli_error(capsys, *args, "--epochs", "3", "--lr", "0.01", "--seed", "0", "--num-workers", "0")
    assert f"options differ from the stored run in '{run / 'config.json'}'" in text
    assert "--epochs 1 -> 3; --lr 0.001 -> 0.01." in text  # seed is the same, num-workers is safe
    assert "start a new --out" in text
    other = tmp_path / "other"
    other.mkdir()
    text = cli_error(capsys, "train", str(other), "--out", str(run), "--resume")
    assert f"DATA {tiny_data} -> {other}" in text
    text = cli_error(capsys, "ssl", str(tiny_data), "--out", str(run), "--resume", "--method", "fixmatch")
    assert "--method supervised -> fixmatch" in text
    code, _, err = run_cli(capsys, *args, "--no-progress")  # the stored options, a safe one changed
    assert code == 0, err


def test_resume_nothing_to_resume(capsys, tmp_path: Path, tiny_data: Path) -> None:
    text = cli_error(capsys, "train", str(tiny_data), "--out", str(tmp_path / "empty"), "--resume", *FAST)
    assert "holds no run to resume" in text


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("this must never run",))


@pytest.mark.parametrize("damage", ["truncated", "pickle"])
def test_resume_from_an_unreadable_checkpoint(
    capsys, tiny_run: Path, tiny_data: Path, tmp_path: Path, damage: str
) -> None:
    import torch

    run = _copy(tiny_run, tmp_path)
    last = run / "checkpoints" / "last.ckpt"
    if damage == "truncated":
        last.write_bytes(last.read_bytes()[:5000])
    else:
        torch.save({"state_dict": {}, "payload": _Payload()}, last)
    args = ["train", str(tiny_data), "--out", str(run), "--resume"]
    text = cli_error(capsys, *args)
    assert f"the checkpoint '{last}' cannot be read" in text
    assert "never loaded unsafely" in text and "weights_only=False" not in text
    assert f"copy '{run / 'checkpoints' / 'best.ckpt'}' over it" in text
    assert f"delete '{run / 'checkpoints'}'" in text
    if damage == "truncated":  # the advice works
        shutil.copy(run / "checkpoints" / "best.ckpt", last)
        code, _, err = run_cli(capsys, *args)
        assert code == 0, err


def test_evaluate_without_split_json_says_so(capsys, tiny_run: Path, tmp_path: Path) -> None:
    run = _copy(tiny_run, tmp_path)
    (run / "split.json").unlink()
    code, _, err = run_cli(capsys, "evaluate", str(run), "--out", str(tmp_path / "m.json"))
    assert code == 0, err
    text = " ".join(err.split())
    assert f"note: '{run}' has no split.json; evaluating on a split rebuilt from its config.json" in text
    assert "(seed 0, 20 labelled per class)" in text
    stored = json.loads((run / "metrics.json").read_text())["test"]
    again = json.loads((tmp_path / "m.json").read_text())
    assert again["n"] == stored["n"] == 9 and again["confusion_matrix"] == stored["confusion_matrix"]


def test_evaluate_bad_subset(capsys, tiny_run: Path) -> None:
    assert "--subset must be one of" in cli_error(capsys, "evaluate", str(tiny_run), "--subset", "train")


def test_predict_missing_model(capsys, tmp_path: Path) -> None:
    assert "not found" in cli_error(capsys, "predict", str(tmp_path / "nomodel"), str(tmp_path))


def test_truncated_model_file(capsys, tiny_run: Path, tmp_path: Path) -> None:
    data = (tiny_run / "best.safetensors").read_bytes()
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(data[: len(data) // 2])
    text = cli_error(capsys, "predict", str(broken), str(tmp_path))
    assert "broken.safetensors" in text and "truncated" in text
