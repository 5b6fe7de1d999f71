"""The command line: help and the main commands (bad inputs: tests/test_bad_inputs.py)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from _shared import run_cli, train_args

from semicompact.cli.main import main


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
    # 20 labels per class, 4 of them for validation (inside the label budget, the default)
    assert manifest["seed"] == 3 and len(manifest["labelled"]) == 64 and len(manifest["val"]) == 16
    assert manifest["val_source"] == "labelled"
    assert "labelled" in out and "manifest written" in out


def test_split_never_overwrites_a_manifest_silently(capsys, cells_dir: Path, tmp_path: Path) -> None:
    from _shared import cli_error

    out_file = tmp_path / "split.json"
    out_file.write_text("{}")
    text = cli_error(capsys, "split", str(cells_dir), "--out", str(out_file))
    assert text == (
        f"error: --out '{out_file}' already exists (a split runs may depend on): "
        "pass --force to replace it or choose another --out"
    )
    assert out_file.read_text() == "{}"
    code, _, _ = run_cli(capsys, "split", str(cells_dir), "--out", str(out_file), "--force")
    assert code == 0 and json.loads(out_file.read_text())["seed"] == 0


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
