"""Issue 18's goals: default int8 export speed and accuracy, and `semicompact deploy` under a budget.

A. Latency, 224 px, batch 1, 1 thread and all threads: eager PyTorch fp32, onnxruntime fp32 and
   the default int8 export (target auto) of ResNet-18 and MobileNetV2, randomly initialised (BN
   scales set to 1, as `semicompact profile` does; latency only), timed interleaved in one process.
B. Accuracy: `semicompact export` with the defaults (target auto, gate 97 % / 1 point) on trained
   BloodMNIST runs, checked on the whole test split: macro-F1 of fp32 vs int8, or the gate's line.
C. `semicompact deploy` on the 64 px runs with a 2 ms budget, then every variant re-timed in a fresh
   interleaved pass: the chosen variant's macro-F1 against the best variant that meets the budget.

Usage (trained runs outside the repo; commands in bench/results/int8_deploy/README.md):
    .venv/bin/python bench/int8_deploy.py --runs-dir /tmp/i18/runs --out bench/results/int8_deploy
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any


def latency_part(threads: int, runs: int, models: list[str]) -> list[dict[str, Any]]:
    from semicompact.artifacts import ModelCard
    from semicompact.cli.profile import _no_zero_gammas
    from semicompact.export.profile import ProfileSettings, profile_model
    from semicompact.models import create_model

    rows = []
    for name in models:
        model = _no_zero_gammas(create_model(name, num_classes=8))
        card = ModelCard(model=name, classes=[str(i) for i in range(8)], image_size=224)
        settings = ProfileSettings(threads=threads, runs=runs, warmup=3, batch=4, batch_runs=2)
        row = profile_model(model, card, 224, settings)
        rows.append(row)
        rt = row["runtimes"]
        print(
            f"{name} 224 px, {threads} thread(s): eager {rt['eager']['latency_ms']:.1f} ms, "
            f"onnx fp32 {rt['onnx']['latency_ms']:.1f}, int8 {rt['onnx-int8']['latency_ms']:.1f} "
            f"({row['int8_weights']}): {rt['onnx-int8']['latency_ratio_vs_onnx_fp32']:.2f}x fp32, "
            f"{rt['onnx-int8']['latency_ratio_vs_eager']:.2f}x eager",
            flush=True,
        )
    return rows


def accuracy_part(runs: list[Path], work: Path) -> list[dict[str, Any]]:
    from semicompact.errors import SemicompactError
    from semicompact.export.run import export_model

    rows = []
    for run in runs:
        out = work / f"export-{run.name}"
        row: dict[str, Any] = {"run": run.name}
        try:
            res = export_model(run, out, ["onnx", "onnx-int8"], max_check=100000, overwrite=True)
            int8 = res["onnx-int8"]
            row.update(
                passed=True,
                n=int8["n"],
                fp32_macro_f1=int8["reference_macro_f1"],
                int8_macro_f1=int8["macro_f1"],
                change_points=100 * int8["macro_f1_change"],
                agreement=int8["top1_agreement"],
                scheme=int8["int8_weights"],
                target=int8["target"],
            )
        except SemicompactError as error:
            row.update(passed=False, error=str(error))
        print(row, flush=True)
        rows.append(row)
    return rows


def deploy_part(runs: list[Path], work: Path, budget: float, runs_timed: int) -> dict[str, Any]:
    from semicompact.export.deploy import deploy_search, measure_latency, pick

    summary = deploy_search(runs, work / "deploy", budget, runs=runs_timed, log=print)
    chosen = next(v for v in summary["variants"] if v["id"] == summary["chosen"])
    again = [dict(v) for v in summary["variants"]]
    measure_latency(again, 1, runs_timed)  # the exhaustive check: every variant, a fresh pass
    best = pick(again, budget, None)
    return {
        "budget_ms": budget,
        "chosen": {k: chosen[k] for k in ("id", "variant", "macro_f1", "latency_ms", "size_bytes")},
        "best_in_fresh_pass": {k: best[k] for k in ("id", "variant", "macro_f1", "latency_ms")}
        if best
        else None,
        "chosen_latency_in_fresh_pass": next(v["latency_ms"] for v in again if v["id"] == chosen["id"]),
        "gap_points": 100 * (best["macro_f1"] - chosen["macro_f1"]) if best else None,
        "variants": [
            {k: v[k] for k in ("id", "variant", "macro_f1", "latency_ms", "size_bytes", "n", "subset")}
            | {"latency_fresh_ms": a["latency_ms"]}
            for v, a in zip(summary["variants"], again, strict=True)
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs-dir", type=Path, default=Path("/tmp/i18/runs"))
    parser.add_argument("--accuracy-runs", default="blood-r18-28,blood-mnv2-64")
    parser.add_argument("--deploy-runs", default="blood-mnv2-64,blood-r18-64,blood-lite0-64")
    parser.add_argument("--budget-ms", type=float, default=2.0)
    parser.add_argument("--latency-runs", type=int, default=30)
    parser.add_argument("--latency-models", default="resnet18,mobilenetv2_100")
    parser.add_argument("--threads", default="", help="comma-separated thread counts (default: 1 and all)")
    parser.add_argument("--parts", default="latency,accuracy,deploy")
    parser.add_argument("--work", type=Path, default=Path("/tmp/i18/bench"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/int8_deploy"))
    args = parser.parse_args(argv)
    from semicompact.export.targets import detect_target
    from semicompact.io import write_json

    parts = args.parts.split(",")
    report: dict[str, Any] = {
        "command": " ".join([".venv/bin/python", *sys.argv]),
        "machine": {
            "cpu_target": detect_target(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
        },
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    start = time.time()
    if "latency" in parts:
        threads = [int(t) for t in args.threads.split(",")] if args.threads else [1, os.cpu_count() or 1]
        models = args.latency_models.split(",")
        report["latency"] = {str(t): latency_part(t, args.latency_runs, models) for t in threads}
    if "accuracy" in parts:
        runs = [args.runs_dir / r for r in args.accuracy_runs.split(",")]
        report["accuracy"] = accuracy_part(runs, args.work)
    if "deploy" in parts:
        runs = [args.runs_dir / r for r in args.deploy_runs.split(",")]
        report["deploy"] = deploy_part(runs, args.work, args.budget_ms, args.latency_runs)
    report["elapsed_s"] = round(time.time() - start)
    args.out.mkdir(parents=True, exist_ok=True)
    for part in ("latency", "accuracy", "deploy"):
        if part in report:
            write_json(
                args.out / f"{part}.json", {k: report[k] for k in ("command", "machine", "date", part)}
            )
    print(json.dumps({k: v for k, v in report.items() if k != "latency"}, indent=1, default=str)[:4000])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
