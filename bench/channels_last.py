"""Channels-last (NHWC) against the default NCHW layout: training-step and inference time.

Two parts, each a ratio measured in one process on this machine:
- ``steps``: forward + backward + AdamW step (train mode) and a no-grad forward (eval mode) of
  each network on random images, the two layouts interleaved call by call, median of ``--repeats``;
- ``runs``: the same ``semicompact train`` command (600-step budget of the equal-budget grid,
  BreastMNIST 64 px, MobileNetV2) with ``--channels-last`` and ``--no-channels-last``, run one after
  the other, with the runs' own wall times and test macro-F1.

Usage (from the repository root):
    .venv/bin/python bench/channels_last.py --threads 1 --out bench/results/channels_last
    .venv/bin/python bench/channels_last.py --parts runs --threads 2 \
        --data ../shared/data/medmnist/breastmnist.npz --out bench/results/channels_last
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from semicompact.io import write_json, write_text
from semicompact.models import create_model

#: (network, image size, small input, batch): the study's students and standard network at 64 px
CASES = (
    ("mobilenetv2_100", 64, False, 96),
    ("tf_efficientnet_lite0", 64, False, 96),
    ("resnet18", 64, False, 96),
    ("squeezenet1_1", 64, False, 96),
    ("mobilenetv2_100", 28, True, 96),
    ("mobilenetv2_100", 224, False, 16),
)


def _step_times(name: str, size: int, small: bool, batch: int, repeats: int) -> dict[str, Any]:
    torch.manual_seed(0)
    models = {"nchw": create_model(name, num_classes=5, small_input=small)}
    models["nhwc"] = create_model(name, num_classes=5, small_input=small)
    models["nhwc"].load_state_dict(models["nchw"].state_dict())
    models["nhwc"].set_channels_last()
    optims = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, m in models.items()}
    x = torch.rand(batch, 3, size, size)
    y = torch.randint(0, 5, (batch,))

    def train(key: str) -> None:
        model, opt = models[key].train(), optims[key]
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    def infer(key: str) -> None:
        with torch.no_grad():
            models[key].eval()(x)

    out: dict[str, Any] = {"network": name, "image_size": size, "batch": batch}
    for mode, fn in (("train", train), ("eval", infer)):
        times: dict[str, list[float]] = {"nchw": [], "nhwc": []}
        for key in times:
            fn(key)  # warm-up
        for _ in range(repeats):
            for key in times:
                start = time.perf_counter()
                fn(key)
                times[key].append(time.perf_counter() - start)
        med = {k: statistics.median(v) for k, v in times.items()}
        out[mode] = {"nchw_s": med["nchw"], "nhwc_s": med["nhwc"], "ratio": med["nhwc"] / med["nchw"]}
    return out


def steps_part(repeats: int) -> list[dict[str, Any]]:
    rows = []
    for name, size, small, batch in CASES:
        row = _step_times(name, size, small, batch, repeats)
        print(
            f"{name} {size}px: train x{row['train']['ratio']:.2f}, eval x{row['eval']['ratio']:.2f}",
            flush=True,
        )
        rows.append(row)
    return rows


def runs_part(data: Path, threads: int, weights: Path | None) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for flag in ("--channels-last", "--no-channels-last"):
            out = Path(tmp) / flag.strip("-")
            cmd = [
                str(Path(sys.executable).parent / "semicompact"), "train", str(data),
                "--model", "mobilenetv2_100", "--image-size", "64", "--max-steps", "600",
                "--val-every", "60", "--no-early-stopping", "--body-lr-mult", "1.0", "--n-labelled", "75",
                "--batch-size", "32", "--seed", "0", "--no-tensorboard", "--no-progress",
                "--out", str(out), flag,
            ]  # fmt: skip
            if weights is not None:
                cmd += ["--weights", str(weights)]
            env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
            start = time.perf_counter()
            subprocess.run(cmd, check=True, env=env)
            wall = time.perf_counter() - start
            metrics = json.loads((out / "metrics.json").read_text())
            rows.append(
                {
                    "layout": flag.strip("-"),
                    "command_wall_s": wall,
                    "run_wall_s": metrics.get("run_wall_time_s"),
                    "train_time_per_step_s": metrics.get("train_time_per_step_s"),
                    "optimizer_steps": metrics["cost"]["optimizer_steps"],
                    "test_macro_f1": metrics["test"]["macro_f1"],
                }
            )
            print(rows[-1], flush=True)
    return rows


def _markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Channels-last (NHWC) against NCHW",
        "",
        f"Machine: {result['machine']}; torch {result['torch']}; {result['threads']} thread(s).",
        f"Command: `{result['command']}`",
        "",
    ]
    if result.get("steps"):
        lines += [
            "Median seconds per call, the two layouts interleaved in one process (ratio < 1: NHWC faster).",
            "",
            "| network | px | batch | train NCHW s | train NHWC s | train ratio "
            "| eval NCHW s | eval NHWC s | eval ratio |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in result["steps"]:
            t, e = r["train"], r["eval"]
            lines.append(
                f"| {r['network']} | {r['image_size']} | {r['batch']} "
                f"| {t['nchw_s']:.3f} | {t['nhwc_s']:.3f} | **{t['ratio']:.2f}** "
                f"| {e['nchw_s']:.3f} | {e['nhwc_s']:.3f} | **{e['ratio']:.2f}** |"
            )
        lines.append("")
    if result.get("runs"):
        lines += [
            "The same 600-step `semicompact train` run in each layout, one after the other:",
            "",
            "| layout | command wall s | run wall s | s per step | steps | test macro-F1 |",
            "|---|---|---|---|---|---|",
        ]
        for r in result["runs"]:
            lines.append(
                f"| {r['layout']} | {r['command_wall_s']:.0f} | {r['run_wall_s'] or 0:.0f} | "
                f"{r['train_time_per_step_s'] or 0:.3f} | {r['optimizer_steps']} | {r['test_macro_f1']:.4f} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="steps", help="steps, runs or steps,runs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--data", type=Path, default=None, help="dataset of the runs part")
    parser.add_argument("--weights", type=Path, default=None, help="MobileNetV2 ImageNet weights file")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    parts = set(args.parts.split(","))
    result: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "threads": args.threads,
        "command": "python " + " ".join(sys.argv),
    }
    if "steps" in parts:
        result["steps"] = steps_part(args.repeats)
    if "runs" in parts:
        if args.data is None:
            parser.error("--parts runs needs --data")
        result["runs"] = runs_part(args.data, args.threads, args.weights)
    name = "_".join(sorted(parts)) + f"_{args.threads}t"
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / f"{name}.json", result)
    write_text(args.out / f"{name}.md", _markdown(result))


if __name__ == "__main__":
    main()
