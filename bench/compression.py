"""Every registered compressor, plus ONNX fp32/int8 export, on trained ResNet-18 and MobileNetV2 runs.

For each run (BloodMNIST and PneumoniaMNIST, MobileNetV2 at 64 px and small-input ResNet-18 at
28 px; trained float runs from bench/baselines.py) and each method of ``list_compressors()``:
macro-F1 change vs the float model on a fixed test subset, file size ratio vs the fp32 safetensors
file, and CPU latency ratio (batch 1, median after warm-up, fixed threads) vs eager fp32, at 224 px
and at the run's native size. The goals of issue 3 are checked at the end.

Usage (from the repository root; about 20 minutes on 2 shared cores):
    .venv/bin/python bench/compression.py --max-test 500 --finetune-epochs 1 --max-train 200
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shlex
import sys
import time
import traceback
from pathlib import Path
from typing import Any

RUNS = (
    "bloodmnist-resnet18-28-s0",
    "bloodmnist-mobilenetv2_100-64-s0",
    "pneumoniamnist-resnet18-28-s0",
    "pneumoniamnist-mobilenetv2_100-64-s0",
)
ROOT = Path("bench/results/baselines/runs")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", default=",".join(RUNS), help="run folder names under --root")
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("--methods", default="", help="compressors (default: every registered one)")
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--kd-alpha", type=float, default=0.0)
    parser.add_argument(
        "--finetune-unlabelled",
        type=int,
        default=0,
        help="unlabelled images distilled from the float model while fine-tuning (-1: all; needs --kd-alpha)",
    )
    parser.add_argument("--max-test", type=int, default=1000)
    parser.add_argument(
        "--max-train", type=int, default=300, help="labelled images used to fine-tune/calibrate"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--latency-runs", type=int, default=10)
    parser.add_argument("--calib-images", type=int, default=64, help="int8 calibration images (profile)")
    parser.add_argument(
        "--work",
        type=Path,
        default=Path("bench/results/compression/runs"),
        help="method outputs (git-ignored)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/compression"))
    parser.add_argument(
        "--render-only", action="store_true", help="rewrite the .md (and goals) from the .json"
    )
    parser.add_argument("--merge", default="", help="A.json,B.json: combine parallel halves into --out")
    args = parser.parse_args(argv)
    if args.render_only or args.merge:
        import json

        parts = [Path(p) for p in args.merge.split(",")] if args.merge else [args.out.with_suffix(".json")]
        reports = [json.loads(p.with_suffix(".json").read_text(encoding="utf-8")) for p in parts]
        report = reports[0]
        for other in reports[1:]:  # parallel halves of one benchmark: commands and runs side by side
            report["command"] += "\n" + other["command"]
            report["runs"].update(other["runs"])
            report["elapsed_s"] = max(report.get("elapsed_s", 0), other.get("elapsed_s", 0))
        if args.merge:
            report["command"] += "\n.venv/bin/python bench/compression.py --merge " + args.merge
        report["goals"] = check_goals(report)
        write_outputs(report, args.out)
        return 0

    import torch

    from semicompact.compress.base import list_compressors

    torch.set_num_threads(args.threads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] or list_compressors()
    command = "OMP_NUM_THREADS={} .venv/bin/python bench/compression.py {}".format(
        args.threads, " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    )
    report: dict[str, Any] = {
        "command": command.strip(),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "methods": methods,
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "load_average_at_start": os.getloadavg(),
        },
        "runs": {},
        "timing": "interleaved",  # runtimes called in turn (export.timing); older reports timed each alone
    }
    start = time.time()
    for name in [r.strip() for r in args.runs.split(",") if r.strip()]:
        run_dir = args.root / name
        print(f"== {name}", flush=True)
        report["runs"][name] = bench_run(run_dir, methods, args)
        report["elapsed_s"] = round(time.time() - start, 1)
        write_outputs(report, args.out)  # after every run: partial results survive a crash
    report["machine"]["load_average_at_end"] = os.getloadavg()
    report["goals"] = check_goals(report)
    write_outputs(report, args.out)
    print(f"done in {report['elapsed_s']:.0f} s; {args.out}.md")
    return 0


def bench_run(run_dir: Path, methods: list[str], args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from semicompact.artifacts import load_model
    from semicompact.compress.quant_common import calibration_batches, numpy_batches
    from semicompact.compress.run import evaluate_module, run_compression, test_entries
    from semicompact.export.onnx import OrtModule
    from semicompact.export.profile import ProfileSettings, profile_model
    from semicompact.export.run import export_model
    from semicompact.export.timing import time_interleaved
    from semicompact.training.run import load_run_data

    model, card = load_model(run_dir)
    dm = load_run_data(run_dir)
    if args.max_train and len(dm.manifest.labelled) > args.max_train:
        dm.manifest.labelled = random.Random(0).sample(dm.manifest.labelled, args.max_train)
    loader = dm.loader_for(test_entries(dm, args.max_test, seed=0))
    float_eval = evaluate_module(model, loader, card.classes)
    fp32_bytes = (run_dir / "best.safetensors").stat().st_size
    sizes = {"native": card.image_size, "224": 224}
    # 224 px costs up to 64x the native size (a small-input ResNet-18 at 224 px is ~30 GMACs): fewer runs,
    # and int8 calibration on 16 images in batches of 2 (onnxruntime keeps every activation of a batch)
    settings = {
        "native": ProfileSettings(
            threads=args.threads, runs=args.latency_runs, warmup=2, batch=8, batch_runs=2
        ),
        "224": ProfileSettings(
            threads=args.threads, runs=max(3, args.latency_runs // 2), warmup=1, batch=4, batch_runs=1
        ),
    }
    calib = numpy_batches(calibration_batches(dm, "bench", "train", args.calib_images))
    calib224 = [b[i : i + 2] for b in calib for i in range(0, len(b), 2)][:8]
    profiles = {
        k: profile_model(
            model,
            card,
            s,
            settings[k],
            file_size=fp32_bytes,
            calibration=calib if k == "native" else calib224,
        )
        for k, s in sizes.items()
    }
    out: dict[str, Any] = {
        "model": card.model,
        "image_size": card.image_size,
        "float": float_eval,
        "fp32_bytes": fp32_bytes,
        "profile": profiles,
        "rows": {},
    }
    work = args.work / run_dir.name

    # ONNX exports of the float model: files and accuracy at the native size, latency from the profiles
    exports = export_model(
        run_dir,
        work / "export",
        ["onnx", "onnx-int8"],
        overwrite=True,
        max_check=128,
        calib_images=args.calib_images,
        allow_disagreement=True,  # the table reports the agreement; the gate is the CLI's business
    )
    for fmt in ("onnx", "onnx-int8"):
        ev = evaluate_module(OrtModule(exports[fmt]["path"], threads=args.threads), loader, card.classes)
        out["rows"][f"export:{fmt}"] = {
            "macro_f1": ev["macro_f1"],
            "macro_f1_change_points": 100 * (ev["macro_f1"] - float_eval["macro_f1"]),
            "size_ratio": fp32_bytes / exports[fmt]["size_bytes"],
            "latency_ratio": {k: profiles[k]["runtimes"][fmt]["latency_ratio_vs_eager"] for k in sizes},
            "latency_ms": {k: profiles[k]["runtimes"][fmt]["latency_ms"] for k in sizes},
            "check": {k: exports[fmt][k] for k in ("top1_agreement", "max_prob_diff")},
        }
        print(f"  {fmt}: {out['rows'][f'export:{fmt}']}", flush=True)

    for method in methods:
        t0 = time.time()
        try:
            result = run_compression(
                method,
                run_dir,
                work / method,
                finetune_epochs=args.finetune_epochs,
                kd_alpha=args.kd_alpha,
                finetune_unlabelled=args.finetune_unlabelled,
                overwrite=True,
                evaluate=False,
                datamodule=dm,
            )
            module = result["module"]
            ev = evaluate_module(module, loader, card.classes)
            latency: dict[str, float | None] = {}
            ratio: dict[str, float | None] = {}
            with torch.inference_mode():
                for k, s in sizes.items():
                    x = torch.rand(1, 3, s, s)
                    try:
                        module(x)  # an exported int8 graph fixed to the native size fails here
                    except Exception:
                        latency[k] = ratio[k] = None
                        continue
                    # eager fp32 timed in the same interleaved pass: the ratio survives load bursts
                    timed = time_interleaved(
                        {"eager": lambda x=x: model(x), "method": lambda x=x, m=module: m(x)},
                        settings[k].runs,
                        settings[k].warmup,
                    )
                    latency[k] = timed["method"]["median_ms"]
                    ratio[k] = latency[k] / timed["eager"]["median_ms"]
            row = {
                "macro_f1": ev["macro_f1"],
                "macro_f1_change_points": 100 * (ev["macro_f1"] - float_eval["macro_f1"]),
                "size_ratio": result["size_ratio"],
                "latency_ratio": ratio,
                "latency_ms": latency,
                "options": result["options"],
                "notes": _short(result["notes"]),
                "seconds": round(time.time() - t0, 1),
            }
        except Exception as error:  # a failing method is reported, not fatal to the benchmark
            row = {
                "error": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}",
                "trace": traceback.format_exc(limit=3),
                "seconds": round(time.time() - t0, 1),
            }
        out["rows"][method] = row
        print(f"  {method}: { {k: v for k, v in row.items() if k not in ('trace', 'notes')} }", flush=True)
    return out


def _short(notes: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in notes.items() if not isinstance(v, (list, dict)) or len(str(v)) < 200}


def check_goals(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, per run, with the measured values and reached / not reached."""
    goals = []

    def add(run: str, goal: str, row: dict[str, Any], measured: Any, reached: Any) -> None:
        if "error" in row:
            goals.append({"run": run, "goal": goal, "measured": row["error"], "reached": False})
        else:
            goals.append({"run": run, "goal": goal, "measured": measured(row), "reached": bool(reached(row))})

    def lat(row: dict[str, Any], size: str) -> str:
        value = row["latency_ratio"][size]
        return f"{value:.2f}x" if value is not None else "n/a"

    for name, run in report["runs"].items():
        rows = run["rows"]
        if "export:onnx-int8" in rows:
            add(
                name,
                "ONNX int8 latency <= 0.3x eager fp32 at 224 px, <= 1 point lost",
                rows["export:onnx-int8"],
                lambda r: f"{lat(r, '224')}, macro-F1 {r['macro_f1_change_points']:+.2f} points",
                lambda r: r["latency_ratio"]["224"] <= 0.3 and r["macro_f1_change_points"] >= -1,
            )
        if "deep_compression" in rows and "resnet18" in name:
            add(
                name,
                "Deep Compression >= 20x smaller than the fp32 file, <= 2 points lost",
                rows["deep_compression"],
                lambda r: f"{r['size_ratio']:.1f}x, macro-F1 {r['macro_f1_change_points']:+.2f} points",
                lambda r: r["size_ratio"] >= 20 and r["macro_f1_change_points"] >= -2,
            )
        if "prune" in rows:
            add(
                name,
                "50% structured pruning <= 0.6x latency (224 px), <= 2 points lost",
                rows["prune"],
                lambda r: (
                    f"{lat(r, '224')} (native {lat(r, 'native')}), "
                    f"macro-F1 {r['macro_f1_change_points']:+.2f} points"
                ),
                lambda r: (r["latency_ratio"]["224"] or 99) <= 0.6 and r["macro_f1_change_points"] >= -2,
            )
    return goals


def runtime_table(run: dict[str, Any]) -> list[str]:
    """Eager PyTorch, onnxruntime fp32 and onnxruntime int8 latency of the float model side by side;
    the headline is int8 / onnxruntime fp32 (int8 must beat the fp32 file, not only eager PyTorch).

    Profiles written before the runtimes were interleaved (no ``latency_ratio_vs_onnx_fp32``) timed
    one runtime after the other under changing load: their milliseconds are shown in brackets and no
    ratio is drawn from them."""
    lines = [
        "| size | eager fp32 ms | ORT fp32 ms | ORT int8 ms | **int8 / ORT fp32** | int8 / eager | "
        "ORT fp32 / eager | int8 types |",
        "|---|---|---|---|---|---|---|---|",
    ]
    old = False
    for p in run["profile"].values():
        rt = p["runtimes"]
        int8 = rt.get("onnx-int8", {})
        measured = "latency_ratio_vs_onnx_fp32" in int8
        old = old or not measured

        def ms(name: str, rt: dict[str, Any] = rt, measured: bool = measured) -> str:
            if name not in rt:
                return "-"
            value = f"{rt[name]['latency_ms']:.2f}"
            return value if measured else f"({value})"

        def ratio(name: str, key: str, rt: dict[str, Any] = rt, measured: bool = measured) -> str:
            value = rt.get(name, {}).get(key)
            return f"{value:.2f}" if measured and value is not None else "not measured"

        types = f"{p['int8_weights']} ({p['int8_target']})" if p.get("int8_weights") else "-"
        lines.append(
            f"| {p['image_size']} px | {ms('eager')} | {ms('onnx')} | {ms('onnx-int8')} | "
            f"**{ratio('onnx-int8', 'latency_ratio_vs_onnx_fp32')}** | "
            f"{ratio('onnx-int8', 'latency_ratio_vs_eager')} | {ratio('onnx', 'latency_ratio_vs_eager')} | "
            f"{types} |"
        )
    if old:
        lines += [
            "",
            "The runtime columns are new and **not yet measured** for this run: its profile predates "
            "interleaved timing and target-aware int8 types (milliseconds in brackets were timed one "
            "runtime after the other; no ratio is drawn from them). Re-run the benchmark to fill them "
            "(the runs' weights are not committed: `bench/baselines.py` trains them again).",
        ]
    return lines


def write_outputs(report: dict[str, Any], out: Path) -> None:
    from semicompact.io import write_json, write_text

    write_json(out.with_suffix(".json"), report)
    write_text(out.with_suffix(".md"), markdown(report))


def markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    lines = [
        "# Compression benchmark",
        "",
        "```bash",
        report["command"],
        "```",
        "",
        f"Methods: every registered compressor ({', '.join(report['methods'])}) plus ONNX fp32/int8 "
        f"export of the float model. Test subset: {s['max_test']} fixed random test images per run; "
        "fine-tuning: "
        f"{s['finetune_epochs']} epoch(s) on {s['max_train']} labelled images, KD alpha {s['kd_alpha']}; "
        f"latency: batch 1, {s['threads']} thread(s), median of {s['latency_runs']} runs after warm-up "
        "(at 224 px: half as many, at least 3). The first table of each run: the float model in eager "
        "PyTorch, onnxruntime fp32 and onnxruntime int8 (default export: target-aware int8 types), "
        "interleaved call by call; the headline is int8 / onnxruntime fp32. Method rows: latency ratio = "
        "method / eager fp32 at the same size"
        + (
            ", timed interleaved with it. "
            if report.get("timing") == "interleaved"
            else " (this report predates interleaving: each runtime was timed on its own). "
        )
        + f"Machine: {report['machine']['cpu_count']} CPUs shared with other jobs "
        f"(load average at start {report['machine']['load_average_at_start'][0]:.1f}), so absolute "
        "times are noisy; ratios are measured back to back.",
        "",
        "ptq and qat rows are the torchao PT2E int8 graph run in eager PyTorch (reference int8 ops, "
        "slower than fp32 by design; their speed comes with torch.compile or the ONNX int8 export, row "
        "export:onnx-int8, whose macro-F1 is measured at the native size).",
        "",
    ]
    for name, run in report["runs"].items():
        f = run["float"]
        eager = {k: p["runtimes"]["eager"] for k, p in run["profile"].items()}
        lines += [
            f"## {name}",
            "",
            f"Float: macro-F1 {f['macro_f1']:.4f} (n={f['n']}), fp32 file {run['fp32_bytes'] / 1e6:.1f} MB, "
            f"eager fp32 latency {eager['native']['latency_ms']:.1f} ms at {run['image_size']} px, "
            f"{eager['224']['latency_ms']:.1f} ms at 224 px.",
            "",
            *runtime_table(run),
            "",
            "| method | macro-F1 | change (points) | size ratio (x smaller) | latency ratio native "
            "| latency ratio 224 px |",
            "|---|---|---|---|---|---|",
        ]
        for method, row in run["rows"].items():
            if "error" in row:
                lines.append(f"| {method} | failed: {row['error'][:120]} | | | | |")
                continue
            lat = {
                k: f"{v:.2f}" if v is not None else "n/a (fixed input size)"
                for k, v in row["latency_ratio"].items()
            }
            lines.append(
                f"| {method} | {row['macro_f1']:.4f} | {row['macro_f1_change_points']:+.2f} | "
                f"{row['size_ratio']:.1f} | {lat['native']} | {lat['224']} |"
            )
        lines.append("")
    if report.get("goals"):
        lines += ["## Goals", "", "| run | goal | measured | reached |", "|---|---|---|---|"]
        for g in report["goals"]:
            lines.append(
                f"| {g['run']} | {g['goal']} | {g['measured']} | {'yes' if g['reached'] else '**no**'} |"
            )
        lines.append("")
    lines.append(f"Total time: {report.get('elapsed_s', 0):.0f} s.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
