"""Issue 18: where onnxruntime spends the time of fp32 and int8 files, by kind of operator.

The default int8 export of MobileNetV2 stays near 0.5x onnxruntime fp32 while ResNet-18 reaches
0.3x. This script says why: both files of each network (the project's export, the scheme
`--target auto` picks) run with onnxruntime's profiler, one thread, batch 1, 224 px, and each
kernel's time goes to a class read from the *optimised* graph onnxruntime actually runs:
depthwise convolution (group == input channels), 1x1 convolution, other convolution (stem, 3x3
dense), and every other operator by type. The profiled runs are separate from the interleaved
latency (the profiler's overhead is per node), so the table reports both.

Usage:
    OMP_NUM_THREADS=1 .venv/bin/python bench/int8_op_breakdown.py --out bench/results/int8_deploy/op_breakdown
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

CONV_OPS = {"Conv", "QLinearConv", "FusedConv", "NhwcQLinearConv", "NhwcFusedConv"}


def conv_classes(model_path: Path) -> dict[str, str]:
    """Node name -> 'depthwise' / '1x1' / 'other conv' for the convolutions of an optimised graph."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_path))
    weights = {i.name: numpy_helper.to_array(i).shape for i in model.graph.initializer}
    classes = {}
    for node in model.graph.node:
        if node.op_type not in CONV_OPS:
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        w_index = 3 if node.op_type.endswith("QLinearConv") else 1
        shape = weights.get(node.input[w_index]) if len(node.input) > w_index else None
        kernel = list(attrs.get("kernel_shape", shape[2:] if shape is not None else []))
        group = int(attrs.get("group", 1))
        if group > 1 and shape is not None and shape[1] == 1:
            classes[node.name] = "depthwise"
        elif kernel == [1, 1]:
            classes[node.name] = "1x1"
        else:
            classes[node.name] = "other conv"
    return classes


def profile_file(path: Path, image: np.ndarray, runs: int, work: Path) -> dict[str, float]:
    """Mean ms per run of each operator class (onnxruntime profiler, one thread)."""
    import onnxruntime as ort

    def session(**settings: Any) -> Any:
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        options.log_severity_level = 3
        for key, value in settings.items():
            setattr(options, key, value)
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    optimised = work / f"{path.stem}.optimised.onnx"
    session(optimized_model_filepath=str(optimised))  # the graph the profiled session will run
    classes = conv_classes(optimised)
    profiled = session(enable_profiling=True, profile_file_prefix=str(work / path.stem))
    warmup = 3
    for _ in range(warmup + runs):
        profiled.run(None, {"images": image})
    trace = Path(profiled.end_profiling())
    seen: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    for event in json.loads(trace.read_text()):
        name = event.get("name", "")
        if event.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        node = name[: -len("_kernel_time")]
        seen[node] += 1
        if seen[node] > warmup:  # the first runs allocate and pack weights
            totals[classes.get(node, event["args"]["op_name"])] += event["dur"]
    return {k: v / runs / 1000 for k, v in totals.most_common()}


def breakdown(model_name: str, runs: int, work: Path, openvino: bool = False) -> dict[str, Any]:
    import torch

    from semicompact.artifacts import ModelCard
    from semicompact.cli.profile import _no_zero_gammas
    from semicompact.export.int8 import choose_int8
    from semicompact.export.onnx import export_onnx
    from semicompact.export.onnx_predict import make_session
    from semicompact.export.timing import time_interleaved
    from semicompact.models import create_model

    torch.manual_seed(0)
    model = _no_zero_gammas(create_model(model_name, num_classes=8)).eval()
    card = ModelCard(model=model_name, classes=[str(i) for i in range(8)], image_size=224)
    fp32 = export_onnx(model, card, work / f"{model_name}-fp32.onnx")
    int8 = work / f"{model_name}-int8.onnx"
    calibration = [np.random.default_rng(0).random((8, 3, 224, 224), dtype=np.float32)]
    choice = choose_int8(
        fp32, int8, calibration, target="auto", min_agreement=0.0, threads=1, runs=10, warmup=1
    )
    image = np.random.default_rng(1).random((1, 3, 224, 224), dtype=np.float32)
    sessions = {"fp32": make_session(fp32, 1), "int8": make_session(int8, 1)}
    fns = {k: (lambda s=s: s.run(None, {"images": image})) for k, s in sessions.items()}
    if openvino:  # the same two files in another runtime (oneDNN kernels): is the limit onnxruntime's?
        import openvino as ov

        core = ov.Core()
        config = {"INFERENCE_NUM_THREADS": 1, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        for key, path in (("openvino_fp32", fp32), ("openvino_int8", int8)):
            request = core.compile_model(core.read_model(str(path)), "CPU", config).create_infer_request()
            fns[key] = lambda r=request: r.infer({0: image})
    latency = time_interleaved(fns, runs, 3)
    ops = {k: profile_file(p, image, runs, work) for k, p in (("fp32", fp32), ("int8", int8))}
    return {
        "model": model_name,
        "int8_scheme": choice["scheme"],
        "int8_target": choice["target"],
        "latency_ms": {k: v["median_ms"] for k, v in latency.items()},
        "int8_over_fp32": latency["int8"]["median_ms"] / latency["fp32"]["median_ms"],
        "profiled_ms": ops,
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = []
    for row in rows:
        fp, q = row["profiled_ms"]["fp32"], row["profiled_ms"]["int8"]
        lines += [
            f"### {row['model']} (int8 scheme {row['int8_scheme']}, target {row['int8_target']}): "
            f"interleaved median fp32 {row['latency_ms']['fp32']:.2f} ms, "
            f"int8 {row['latency_ms']['int8']:.2f} ms, "
            f"**{row['int8_over_fp32']:.2f}x**",
            "",
            *(
                [
                    "Same files in OpenVINO (CPU plugin, 1 thread, interleaved with the two above): "
                    + ", ".join(
                        f"{k.split('_')[1]} {v:.2f} ms ({v / row['latency_ms']['fp32']:.2f}x ORT fp32)"
                        for k, v in row["latency_ms"].items()
                        if k.startswith("openvino")
                    ),
                    "",
                ]
                if "openvino_int8" in row["latency_ms"]
                else []
            ),
            "| operator class | fp32 ms | int8 ms | int8 / fp32 | share of int8 time |",
            "|---|---|---|---|---|",
        ]
        total_q = sum(q.values())
        for key in sorted(set(fp) | set(q), key=lambda k: -(q.get(k, 0) + fp.get(k, 0))):
            a, b = fp.get(key, 0.0), q.get(key, 0.0)
            ratio = f"{b / a:.2f}" if a > 0.005 and b > 0 else "-"
            lines.append(f"| {key} | {a:.2f} | {b:.2f} | {ratio} | {100 * b / total_q:.0f} % |")
        lines.append(
            f"| **total (profiled)** | {sum(fp.values()):.2f} | {total_q:.2f} | "
            f"{total_q / sum(fp.values()):.2f} | |"
        )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="mobilenetv2_100,resnet18")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument(
        "--openvino", action="store_true", help="also time both files in OpenVINO (not a dependency)"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/int8_deploy/op_breakdown"))
    args = parser.parse_args(argv)
    from semicompact.export.targets import detect_target
    from semicompact.io import write_json, write_text

    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [breakdown(m, args.runs, Path(tmp), args.openvino) for m in args.models.split(",")]
    report = {
        "command": " ".join([".venv/bin/python", *sys.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cpu_target": detect_target(),
        "elapsed_s": round(time.time() - start),
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "op_breakdown.json", report)
    write_text(args.out / "op_breakdown.md", markdown(rows))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
