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
    metrics = run_compression("deep_compression", tiny, out, {"sparsity": 0.5})
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
