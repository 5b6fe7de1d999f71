"""The command line: help, the main commands, and one clear line (exit 2) for every bad input."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from _shared import train_args

from semicompact.cli.main import main


def run_cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    captured = capsys.readouterr()
    return int(exc.value.code or 0), captured.out, captured.err


@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "split", "models", "demo"])
def test_every_command_has_help(capsys, command: str) -> None:
    code, out, _ = run_cli(capsys, command, "--help")
    assert code == 0
    assert "Usage" in out


@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "split"])
def test_help_shows_examples(capsys, command: str) -> None:
    _, out, _ = run_cli(capsys, command, "--help")
    assert "semicompact " + command in out


def test_models_lists_the_paper_networks(capsys) -> None:
    code, out, _ = run_cli(capsys, "models")
    assert code == 0
    for name in (
        "resnet18",
        "mobilenetv2_100",
        "squeezenet1_1",
        "shufflenet_v2_x1_0",
        "mnasnet_100",
        "fbnetc_100",
        "resnet50_quantized",
    ):
        assert name in out
    code, out, _ = run_cli(capsys, "models", "--family", "quantized")
    assert "resnet18_quantized" in out and "mobilenetv2_100" not in out


def test_split_writes_a_manifest(capsys, cells_dir: Path, tmp_path: Path) -> None:
    out_file = tmp_path / "split.json"
    code, out, _ = run_cli(
        capsys, "split", str(cells_dir), "--n-labelled", "20", "--seed", "3", "--out", str(out_file)
    )
    assert code == 0
    manifest = json.loads(out_file.read_text())
    assert manifest["seed"] == 3 and len(manifest["labelled"]) == 80
    assert "labelled" in out and "manifest written" in out


def _error(capsys, *args: str) -> str:
    code, out, err = run_cli(capsys, *args)
    assert code == 2, (out, err)
    assert "Traceback" not in out + err
    text = " ".join(err.split())
    assert text.startswith("error:"), text
    return text


def test_unknown_model_suggests_names(capsys, cells_dir: Path, tmp_path: Path) -> None:
    text = _error(capsys, "train", str(cells_dir), "--model", "resnt18", "--out", str(tmp_path / "r"))
    assert "unknown model 'resnt18'" in text and "resnet18" in text


def test_missing_dataset(capsys, tmp_path: Path) -> None:
    text = _error(capsys, "train", str(tmp_path / "nope"), "--out", str(tmp_path / "r"))
    assert "nope" in text


def test_missing_weights_file(capsys, cells_dir: Path, tmp_path: Path) -> None:
    text = _error(
        capsys, "train", str(cells_dir), "--weights", str(tmp_path / "w.pth"), "--out", str(tmp_path / "r")
    )
    assert "w.pth" in text and "--weights" in text


def test_image_too_small_for_model(capsys, cells_dir: Path, tmp_path: Path) -> None:
    text = _error(
        capsys,
        "train",
        str(cells_dir),
        "--model",
        "squeezenet1_1",
        "--image-size",
        "8",
        "--out",
        str(tmp_path / "r"),
    )
    assert "too small for squeezenet1_1" in text and "--image-size" in text


def test_bad_option_value(capsys, cells_dir: Path, tmp_path: Path) -> None:
    text = _error(capsys, "train", str(cells_dir), "--monitor", "loss", "--out", str(tmp_path / "r"))
    assert "--monitor must be one of macro_f1, accuracy" in text


def test_config_file_with_unknown_key(capsys, cells_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("epochz: 3\n")
    text = _error(capsys, "train", str(cells_dir), "--config", str(config), "--out", str(tmp_path / "r"))
    assert "unknown configuration key(s) epochz" in text


def test_config_file_never_executes_code(capsys, cells_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    marker = tmp_path / "pwned"
    config.write_text(f"epochs: !!python/object/apply:os.system ['touch {marker}']\n")
    text = _error(capsys, "train", str(cells_dir), "--config", str(config), "--out", str(tmp_path / "r"))
    assert "cannot parse configuration file" in text
    assert not marker.exists()


def test_bad_split_fraction(capsys, cells_dir: Path, tmp_path: Path) -> None:
    text = _error(
        capsys, "split", str(cells_dir), "--test-fraction", "1.5", "--out", str(tmp_path / "s.json")
    )
    assert "--test-fraction must be between 0 and 1" in text


def test_offline_pretrained_fails_fast_with_advice(capsys, cells_dir: Path, tmp_path: Path) -> None:
    import time

    start = time.perf_counter()
    text = _error(
        capsys, "train", str(cells_dir), "--model", "resnet18", "--pretrained", "--out", str(tmp_path / "r")
    )
    assert time.perf_counter() - start < 15
    assert "--weights" in text


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


@pytest.fixture(scope="module")
def cli_run(cells_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("clirun") / "run"
    with pytest.raises(SystemExit) as exc:
        main(train_args(cells_dir, out))
    assert exc.value.code in (0, None)
    return out


def test_evaluate_matches_the_run(capsys, cli_run: Path, tmp_path: Path) -> None:
    out_file = tmp_path / "m.json"
    code, out, _ = run_cli(capsys, "evaluate", str(cli_run), "--out", str(out_file))
    assert code == 0 and "macro-F1" in out
    saved = json.loads((cli_run / "metrics.json").read_text())["test"]
    again = json.loads(out_file.read_text())
    assert again["macro_f1"] == pytest.approx(saved["macro_f1"])
    assert again["confusion_matrix"] == saved["confusion_matrix"]


def test_evaluate_bad_subset(capsys, cli_run: Path) -> None:
    text = _error(capsys, "evaluate", str(cli_run), "--subset", "train")
    assert "--subset must be one of" in text


def test_predict_folder_skips_corrupt_files(capsys, cli_run: Path, cells_dir: Path, tmp_path: Path) -> None:
    images = tmp_path / "imgs"
    images.mkdir()
    sources = sorted((cells_dir / "test").rglob("*.png"))[:5]
    for i, src in enumerate(sources):
        (images / f"{i}.png").write_bytes(src.read_bytes())
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage")
    out_file = tmp_path / "pred.csv"
    code, _, err = run_cli(capsys, "predict", str(cli_run), str(images), "--out", str(out_file))
    assert code == 0
    rows = list(csv.DictReader(out_file.open()))
    assert len(rows) == 5
    assert "broken.png" in " ".join(err.split())
    probs = [sum(float(v) for k, v in r.items() if k.startswith("p_")) for r in rows]
    assert all(abs(p - 1) < 1e-4 for p in probs)


def test_predict_missing_model(capsys, tmp_path: Path) -> None:
    text = _error(capsys, "predict", str(tmp_path / "nomodel"), str(tmp_path))
    assert "not found" in text


def _folder(root: Path, layout: dict[str, dict[str, int]], source: Path) -> Path:
    """A small image folder copied from the synthetic cells: {split: {class: n}}."""
    pngs = sorted((source / "train").rglob("*.png"))
    k = 0
    for split, classes in layout.items():
        for cls, n in classes.items():
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (root / split / cls / f"{i}.png").write_bytes(pngs[k % len(pngs)].read_bytes())
                k += 1
    return root


@pytest.mark.parametrize(
    ("layout", "extra", "expected"),
    [
        ({"train": {"a": 4, "b": 0}}, None, "contains no images"),
        ({"train": {"a": 4}}, None, "at least 2"),
        ({"train": {"a": 4, "b": 4}, "test": {"a": 2, "c": 2}}, None, "'c'"),
        ({"train": {"a": 4, "b": 4}}, ("train/a/notes.txt", b"hello"), "notes.txt"),
    ],
    ids=["empty-class", "single-class", "test-class-not-in-train", "non-image-file"],
)
def test_bad_dataset_layouts_give_one_line(
    capsys, tmp_path: Path, cells_dir: Path, layout, extra, expected
) -> None:
    root = _folder(tmp_path / "ds", layout, cells_dir)
    if extra:
        (root / extra[0]).write_bytes(extra[1])
    text = _error(capsys, "split", str(root), "--out", str(tmp_path / "s.json"))
    assert expected in text


def test_npz_with_wrong_keys(capsys, tmp_path: Path) -> None:
    import numpy as np

    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.zeros((4, 8, 8), np.uint8), labels=np.zeros((4, 1), np.uint8))
    text = _error(capsys, "split", str(bad), "--out", str(tmp_path / "s.json"))
    assert "bad.npz" in text and "train_images" in text


def test_corrupt_training_image_is_skipped_counted_and_reported(
    capsys, tmp_path: Path, cells_dir: Path
) -> None:
    """An unreadable image met while streaming does not stop training: it is skipped and listed."""
    root = _folder(tmp_path / "ds", {"train": {"a": 20, "b": 20}, "test": {"a": 5, "b": 5}}, cells_dir)
    (root / "train" / "a" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, *train_args(root, out, "--n-labelled", "30", pretrained=False))
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["skipped_images"] == 1
    assert "train/a/3.png" in (out / "skipped_images.tsv").read_text()
    assert "1 unreadable image(s) skipped" in " ".join(err.split())


def test_truncated_model_file(capsys, cli_run: Path, tmp_path: Path) -> None:
    data = (cli_run / "best.safetensors").read_bytes()
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(data[: len(data) // 2])
    text = _error(capsys, "predict", str(broken), str(tmp_path))
    assert "broken.safetensors" in text and "truncated" in text
