"""semicompact export / predict (ONNX, no torch) / profile on a tiny trained run."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from semicompact.cli.main import main
from semicompact.export.targets import TARGETS, detect_target


def run_cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    captured = capsys.readouterr()
    return int(exc.value.code or 0), captured.out, " ".join(captured.err.split())


@pytest.fixture(scope="module")
def exported(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("exp") / "export"
    with pytest.raises(SystemExit) as exc:
        # the tiny run's int8 file agrees on 96% of its 100 test images; the default gate is 97%
        main(
            [
                *("export", str(tiny_run), "--format", "onnx,onnx-int8,torchscript", "--out", str(out)),
                *("--min-agreement", "0.93"),
            ]
        )
    assert exc.value.code in (0, None)
    return out


def test_export_files_carry_metadata(exported: Path, tiny_run: Path) -> None:
    import onnx

    from semicompact.export.torchscript import load_torchscript

    classes = json.loads((tiny_run / "split.json").read_text())["classes"]
    for name, precision in (("model_fp32.onnx", "fp32"), ("model_int8.onnx", "int8")):
        meta = {p.key: p.value for p in onnx.load(str(exported / name)).metadata_props}
        assert json.loads(meta["classes"]) == classes
        assert meta["image_size"] == "32" and meta["precision"] == precision
        assert json.loads(meta["mean"]) == pytest.approx([0.485, 0.456, 0.406])
    _, meta = load_torchscript(exported / "model.ts")
    assert json.loads(meta["classes"]) == classes
    # int8 weights: about a quarter of the fp32 file
    assert (exported / "model_int8.onnx").stat().st_size < 0.4 * (exported / "model_fp32.onnx").stat().st_size
    assert not [p for p in exported.parent.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_every_export_is_checked_on_real_images(exported: Path) -> None:
    fp32 = json.loads((exported / "model_fp32.onnx.check.json").read_text())
    ts = json.loads((exported / "model.ts.check.json").read_text())
    int8 = json.loads((exported / "model_int8.onnx.check.json").read_text())
    assert fp32["n"] == ts["n"] == int8["n"] == 100  # the run's test split
    assert fp32["top1_agreement"] == 1.0 and fp32["max_prob_diff"] < 1e-4
    assert ts["top1_agreement"] == 1.0 and ts["max_prob_diff"] < 1e-5
    # the int8 types are the target's (this CPU's): a VNNI machine keeps full int8 weights, an
    # AVX2-only one 7-bit weights or uint8 (int8 weights gave 0.83 there, from saturation)
    host = TARGETS[detect_target()[0]]
    assert int8["target"] == host.name and int8["int8_weights"] in host.candidates
    assert int8["int8_choice"]["candidates"][0]["scheme"] == host.candidates[0]
    assert int8["gate"] == {
        "min_agreement": 0.93,
        "max_f1_drop": 0.01,
        "passed": True,
        "failures": [],
        "allowed_by_user": False,
    }
    assert int8["top1_agreement"] >= 0.93 and int8["macro_f1_change"] >= -0.01
    assert fp32["macro_f1"] == fp32["reference_macro_f1"] > 0.5  # labelled test images: macro-F1 too
    assert 0 < int8["mean_max_prob_diff"] < 0.1  # int8 really differs, but not much on average
    assert int8["mean_max_prob_diff"] <= int8["max_prob_diff"] <= 1
    assert int8["calibration_images"] > 0


def test_predict_onnx_does_not_import_torch(
    exported: Path, tiny_run: Path, cells_dir: Path, tmp_path: Path
) -> None:
    images = tmp_path / "imgs"
    images.mkdir()
    for i, src in enumerate(sorted((cells_dir / "test").rglob("*.png"))[:6]):
        shutil.copy(src, images / f"{i}.png")
    (images / "broken.png").write_bytes(b"not an image")
    onnx_csv, st_csv = tmp_path / "onnx.csv", tmp_path / "st.csv"
    code = (
        "import sys\nfrom semicompact.cli.main import main\n"
        f"args = ['predict', {str(exported / 'model_fp32.onnx')!r}, {str(images)!r}]\n"
        f"args += ['--out', {str(onnx_csv)!r}]\n"
        "try:\n    main(args)\n"
        "except SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "NO-TORCH" in result.stdout
    assert "broken.png" in result.stderr
    with pytest.raises(SystemExit):
        main(["predict", str(tiny_run), str(images), "--out", str(st_csv)])
    onnx_rows, st_rows = list(csv.reader(onnx_csv.open())), list(csv.reader(st_csv.open()))
    assert onnx_rows[0] == st_rows[0] and len(onnx_rows) == len(st_rows) == 7
    for a, b in zip(onnx_rows[1:], st_rows[1:], strict=True):
        assert a[:2] == b[:2]  # same image, same class
        assert [float(v) for v in a[2:]] == pytest.approx([float(v) for v in b[2:]], abs=1e-4)


def test_export_failure_is_one_line_and_leaves_nothing(
    capsys, tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    def broken(*args, **kwargs):
        raise RuntimeError("Unsupported operator aten::frobnicate")

    monkeypatch.setattr(torch.onnx, "export", broken)
    out = tmp_path / "exp"
    code, _, err = run_cli(capsys, "export", str(tiny_run), "--format", "onnx", "--out", str(out))
    assert code == 2 and "Traceback" not in err
    assert "cannot be exported to ONNX" in err and "aten::frobnicate" in err
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_export_needs_real_images_and_calibration(capsys, tiny_run: Path, tmp_path: Path) -> None:
    lone = tmp_path / "model.safetensors"
    shutil.copy(tiny_run / "best.safetensors", lone)
    code, _, err = run_cli(capsys, "export", str(lone), "--format", "onnx", "--out", str(tmp_path / "o"))
    assert code == 2 and "checked on real images" in err
    code, _, err = run_cli(
        capsys, "export", str(tiny_run), "--format", "tflite", "--out", str(tmp_path / "o")
    )
    assert code == 2 and "--format" in err
    code, _, err = run_cli(
        capsys, "export", str(tiny_run), "--int8-weights", "int4", "--out", str(tmp_path / "o")
    )
    choices = "auto, uint8, int8, int8-7bit, s8s8, int8-early-float, int8-7bit-early-float, uint8-early-float"
    assert code == 2 and f"--int8-weights int4: use one of {choices}" in err
    code, _, err = run_cli(
        capsys, "export", str(tiny_run), "--target", "x86-sse", "--out", str(tmp_path / "o")
    )
    assert code == 2 and "--target x86-sse: use one of auto, x86-amx, x86-vnni, x86-avx2" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("weights", "dtype", "low", "high"),
    [("uint8", "uint8", 0, 255), ("int8", "int8", -127, 127), ("int8-7bit", "int8", -64, 64)],
)
def test_int8_weight_types_are_what_they_say(
    exported: Path, tmp_path: Path, weights: str, dtype: str, low: int, high: int
) -> None:
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from semicompact.export.onnx import quantize_onnx

    rng = np.random.default_rng(0)
    batches = [rng.random((8, 3, 32, 32), dtype=np.float32) for _ in range(2)]
    out = quantize_onnx(exported / "model_fp32.onnx", tmp_path / "q.onnx", batches, weights=weights)
    graph = onnx.load(str(out)).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    conv_weights = [
        inits[node.input[0]]
        for node in graph.node
        if node.op_type == "DequantizeLinear" and node.input[0] in inits and inits[node.input[0]].ndim == 4
    ]
    assert conv_weights and {w.dtype.name for w in conv_weights} == {dtype}
    # the full range is used, and no more: 7-bit weights make 2 x 255 x 64 fit in int16
    assert min(int(w.min()) for w in conv_weights) == low
    assert max(int(w.max()) for w in conv_weights) == high


def test_profile_run_and_registered_models(capsys, tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "profile.json"
    code, stdout, _ = run_cli(
        capsys,
        "profile",
        str(tiny_run),
        "--models",
        "resnet18",
        "--image-size",
        "32",
        "--runs",
        "3",
        "--warmup",
        "1",
        "--batch",
        "4",
        "--out",
        str(out),
    )
    host = TARGETS[detect_target()[0]]
    assert code == 0 and "| network |" in stdout and f"(target {host.name})" in stdout
    rows = json.loads(out.read_text())
    run_row, r18 = rows
    assert {run_row["int8_weights"], r18["int8_weights"]} <= set(host.candidates)
    assert run_row["train_time_per_epoch_s"] == 12.5  # from the run's metrics.json
    assert run_row["size_bytes"]["safetensors_fp32"] == (tiny_run / "best.safetensors").stat().st_size
    assert r18["params"] == pytest.approx(11.18e6, rel=0.01)
    for row in rows:
        rt = row["runtimes"]
        assert list(rt) == ["eager", "onnx", "onnx-int8"]
        assert all(r["latency_ms"] > 0 and r["throughput_img_s"] > 0 for r in rt.values())
        assert rt["onnx-int8"]["latency_ratio_vs_onnx_fp32"] == pytest.approx(
            rt["onnx-int8"]["latency_ms"] / rt["onnx"]["latency_ms"]
        )
        # a note says so whenever int8 is not faster than the fp32 file
        slow = rt["onnx-int8"]["latency_ratio_vs_onnx_fp32"] >= 0.9
        assert any("not faster" in r for r in row["remarks"]) == slow
        assert ("not faster" in stdout) >= slow
        assert row["size_bytes"]["onnx-int8_file"] < 0.4 * row["size_bytes"]["onnx_file"]
    assert out.with_suffix(".md").read_text().count("\n") == 4


def test_macs_match_the_published_resnet18_count() -> None:
    from semicompact.export.profile import count_macs
    from semicompact.models import create_model

    assert count_macs(create_model("resnet18", num_classes=1000), 224) == pytest.approx(1.814e9, rel=0.01)


def test_histogram_calibration_takes_a_smaller_last_batch(exported: Path, tmp_path: Path) -> None:
    import numpy as np
    import onnx

    from semicompact.export.onnx import equal_batches, quantize_onnx

    rng = np.random.default_rng(0)
    batches = [rng.random((n, 3, 32, 32), dtype=np.float32) for n in (8, 8, 5)]
    assert [len(b) for b in equal_batches(batches)] == [21]  # the largest divisor of 21 up to 32
    assert [len(b) for b in equal_batches(batches[:1] * 5)] == [20, 20]
    for method in ("entropy", "percentile"):  # onnxruntime alone fails on the 5-image batch
        out = quantize_onnx(
            exported / "model_fp32.onnx", tmp_path / f"{method}.onnx", batches, calibrate_method=method
        )
        assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(out)).graph.node)


def _vpmaddubsw_dot(a: Any, w: Any) -> Any:
    """AVX2's u8 x s8 dot product as onnxruntime runs it without VNNI: adjacent products are added
    in int16 with saturation (vpmaddubsw), then the pairs are summed in int32."""
    import numpy as np

    prod = a.astype(np.int32)[:, None, :] * w.astype(np.int32)[None, :, :]
    pairs = np.clip(prod[..., 0::2] + prod[..., 1::2], -32768, 32767)
    return pairs.sum(-1)


@pytest.mark.parametrize(
    ("weights", "saturates"), [("int8", True), ("int8-7bit", False), ("int8-7bit-early-float", False)]
)
def test_avx2_saturation_is_simulated_and_the_avx2_choice_avoids_it(
    exported: Path, tmp_path: Path, weights: str, saturates: bool
) -> None:
    """The saturation on x86 without VNNI, simulated on the real quantized weights of the tiny run:
    full int8 weights overflow int16 on bright inputs, 7-bit weights (the x86-avx2 choice) never do."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from semicompact.export.onnx import quantize_onnx

    assert TARGETS["x86-avx2"].candidates[0] == "int8-7bit"  # the documented choice for that target
    rng = np.random.default_rng(0)
    batches = [rng.random((8, 3, 32, 32), dtype=np.float32)]
    out = quantize_onnx(exported / "model_fp32.onnx", tmp_path / "q.onnx", batches, weights=weights)
    graph = onnx.load(str(out)).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    w = np.concatenate(
        [
            inits[n.input[0]].reshape(inits[n.input[0]].shape[0], -1)[:, :64]
            for n in graph.node
            if n.op_type == "DequantizeLinear"
            and inits.get(n.input[0], np.zeros(0)).ndim == 4
            and inits[n.input[0]].reshape(inits[n.input[0]].shape[0], -1).shape[1] >= 64
        ]
    )
    # activations: random uint8 and the worst case (all 255, where a ReLU saturates a bright image)
    a = np.concatenate([rng.integers(0, 256, (16, 64)), np.full((1, 64), 255)]).astype(np.uint8)
    exact = a.astype(np.int64) @ w.astype(np.int64).T
    assert (np.array_equal(_vpmaddubsw_dot(a, w), exact)) != saturates
    worst = (255 * (np.abs(w[:, 0::2].astype(np.int32)) + np.abs(w[:, 1::2].astype(np.int32)))).max()
    assert (worst > 32767) == saturates


def test_target_detection_reads_the_cpu_flags() -> None:
    from semicompact.export.targets import detect_target

    x86 = "flags\t\t: fpu sse2 avx avx2 fma\n"
    assert detect_target(x86, "x86_64")[0] == "x86-avx2"
    assert detect_target(x86.replace("avx2", "avx2 avx512f avx512_vnni"), "x86_64")[0] == "x86-vnni"
    assert detect_target(x86.replace("avx2", "avx2 avx_vnni"), "x86_64")[0] == "x86-vnni"
    assert detect_target(x86 + "flags : amx_tile amx_int8\n", "x86_64")[0] == "x86-amx"
    assert detect_target("flags : fpu sse2\n", "x86_64")[0] == "generic"
    assert detect_target("Features\t: fp asimd asimddp\n", "aarch64")[0] == "arm64-dotprod"
    assert detect_target("Features\t: fp asimd\n", "aarch64")[0] == "arm64"
    assert detect_target("", "riscv64")[0] == "generic"


def test_cpuid_overrides_the_flags_an_emulator_passes_through() -> None:
    """qemu-x86_64 -cpu Haswell on a Zen 4 host: /proc/cpuinfo says VNNI, CPUID (and MLAS) says AVX2."""
    from semicompact.export.targets import cpuid_features, detect_target

    zen4 = "flags\t\t: fpu sse2 avx avx2 fma avx512f avx512_vnni\n"
    haswell = {"avx2": True, "avx512_vnni": False, "amx": False}
    target, why = detect_target(zen4, "x86_64", cpuid=haswell)
    assert target == "x86-avx2" and "CPUID denies avx512_vnni" in why
    vnni = {"avx2": True, "avx512_vnni": True, "amx": False}
    assert detect_target(zen4, "x86_64", cpuid=vnni)[0] == "x86-vnni"
    no_avx2 = {"avx2": False, "avx512_vnni": False, "amx": False}
    assert detect_target(zen4, "x86_64", cpuid=no_avx2)[0] == "generic"
    amx = "flags : avx2 avx512_vnni amx_tile amx_int8\n"
    assert detect_target(amx, "x86_64", cpuid=vnni)[0] == "x86-vnni"
    here = cpuid_features()
    assert here is None or set(here) == {"avx2", "avx512_vnni", "amx"}


def test_gate_verdicts_have_exact_numbers() -> None:
    from semicompact.export.check import gate_failures

    check = {"n": 256, "top1_agreement": 0.8984, "macro_f1": 0.80, "reference_macro_f1": 0.82}
    check["macro_f1_change"] = check["macro_f1"] - check["reference_macro_f1"]
    assert gate_failures(check) == [
        "top-1 agreement 89.84% < 97.00%",
        "macro-F1 0.8000 vs 0.8200 (-2.00 points, limit -1.00)",
    ]
    assert gate_failures(check, min_agreement=0.89, max_f1_drop=0.02) == []
    assert gate_failures({**check, "macro_f1_change": -0.01}, 0.8) == []  # exactly 1 point passes


def test_export_gate_refuses_and_leaves_nothing_unless_allowed(
    capsys, tiny_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "gated"
    args = ["export", str(tiny_run), "--format", "onnx,onnx-int8", "--target", "x86-avx2"]
    code, _, err = run_cli(capsys, *args, "--out", str(out), "--min-agreement", "1.0")
    assert code == 2 and "error: model_int8.onnx fails the export check on 100 test images" in err
    assert "< 100.00%; nothing was written" in err and "--allow-disagreement" in err
    assert list(tmp_path.iterdir()) == []
    code, stdout, _ = run_cli(
        capsys, *args, "--out", str(out), "--min-agreement", "1.0", "--allow-disagreement"
    )
    assert code == 0 and "warning: below the gate" in stdout
    check = json.loads((out / "model_int8.onnx.check.json").read_text())
    assert check["gate"]["passed"] is False and check["gate"]["allowed_by_user"] is True
    # another CPU than this one: the candidates are not timed, the target's first safe type is kept
    summary = json.loads((out / "export.json").read_text())["int8"]
    assert summary["target"] == "x86-avx2"
    if detect_target()[0] != "x86-avx2":
        assert "not timed" in summary["target_how"] and summary["scheme"] == "int8-7bit"
        assert all("latency_ms" not in c for c in summary["candidates"])
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(out / "model_int8.onnx")).metadata_props}
    assert (
        meta["int8_target"] == "x86-avx2" and json.loads(meta["int8_choice"])["scheme"] == summary["scheme"]
    )


def test_early_float_candidate_keeps_the_high_resolution_convolutions_float(
    exported: Path, tiny_run: Path, tmp_path: Path
) -> None:
    """MobileNetV2 loses most of its int8 agreement in its first convolutions (BloodMNIST, 64 px:
    92.7 % -> 97.2 % with them in float): on VNNI/AMX the candidate that keeps them float is tried
    after plain int8, judged on the run's unlabelled images (training images overstate agreement)."""
    import numpy as np
    import onnx

    from semicompact.export.onnx import early_convolutions, quantize_onnx

    assert TARGETS["x86-vnni"].candidates == ("int8", "int8-early-float", "s8s8")
    assert TARGETS["x86-amx"].candidates == ("int8", "int8-early-float", "s8s8")
    # without VNNI the same rule with 7-bit weights (BloodMNIST MobileNetV2 under an emulated Haswell:
    # int8-7bit 92.8 % agreement, refused by the gate)
    assert TARGETS["x86-avx2"].candidates == (
        "int8-7bit",
        "int8-7bit-early-float",
        "uint8",
        "uint8-early-float",
    )
    fp32 = exported / "model_fp32.onnx"
    rng = np.random.default_rng(0)
    out = quantize_onnx(
        fp32, tmp_path / "q.onnx", [rng.random((8, 3, 32, 32), dtype=np.float32)], weights="int8-early-float"
    )
    proto = onnx.load(str(out))
    graph = proto.graph
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    int8_weights = {n.name: n.input[1] in dequantized for n in graph.node if n.op_type == "Conv"}
    early = [n for n in early_convolutions(onnx.load(str(fp32))) if n in int8_weights]
    # small-input MobileNetV2 at 32 px: the stem, blocks 0 and 1 and block 2's expansion and
    # depthwise convolutions read maps larger than 32 / 4 = 8 px; everything from 8 px on is int8
    assert len(early) == 11 and len(int8_weights) == 52
    assert early[-1] == "/net/blocks/blocks.2/blocks.2.0/conv_dw/Conv"
    assert sorted(n for n, q in int8_weights.items() if not q) == sorted(early)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["int8_scheme"] == "int8-early-float"
    assert meta["quantization"].endswith("weights=int8-early-float, 19 early nodes in float")  # 11 + 8 ReLU6
    # export judged its candidates on the unlabelled pool, not on the calibration (training) images
    summary = json.loads((exported / "export.json").read_text())["int8"]
    pool = len(json.loads((tiny_run / "split.json").read_text())["unlabelled"])
    assert summary["agreement_on"] == {"images": "the run's unlabelled pool", "n": min(512, pool)}
    assert all("agreement" in c for c in summary["candidates"])


def test_a_pick_that_fails_the_export_check_gives_way_to_the_next(exported: Path, tmp_path: Path) -> None:
    """The pool said yes but the check images say no (a BloodMNIST EfficientNet-Lite0: plain int8
    98.8 % on the pool, 96.99 % on test): the next passing candidate is tried before failing."""
    import numpy as np
    import onnx

    from semicompact.export.int8 import choose_int8

    rng = np.random.default_rng(0)
    batches = [rng.random((8, 3, 32, 32), dtype=np.float32)]
    tried: list[str] = []

    def accept_second(file: Path) -> str | None:
        tried.append(file.stem)
        return "top-1 agreement 96.99% < 97.00%" if len(tried) == 1 else None

    kw = {"target": "auto", "min_agreement": 0.0, "runs": 3, "warmup": 1}  # every candidate passes the pool
    choice = choose_int8(
        exported / "model_fp32.onnx", tmp_path / "a.onnx", batches, accept=accept_second, **kw
    )
    timed = [c for c in choice["candidates"] if "latency_ms" in c]
    if len(timed) == len(choice["candidates"]):  # this CPU is the target: the fastest went first
        assert tried[0] == min(timed, key=lambda c: c["latency_ms"])["scheme"]
    assert len(tried) == 2 and choice["scheme"] == tried[1] != tried[0]
    assert choice["failed_export_check"] == [
        {"scheme": tried[0], "reason": "top-1 agreement 96.99% < 97.00%"}
    ]
    assert f"then {tried[0]} failed the export check" in choice["why"] and choice["why"].endswith(
        f"so {tried[1]} was kept"
    )
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "a.onnx")).metadata_props}
    assert meta["int8_scheme"] == tried[1]  # the file written is the one kept
    # nothing passes: the first pick stays (the export's gate then refuses it with its own line)
    tried.clear()
    choice = choose_int8(
        exported / "model_fp32.onnx",
        tmp_path / "b.onnx",
        batches,
        accept=lambda f: tried.append(f.stem) or "no",
        **kw,
    )
    assert choice["scheme"] == tried[0] and len(tried) == len(choice["candidates"])


def test_candidates_that_failed_the_pool_screen_still_reach_the_export_check() -> None:
    """The pool agreement is a screen on a few hundred images; the export check decides. After the
    pick and the passing candidates (fastest first), the failing ones follow, most agreeing first."""
    from semicompact.export.int8 import _fallbacks

    rows = [
        {"scheme": "int8-7bit", "agreement": 0.93, "passes": False, "latency_ms": 1.0},
        {"scheme": "int8-7bit-early-float", "agreement": 0.96, "passes": False, "latency_ms": 1.1},
        {"scheme": "uint8", "agreement": 0.98, "passes": True, "latency_ms": 3.0},
        {"scheme": "uint8-early-float", "agreement": 0.94, "passes": False, "latency_ms": 3.2},
    ]
    assert _fallbacks(rows, "uint8", timed=True) == [
        "uint8",
        "int8-7bit-early-float",
        "uint8-early-float",
        "int8-7bit",
    ]
    rows[2]["passes"] = False
    assert _fallbacks(rows, "uint8", timed=False)[1:] == [
        "int8-7bit-early-float",
        "uint8-early-float",
        "int8-7bit",
    ]
