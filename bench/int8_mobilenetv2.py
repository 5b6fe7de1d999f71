"""Which onnxruntime quantize_static options keep a trained MobileNetV2's int8 predictions (issue 18).

options: every option tried (types, per-tensor vs per-channel weights, calibration method, moving
  average, symmetric activations, QOperator, nodes kept in float), quantized from the run's fp32
  ONNX file exactly as ``export`` does (``quant_pre_process`` first, 256 training images to
  calibrate), top-1 agreement with fp32 on the whole test split and on 512 unlabelled images.
latency: 224 px, batch 1, 1 thread: eager PyTorch, onnxruntime fp32, ``int8`` and
  ``int8-early-float`` through ``quantize_onnx``, interleaved call by call in one process.

Usage (a trained run outside the repository; see bench/results/int8_deploy/README.md):
    OMP_NUM_THREADS=1 .venv/bin/python bench/int8_mobilenetv2.py /tmp/i18/runs/blood-mnv2-64 \\
        --out bench/results/int8_deploy/mobilenetv2
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np


def _logits(session: Any, batches: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([session.run(None, {"images": b})[0] for b in batches])


def options_part(run: Path, work: Path) -> dict[str, Any]:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from semicompact.artifacts import load_model
    from semicompact.compress.quant_common import calibration_batches, numpy_batches
    from semicompact.export.onnx import _Reader, early_convolutions, equal_batches, export_onnx
    from semicompact.export.onnx_predict import make_session
    from semicompact.training.run import load_run_data

    model, card = load_model(run / "best.safetensors")
    dm = load_run_data(run)
    fp32, pre = work / "fp32.onnx", work / "pre.onnx"
    export_onnx(model, card, fp32)
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    calib = numpy_batches(calibration_batches(dm, "bench", "train", 256))
    unl = numpy_batches(calibration_batches(dm, "bench", "unlabelled", 512))
    test = [x.float().div(255).numpy() for x, _ in dm.loader_for(dm.manifest.test)]
    ref = make_session(fp32, 1)
    ref_test, ref_unl = _logits(ref, test).argmax(1), _logits(ref, unl).argmax(1)
    graph = onnx.load(str(pre)).graph
    convs = [n for n in graph.node if n.op_type in ("Conv", "Gemm")]
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def with_act(nodes: list[Any]) -> list[str]:
        names = []
        for n in nodes:
            names.append(n.name)
            names += [c.name for c in consumers.get(n.output[0], []) if c.op_type in ("Relu", "Clip")]
        return names

    depthwise = [n for n in convs if any(a.name == "group" and a.i > 1 for a in n.attribute)]
    mv = {"CalibMovingAverage": True}
    early = early_convolutions(onnx.load(str(pre)))
    configs: dict[str, dict[str, Any]] = {
        "int8 (u8s8, per-channel, minmax: the plain default)": {},
        "per-tensor weights": {"per_channel": False},
        "uint8 weights (u8u8)": {"weight_type": QuantType.QUInt8},
        "s8s8": {"activation_type": QuantType.QInt8},
        "s8s8, ActivationSymmetric": {
            "activation_type": QuantType.QInt8,
            "extra_options": {"ActivationSymmetric": True},
        },
        "WeightSymmetric=False": {"extra_options": {"WeightSymmetric": False}},
        "QOperator format": {"quant_format": QuantFormat.QOperator},
        "entropy calibration": {"calibrate_method": CalibrationMethod.Entropy},
        "percentile 99.99": {
            "calibrate_method": CalibrationMethod.Percentile,
            "extra_options": {"CalibPercentile": 99.99},
        },
        "moving-average minmax": {"extra_options": mv},
        "depthwise convs (+ReLU6) float": {"nodes_to_exclude": with_act(depthwise)},
        "first conv + last Gemm float": {"nodes_to_exclude": with_act([convs[0], convs[-1]])},
        "first 3 convs float": {"nodes_to_exclude": with_act(convs[:3])},
        "first 3 convs float, moving average": {"nodes_to_exclude": with_act(convs[:3]), "extra_options": mv},
        "int8-early-float (convs above 1/4 resolution float, moving average)": {
            "nodes_to_exclude": early,
            "extra_options": mv,
        },
        "first 8 convs float, moving average": {"nodes_to_exclude": with_act(convs[:8]), "extra_options": mv},
    }
    rows = []
    for name, kw in configs.items():
        kw = dict(kw)
        extra = {"CalibMovingAverage": False, **kw.pop("extra_options", {})}
        method = kw.get("calibrate_method", CalibrationMethod.MinMax)
        batches = calib if method == CalibrationMethod.MinMax else equal_batches(calib)
        args = {
            "quant_format": QuantFormat.QDQ,
            "per_channel": True,
            "activation_type": QuantType.QUInt8,
            "weight_type": QuantType.QInt8,
            **kw,
        }
        out = work / "q.onnx"
        start = time.time()
        quantize_static(str(pre), str(out), _Reader(batches), extra_options=extra, **args)
        session = make_session(out, 1)
        row = {
            "option": name,
            "test_agreement": float((_logits(session, test).argmax(1) == ref_test).mean()),
            "unlabelled_agreement": float((_logits(session, unl).argmax(1) == ref_unl).mean()),
            "float_nodes": len(kw.get("nodes_to_exclude", [])),
            "seconds": round(time.time() - start, 1),
        }
        rows.append(row)
        print(row, flush=True)
    return {"run": str(run), "test_images": len(ref_test), "unlabelled_images": len(ref_unl), "rows": rows}


def latency_part(run: Path, work: Path, runs: int) -> dict[str, Any]:
    import torch

    from semicompact.artifacts import load_model
    from semicompact.export.onnx import export_onnx, quantize_onnx
    from semicompact.export.onnx_predict import make_session
    from semicompact.export.timing import time_interleaved

    torch.set_num_threads(1)
    model, card = load_model(run / "best.safetensors")
    model.eval()
    fp32 = export_onnx(model, dataclasses.replace(card, image_size=224), work / "fp32_224.onnx")
    rng = np.random.default_rng(0)
    calib = [rng.random((4, 3, 224, 224), dtype=np.float32) for _ in range(2)]  # latency only
    paths = {"onnx fp32": fp32}
    for scheme in ("int8", "int8-early-float"):
        paths[scheme] = quantize_onnx(fp32, work / f"{scheme}.onnx", calib, weights=scheme)
    x = rng.random((1, 3, 224, 224), dtype=np.float32)
    sessions = {k: make_session(p, 1, spin=False) for k, p in paths.items()}
    fns: dict[str, Any] = {k: (lambda s=s: s.run(None, {"images": x})) for k, s in sessions.items()}
    fns["eager"] = lambda: model(torch.from_numpy(x))
    with torch.inference_mode():
        stats = time_interleaved(fns, runs, 3)
    base, eager = stats["onnx fp32"]["median_ms"], stats["eager"]["median_ms"]
    return {
        "image_size": 224,
        "threads": 1,
        "runs": runs,
        "load_average": os.getloadavg(),
        "results": {
            k: {**v, "ratio_vs_onnx_fp32": v["median_ms"] / base, "ratio_vs_eager": v["median_ms"] / eager}
            for k, v in stats.items()
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path)
    parser.add_argument("--parts", default="options,latency")
    parser.add_argument("--latency-runs", type=int, default=40)
    parser.add_argument("--out", type=Path, default=Path("bench/results/int8_deploy/mobilenetv2"))
    args = parser.parse_args(argv)
    from semicompact.io import write_json

    warnings.filterwarnings("ignore")
    command = " ".join(["OMP_NUM_THREADS=1 .venv/bin/python bench/int8_mobilenetv2.py", *sys.argv[1:]])
    with tempfile.TemporaryDirectory() as tmp:
        for part in args.parts.split(","):
            start = time.time()
            if part == "options":
                result = options_part(args.run, Path(tmp))
            elif part == "latency":
                result = latency_part(args.run, Path(tmp), args.latency_runs)
            else:
                raise SystemExit(f"--parts {part}: use options and/or latency")
            result.update(command=command, elapsed_s=round(time.time() - start))
            write_json(args.out / f"{part}.json", result)
            print(f"{part}: {args.out / f'{part}.json'}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
