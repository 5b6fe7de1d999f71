"""int8 quantization (ptq via torchao PT2E and onnxruntime, qat) through `semicompact compress`."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "export"))
from tiny_run import build_tiny_run

from semicompact.cli.main import main


def run_cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    captured = capsys.readouterr()
    return int(exc.value.code or 0), captured.out, " ".join(captured.err.split())


@pytest.fixture(scope="module")
def run(cells_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_run(cells_dir, tmp_path_factory.mktemp("qrun") / "run")


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def test_ptq_pt2e_writes_an_int8_program_that_predicts_like_the_float_model(
    capsys, run: Path, tmp_path: Path
) -> None:
    import torch

    from semicompact.artifacts import load_model
    from semicompact.compress.quant_common import load_int8_pt2

    out = tmp_path / "ptq"
    code, stdout, _ = run_cli(capsys, "compress", str(run), "--method", "ptq", "--out", str(out))
    assert code == 0 and "smaller" in stdout
    m = _metrics(out)
    assert m["files"] == ["model_int8.pt2"]
    assert m["size_bytes"]["compressed"] == (out / "model_int8.pt2").stat().st_size
    assert (
        2.5 < m["size_ratio"] < 4.3
    )  # int8 weights; MobileNetV2's serialised graph (~0.75 MB) costs the rest
    assert m["test"]["float"]["n"] == m["test"]["compressed"]["n"] == 100
    assert abs(m["macro_f1_change"]) < 0.1
    assert m["test"]["float"]["macro_f1"] > 0.6  # the tiny run is a real classifier
    loaded, meta = load_int8_pt2(out / "model_int8.pt2")
    classes = json.loads((run / "split.json").read_text())["classes"]
    assert json.loads(meta["classes"]) == classes
    float_model, _ = load_model(run)
    # real test images (noise lies outside the calibration range: single probabilities moved by 0.6)
    from semicompact.training.run import load_run_data

    images, _ = next(iter(load_run_data(run).test_dataloader()))
    x = images[:16].float() / 255.0
    with torch.no_grad():
        p, q = torch.softmax(float_model(x), 1), torch.softmax(loaded(x), 1)
    assert (p - q).abs().mean() < 0.05 and (p.argmax(1) == q.argmax(1)).float().mean() >= 0.9
    assert not (p == q).all()  # really quantized


def test_ptq_onnx_backend_quantizes_convolutions(capsys, run: Path, tmp_path: Path) -> None:
    import onnx

    out = tmp_path / "ptq-onnx"
    code, _, _ = run_cli(
        capsys,
        "compress",
        str(run),
        "--method",
        "ptq",
        "--option",
        "backend=onnx",
        "--option",
        "calibration=unlabelled",
        "--option",
        "calib_images=64",
        "--out",
        str(out),
    )
    assert code == 0
    m = _metrics(out)
    assert m["options"]["backend"] == "onnx" and m["notes"]["calibration_images"] == 64
    graph = onnx.load(str(out / "model_int8.onnx")).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("DequantizeLinear") > ops.count("Conv") > 10
    assert abs(m["macro_f1_change"]) < 0.1 and m["size_ratio"] > 3


def test_target_option_reaches_the_onnx_backend(capsys, run: Path, tmp_path: Path) -> None:
    """``--target`` alone selects the onnx backend and the int8 types of that CPU, not of this one."""
    from semicompact.export.targets import TARGETS

    out = tmp_path / "ptq-avx2"
    args = ["--method", "ptq", "--target", "x86-avx2", "--option", "calib_images=16", "--max-test", "16"]
    code, _, err = run_cli(capsys, "compress", str(run), *args, "--out", str(out))
    assert code == 0, err
    m = _metrics(out)
    assert m["options"]["backend"] == "onnx" and m["options"]["target"] == "x86-avx2"
    choice = m["notes"]["int8_choice"]
    assert m["notes"]["target"] == choice["target"] == "x86-avx2"
    assert choice["target_how"].startswith("given; this CPU is")
    assert choice["agreement_on"]["images"] == "the run's unlabelled pool"  # not the calibration images
    assert [c["scheme"] for c in choice["candidates"]] == list(TARGETS["x86-avx2"].candidates)
    assert (out / "model_int8.onnx").is_file()


@pytest.mark.slow  # about a minute on 2 busy cores
def test_qat_fine_tunes_with_distillation_and_converts(capsys, run: Path, tmp_path: Path) -> None:
    out = tmp_path / "qat"
    code, _, _ = run_cli(
        capsys,
        "compress",
        str(run),
        "--method",
        "qat",
        "--finetune-epochs",
        "1",
        "--kd-alpha",
        "0.5",
        "--finetune-lr",
        "1e-5",
        "--out",
        str(out),
    )
    assert code == 0
    m = _metrics(out)
    assert m["notes"]["epochs"] == 1 and m["finetune"]["kd_alpha"] == 0.5
    assert m["notes"]["zero_bn_gammas_nudged"] == 0  # a trained network has none
    assert m["size_ratio"] > 2.5
    assert m["macro_f1_change"] > -0.15


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "nosuch"], "unknown --method 'nosuch'"),
        (["--method", "ptq", "--option", "colour=red"], "unknown option(s) colour"),
        (["--method", "ptq", "--option", "calib_images=many"], "expected a int"),
        (["--method", "ptq", "--option", "backend=tensorrt"], "backend=tensorrt"),
        (["--method", "ptq", "--option", "calibration=unlabeled"], "calibration=unlabeled"),
        (
            ["--method", "ptq", "--option", "backend=onnx", "--option", "int8_weights=int4"],
            "--option int8_weights=int4: use one of auto, uint8, int8, int8-7bit, s8s8, int8-early-float, "
            "int8-7bit-early-float, uint8-early-float",
        ),
        (["--method", "ptq", "--kd-alpha", "2"], "--kd-alpha"),
        (
            ["--method", "ptq", "--target", "riscv"],
            "--target riscv: use one of auto, x86-amx, x86-vnni, x86-avx2, arm64-dotprod, arm64, generic",
        ),
        (["--method", "prune", "--target", "x86-avx2"], "--target applies to --method ptq only"),
        (
            ["--method", "ptq", "--option", "backend=pt2e", "--target", "x86-avx2"],
            "--target x86-avx2 needs --option backend=onnx, not backend=pt2e",
        ),
    ],
)
def test_bad_options_are_one_line_and_write_nothing(
    capsys, run: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "o"
    code, _, err = run_cli(capsys, "compress", str(run), *args, "--out", str(out))
    assert code == 2 and message in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_calibration_data_missing(capsys, run: Path, tmp_path: Path) -> None:
    lone = tmp_path / "m.safetensors"
    shutil.copy(run / "best.safetensors", lone)
    code, _, err = run_cli(capsys, "compress", str(lone), "--method", "ptq", "--out", str(tmp_path / "o"))
    assert code == 2 and "needs training images" in err and "--data" in err
    assert not (tmp_path / "o").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_existing_output_is_not_overwritten(capsys, run: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    code, _, err = run_cli(capsys, "compress", str(run), "--method", "ptq", "--out", str(out))
    assert code == 2 and "--overwrite" in err
    assert (out / "keep.txt").read_text() == "x"


def test_help_lists_methods_and_options(capsys) -> None:
    code, out, _ = run_cli(capsys, "compress", "--help")
    assert code == 0
    assert "ptq: backend='pt2e'" in out and "qat:" in out


def test_parse_options_types() -> None:
    from semicompact.compress.run import parse_options
    from semicompact.errors import ConfigError

    defaults = {"ratio": 0.5, "n": 3, "flag": True, "kind": "a", "free": None}
    got = parse_options(["ratio=0.25", "n=7", "flag=no", "kind=b", "free=[1, 2]"], defaults)
    assert got == {"ratio": 0.25, "n": 7, "flag": False, "kind": "b", "free": [1, 2]}
    with pytest.raises(ConfigError, match="key=value"):
        parse_options(["ratio"], defaults)


@pytest.mark.slow
def test_paper_quantized_resnet18_trains_in_float_then_ptq(cells_dir: Path, tmp_path: Path) -> None:
    """The registered resnet18_quantized (torchvision quantizable ResNet) goes through PT2E ptq."""
    from semicompact.compress.run import run_compression
    from semicompact.training import TrainConfig, fit

    result = fit(
        TrainConfig(
            data=str(cells_dir),
            out=str(tmp_path / "r"),
            model="resnet18_quantized",
            small_input=True,
            image_size=32,
            epochs=2,
            head_epochs=0,
            progress=False,
            tensorboard=False,
        )
    )
    m = run_compression("ptq", result.run_dir, tmp_path / "q")
    assert 3.0 < m["size_ratio"] < 4.3
    assert abs(m["macro_f1_change"]) < 0.1
