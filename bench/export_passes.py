"""ONNX export with and without the export's graph passes (``export_onnx(graph_passes=...)``).

The passes: TF-"same" padding made static and folded into the Conv pads (timm's ``tf_*`` networks),
BatchNormalization behind a mixed convolution's Concat folded into its convolutions (MixNet), and
squeeze-excitation spatial means exported as GlobalAveragePool (EfficientNet, MixNet). Networks at
224 px, randomly initialised (BN scales set to 1, as ``semicompact profile`` does; latency only),
batch 1: the fp32 file and the int8 file (u8s8) of each export, the four sessions timed
interleaved call by call in one process, and the fp32 outputs of both exports compared.

Usage (from the repository root):
    .venv/bin/python bench/export_passes.py --threads 1 --runs 200 --out bench/results/export_passes
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def measure(name: str, size: int, threads: int, runs: int) -> dict[str, Any]:
    import onnx

    from semicompact.artifacts import ModelCard
    from semicompact.cli.profile import _no_zero_gammas
    from semicompact.export.int8 import choose_int8
    from semicompact.export.metadata import INPUT_NAME
    from semicompact.export.onnx import export_onnx
    from semicompact.export.onnx_predict import make_session
    from semicompact.export.timing import time_interleaved
    from semicompact.models import create_model

    model = _no_zero_gammas(create_model(name, num_classes=8))
    card = ModelCard(model=name, classes=[str(i) for i in range(8)], image_size=size)
    rng = np.random.default_rng(0)
    calib = [rng.random((8, 3, size, size), dtype=np.float32) for _ in range(4)]
    x = rng.random((1, 3, size, size), dtype=np.float32)
    check = rng.random((8, 3, size, size), dtype=np.float32)
    row: dict[str, Any] = {"model": name, "image_size": size, "threads": threads}
    sessions = {}
    with tempfile.TemporaryDirectory() as work:
        for label, passes in (("without", False), ("with", True)):
            fp32 = export_onnx(model, card, Path(work) / f"{label}.onnx", graph_passes=passes)
            int8 = Path(work) / f"{label}_int8.onnx"
            choice = choose_int8(fp32, int8, calib, weights="int8", threads=threads)
            graph = onnx.load(str(fp32)).graph
            row[label] = {
                "fp32_nodes": len(graph.node),
                **{
                    f"{op}_nodes": sum(n.op_type == op for n in graph.node)
                    for op in ("Pad", "Shape", "BatchNormalization", "ReduceMean")
                },
                "int8_scheme": choice["scheme"],
            }
            sessions[f"{label} fp32"] = make_session(fp32, threads, spin=False)
            sessions[f"{label} int8"] = make_session(int8, threads, spin=False)
        out = {k: s.run(None, {INPUT_NAME: check})[0] for k, s in sessions.items() if k.endswith("fp32")}
        row["fp32_max_abs_difference"] = float(np.abs(out["without fp32"] - out["with fp32"]).max())
        stats = time_interleaved(
            {k: (lambda s=s: s.run(None, {INPUT_NAME: x})) for k, s in sessions.items()}, runs, warmup=3
        )
    row["latency_ms"] = {k: round(v["median_ms"], 3) for k, v in stats.items()}
    row["p10_p90_ms"] = {k: [round(v["p10_ms"], 3), round(v["p90_ms"], 3)] for k, v in stats.items()}
    for kind in ("fp32", "int8"):
        row[f"with_over_without_{kind}"] = round(
            stats[f"with {kind}"]["median_ms"] / stats[f"without {kind}"]["median_ms"], 3
        )
    row["int8_over_fp32"] = {
        label: round(stats[f"{label} int8"]["median_ms"] / stats[f"{label} fp32"]["median_ms"], 3)
        for label in ("without", "with")
    }
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="tf_efficientnet_lite0,mixnet_s,efficientnet_b0")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--out", type=Path, default=Path("bench/results/export_passes"))
    args = parser.parse_args(argv)
    from semicompact.bench.environment import environment
    from semicompact.export.targets import detect_target
    from semicompact.io import write_json

    start = time.time()
    rows = [measure(m, args.image_size, args.threads, args.runs) for m in args.models.split(",")]
    report = {
        "command": " ".join([".venv/bin/python", *sys.argv]),
        "machine": {"cpu_target": detect_target(), "cores": os.cpu_count(), **environment()},
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "rows": rows,
        "elapsed_s": round(time.time() - start),
    }
    write_json(args.out / "export_passes.json", report)
    for row in rows:
        print(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
