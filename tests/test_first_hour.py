"""The first hour with semicompact: file modes, results never overwritten, .scdc files, warnings."""

from __future__ import annotations

import csv
import json
import os
import stat
import sys
from pathlib import Path

import pytest
import torch

from semicompact.cli.main import main
from semicompact.io import write_json, write_text

sys.path.insert(0, str(Path(__file__).resolve().parent / "export"))
from tiny_run import build_tiny_run


@pytest.fixture(scope="module")
def tiny(cells_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_run(cells_dir, tmp_path_factory.mktemp("first-hour") / "run", steps=60)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(("umask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_respect_the_umask(tmp_path: Path, umask: int, expected: int) -> None:
    old = os.umask(umask)
    try:
        write_text(tmp_path / "a.txt", "x")
        write_json(tmp_path / "b.json", {"a": 1})
        write_text(tmp_path / "a.txt", "again")  # replacing keeps the ordinary mode too
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a.txt") == expected
    assert _mode(tmp_path / "b.json") == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.json"]  # no temporary left


def _run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, " ".join(captured.err.split())


def test_predict_never_overwrites_a_result(
    tiny: Path,
    cells_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    images = str(cells_dir / "test")
    assert _run_cli(["predict", str(tiny), images], capsys)[0] == 0
    assert _run_cli(["predict", str(tiny), images], capsys)[0] == 0
    first, second = tmp_path / "runs" / "predictions.csv", tmp_path / "runs" / "predictions-2.csv"
    assert first.read_text() == second.read_text()
    first.write_text("keep me")
    code, _, err = _run_cli(["predict", str(tiny), images, "--out", str(first)], capsys)
    assert code == 2
    assert (
        f"error: --out '{first}' already exists; pass --force to overwrite it or choose another --out" in err
    )
    assert first.read_text() == "keep me"
    assert _run_cli(["predict", str(tiny), images, "--out", str(first), "--force"], capsys)[0] == 0
    assert first.read_text() == second.read_text()


def _probabilities(path: Path) -> dict[str, list[float]]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {r["image"]: [float(v) for k, v in r.items() if k.startswith("p_")] for r in rows}


def test_deep_compression_file_works_from_the_cli(
    tiny: Path, cells_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from semicompact.compress.deep_compression import load_deep_compressed
    from semicompact.compress.run import run_compression
    from semicompact.data.images import load_image
    from semicompact.data.transforms import to_uint8_tensor

    out = tmp_path / "dc"
    metrics = run_compression("deep_compression", tiny, out, {"sparsity": 0.5}, finetune_epochs=1)
    err = capsys.readouterr().err  # redirected: one line per stage and per fine-tuning epoch
    assert "compress: deep_compression on mobilenetv2_100 (fine-tuning 1 epoch(s)) ..." in err
    assert "compress: evaluating the float and compressed models on 100 test images" in err
    epochs = [line for line in err.splitlines() if line.startswith("epoch 1/1 | step ")]
    assert len(epochs) == 2 and all("ETA 0:00:00" in line for line in epochs)  # prune, then share
    scdc = out / "deep_compressed.scdc"
    code, stdout, err = _run_cli(
        ["predict", str(scdc), str(cells_dir / "test"), "--out", str(tmp_path / "p.csv")], capsys
    )
    assert code == 0, err
    predicted = _probabilities(tmp_path / "p.csv")
    model, card = load_deep_compressed(scdc)
    assert len(predicted) == 100
    for image, probs in list(predicted.items())[:8]:
        x = to_uint8_tensor(load_image(image), card.image_size).unsqueeze(0).float() / 255
        with torch.inference_mode():
            expected = torch.softmax(model(x), dim=1)[0].tolist()
        assert probs == pytest.approx(expected, abs=2e-6)
    # evaluate finds the run's data through the compress folder's metrics.json, and so does a folder
    for target in (scdc, out):
        code, stdout, err = _run_cli(["evaluate", str(target)], capsys)
        assert code == 0, err
        assert f"macro-F1 {metrics['test']['compressed']['macro_f1']:.4f}" in stdout


def test_compress_warns_when_the_model_collapses(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "crushed"
    argv = ["compress", str(tiny), "--method", "deep_compression", "--out", str(out)]
    argv += ["--option", "sparsity=0.99", "--option", "conv_bits=1", "--option", "fc_bits=1"]
    code, _, err = _run_cli(argv, capsys)
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    drop = -100 * metrics["macro_f1_change"]
    assert drop > 20
    assert metrics["warnings"][-1].startswith(f"the compressed model is {drop:.1f} points of macro-F1 below")
    assert f"warning: the compressed model is {drop:.1f} points of macro-F1 below the float model" in err
    if metrics["collapse"]:
        assert f"warning: the compressed model collapsed: {metrics['collapse']}" in err


def test_redirected_training_prints_one_line_per_epoch_with_an_eta(
    cells_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import re

    out = tmp_path / "run"
    argv = ["train", str(cells_dir), "--out", str(out), "--model", "mobilenetv2_100", "--small-input"]
    argv += ["--image-size", "32", "--epochs", "2", "--pretrained", "--head-epochs", "1"]
    argv += ["--n-labelled", "10", "--no-tensorboard"]
    with pytest.raises(SystemExit) as done:  # stderr is captured here, not a terminal: plain lines
        main(argv)
    assert done.value.code == 0
    err = capsys.readouterr().err
    for noise in ("Tip:", "TPU available", "Loading `train_dataloader`", "COLLAPSED RUN"):
        assert noise not in err
    lines = [line for line in err.splitlines() if line.startswith("epoch ")]
    pattern = (
        r"epoch (\d)/3 \| step (\d+)/(\d+) \| loss \d+\.\d{4} \| val loss \d+\.\d{4} \| "
        r"val macro-F1 \d\.\d{3} \| val accuracy \d\.\d{3} \| \d:\d\d:\d\d elapsed \| ETA \d:\d\d:\d\d"
    )
    matches = [re.fullmatch(pattern, line) for line in lines]
    assert all(matches), lines
    epochs = json.loads((out / "metrics.json").read_text())["epochs_trained"]
    assert [int(m.group(1)) for m in matches] == list(range(1, epochs + 1))
    assert matches[-1].group(2) == matches[-1].group(3) or epochs < 3  # the last line is at the budget
    assert "ETA 0:00:00" in lines[-1] or epochs < 3
    assert "\r" not in err and "━" not in err  # no progress bar


def test_plain_progress_flushes_the_csv_log_every_epoch() -> None:
    from types import SimpleNamespace

    from semicompact.progress import format_duration
    from semicompact.training.progress import PlainProgress

    saved: list[int] = []
    logger = SimpleNamespace(save=lambda: saved.append(1))
    trainer = SimpleNamespace(
        is_global_zero=True,
        loggers=[logger, logger],
        callback_metrics={"val/macro_f1": 0.5},
        global_step=10,
        max_steps=40,
        max_epochs=-1,
        current_epoch=1,
        num_training_batches=5,
    )
    import io

    stream = io.StringIO()
    progress = PlainProgress(stream)
    progress.on_train_start(trainer, None)
    progress._first_step = 0
    progress.on_train_epoch_end(trainer, None)
    assert saved == [1, 1]
    assert stream.getvalue().startswith("epoch 2 | step 10/40 | val macro-F1 0.500 | ")
    assert format_duration(3725.4) == "1:02:05"


def test_library_noise_is_silenced() -> None:
    import subprocess

    code = (
        "import semicompact.training.run\n"
        "from lightning.pytorch.utilities import rank_zero_warn, rank_zero_info\n"
        "rank_zero_warn('Found 564 module(s) in eval mode at the start of training. This may ...')\n"
        "rank_zero_warn('Checkpoint directory /x/checkpoints exists and is not empty.')\n"
        "rank_zero_info('GPU available: False, used: False')\n"
        "rank_zero_warn('a warning the user can act on')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "a warning the user can act on" in result.stderr
    for noise in ("in eval mode", "exists and is not empty", "GPU available"):
        assert noise not in result.stderr


def test_offline_teacher_error_names_the_teacher_options(
    cells_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    argv = ["ssl", str(cells_dir), "--method", "plain_distillation", "--option", "teachers=resnet50"]
    argv += ["--out", str(tmp_path / "pd"), "--image-size", "32", "--small-input", "--no-progress"]
    code, _, err = _run_cli(argv, capsys)
    assert code == 2
    assert (
        "error: teacher resnet50: cannot download pretrained weights for resnet50 (no network access); "
        "give the teacher a local file with --option teacher_weights=PATH (one .pth/.safetensors per "
        "teacher, in the order of `teachers`), train it from scratch with --option "
        "teacher_pretrained=false, or pick a teacher whose ImageNet weights come with the install "
        "(mobilenetv2_100, tf_efficientnet_lite0, tf_efficientnet_lite1 or tf_efficientnet_lite2, "
        "e.g. --option teachers=tf_efficientnet_lite0)"
    ) in err
    assert "--no-pretrained" not in err and "Traceback" not in err


def test_the_default_teacher_works_offline() -> None:
    from semicompact.methods import get_method
    from semicompact.models.weights import packaged_weights

    for method in ("plain_distillation", "data_distillation"):
        assert get_method(method).config["teachers"] == ["tf_efficientnet_lite0"]
    # kd, the recommended default of `ssl`, distils two teachers; both must load without the hub
    assert get_method("kd").config["teachers"] == ["tf_efficientnet_lite0", "mobilenetv2_100"]
    for teacher in ("tf_efficientnet_lite0", "mobilenetv2_100"):
        assert packaged_weights(teacher) is not None  # ImageNet weights without the hub


def test_mistyped_paths_fail_before_torch_is_imported(tmp_path: Path) -> None:
    import subprocess

    missing = tmp_path / "nope"
    cases = [
        (["train", str(missing)], f"data path '{missing}' does not exist"),
        (["ssl", str(missing), "--method", "fixmatch"], f"data path '{missing}' does not exist"),
        (["train", str(tmp_path), "--weights", str(missing)], f"weights file '{missing}' not found"),
        (["train", str(tmp_path), "--split", str(missing)], f"split file '{missing}' does not exist"),
        (["evaluate", str(missing)], f"model file '{missing}' not found"),
        (["predict", str(missing), str(tmp_path)], f"model file '{missing}' not found"),
    ]
    code = (
        "import sys\n"
        "from semicompact.cli.main import main\n"
        "try:\n"
        "    main(sys.argv[1:])\n"
        "except SystemExit as e:\n"
        "    print(e.code, 'torch' in sys.modules, 'lightning' in sys.modules)\n"
    )
    for argv, message in cases:
        result = subprocess.run(
            [sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=300, cwd=tmp_path
        )
        assert result.stdout.split() == ["2", "False", "False"], (argv, result.stdout, result.stderr)
        assert message in " ".join(result.stderr.split())


def test_export_and_long_loops_print_lines_with_an_eta(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import io
    import re

    from semicompact.progress import iter_progress

    code, _, err = _run_cli(["export", str(tiny), "--format", "onnx", "--out", str(tmp_path / "e")], capsys)
    assert code == 0, err
    assert re.search(r"export: 1/1 onnx written and checked \| \d:\d\d:\d\d elapsed \| ETA 0:00:00", err)
    stream = io.StringIO()
    assert list(iter_progress(range(3), 3, "evaluate (test, batches)", every_s=0, stream=stream)) == [0, 1, 2]
    lines = stream.getvalue().splitlines()
    assert [line.split(" | ")[0] for line in lines] == [f"evaluate (test, batches): {k}/3" for k in (1, 2, 3)]
    assert lines[-1].endswith("| ETA 0:00:00")
    quiet = io.StringIO()
    assert list(iter_progress(range(3), 3, "x", every_s=60, stream=quiet)) == [0, 1, 2]
    assert quiet.getvalue() == ""  # short loops stay silent
