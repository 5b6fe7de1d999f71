"""Is the supervised base converged? Train it at N and 2N optimiser steps and compare (issue 16).

A semi-supervised gain is only a gain against a base that more steps would not improve: if doubling
the base's step budget raises its mean test macro-F1 by more than ``--tolerance`` points on a
dataset, the budget N is too short there and every comparison at N flatters the methods.

Each (dataset, seed, budget) is one `supervised` run (MobileNetV2 with the ImageNet weights in
../shared/weights, 64 px, 75 labels per class; validation out of the label budget unless
``--val official``). Runs are resumable: a finished run folder is read, not retrained. The table
(Markdown) gives mean(std) over seeds at N and 2N, the change, the verdict, and the cost of each.

    .venv/bin/python bench/supervised_convergence.py --shared ../shared --steps 600 --seeds 0 1 2 \
        --out bench/results/supervised_convergence
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from semicompact.io import write_text
from semicompact.methods import run_method
from semicompact.training import TrainConfig

MEDMNIST = ("bloodmnist", "pneumoniamnist", "breastmnist", "retinamnist")
#: plain-PyTorch references measured for this project (MobileNetV2, ImageNet weights, 64 px, 75 labels
#: per class, two-stage, official validation split): test macro-F1 the base must reach (issue 16)
REFERENCES = {"bloodmnist": 0.87, "pneumoniamnist": 0.85, "breastmnist": 0.72, "retinamnist": 0.37}


def run_one(shared: Path, out: Path, dataset: str, seed: int, steps: int, args: argparse.Namespace) -> dict:
    folder = out / "runs" / f"{dataset}__s{seed}__{steps}steps"
    metrics = folder / "metrics.json"
    if metrics.is_file():
        return json.loads(metrics.read_text(encoding="utf-8"))
    config = TrainConfig(
        data=str(shared / "data" / "medmnist" / f"{dataset}.npz"),
        out=str(folder),
        model=args.model,
        weights=str(shared / "weights" / args.weights),
        image_size=args.image_size,
        max_steps=steps,
        early_stopping=False,
        select=args.select,
        val=args.val,
        body_lr_mult=args.body_lr_mult,
        seed=seed,
        progress=False,
        tensorboard=False,
    )
    resume = (folder / "config.json").is_file()
    return run_method("supervised", config, resume=resume).metrics


def _cell(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f}({statistics.stdev(values):.1f})"


def table(results: dict[tuple[str, int, int], dict], steps: int, tolerance: float, key: str) -> list[str]:
    lines = [
        f"| dataset | N = {steps} steps | 2N = {2 * steps} steps | change (points) | converged "
        f"(change <= {tolerance:g}) | wall s per run at N / 2N |",
        "|---|---|---|---|---|---|",
    ]
    verdicts = []
    for dataset in MEDMNIST:
        seeds = sorted({s for d, s, n in results if d == dataset and n == steps and (d, s, 2 * n) in results})
        if not seeds:
            continue
        at_n = [100 * results[(dataset, s, steps)][key]["macro_f1"] for s in seeds]
        at_2n = [100 * results[(dataset, s, 2 * steps)][key]["macro_f1"] for s in seeds]
        change = statistics.mean(at_2n) - statistics.mean(at_n)
        ok = change <= tolerance
        verdicts.append(ok)
        wall = [
            statistics.mean(results[(dataset, s, n)]["cost"]["wall_time_s"] for s in seeds)
            for n in (steps, 2 * steps)
        ]
        lines.append(
            f"| {dataset} (seeds {', '.join(map(str, seeds))}) | {_cell(at_n)} | {_cell(at_2n)} | "
            f"{change:+.1f} | {'yes' if ok else '**no**'} | {wall[0]:.0f} / {wall[1]:.0f} |"
        )
    lines.append("")
    lines.append(
        f"Converged on {sum(verdicts)} of {len(verdicts)} datasets."
        if verdicts
        else "No dataset has both budgets yet."
    )
    return lines


def reference_table(results: dict[tuple[str, int, int], dict], steps: int, key: str) -> list[str]:
    """The base at N steps with the official validation split against the references."""
    lines = [
        f"| dataset | N = {steps} steps | reference | reached |",
        "|---|---|---|---|",
    ]
    for dataset in MEDMNIST:
        seeds = sorted(s for d, s, n in results if d == dataset and n == steps)
        if not seeds:
            continue
        scores = [100 * results[(dataset, s, steps)][key]["macro_f1"] for s in seeds]
        ok = statistics.mean(scores) >= 100 * REFERENCES[dataset]
        lines.append(
            f"| {dataset} (seeds {', '.join(map(str, seeds))}) | {_cell(scores)} | "
            f"{100 * REFERENCES[dataset]:.0f} | {'yes' if ok else '**no**'} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    parser.add_argument("--out", type=Path, default=Path("runs/supervised_convergence"))
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--datasets", nargs="+", default=list(MEDMNIST), choices=MEDMNIST)
    parser.add_argument("--model", default="mobilenetv2_100")
    parser.add_argument("--weights", default="mobilenet_v2-b0353104.pth")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--body-lr-mult", type=float, default=0.1)
    parser.add_argument("--select", default="last", choices=["best", "last"])
    parser.add_argument("--val", default="labelled", choices=["labelled", "official"])
    parser.add_argument("--tolerance", type=float, default=1.0)
    parser.add_argument("--only-table", action="store_true", help="Read finished runs, train nothing.")
    parser.add_argument(
        "--single", action="store_true", help="Only the budget N (the reference check, no doubling)."
    )
    args = parser.parse_args()
    if not (args.shared / "data" / "medmnist").is_dir():
        sys.exit(f"error: no MedMNIST data in {args.shared}/data/medmnist; pass --shared")
    results: dict[tuple[str, int, int], dict[str, Any]] = {}
    for seed in args.seeds:
        for dataset in args.datasets:
            for steps in (args.steps,) if args.single else (args.steps, 2 * args.steps):
                folder = args.out / "runs" / f"{dataset}__s{seed}__{steps}steps" / "metrics.json"
                if args.only_table and not folder.is_file():
                    continue
                results[(dataset, seed, steps)] = run_one(args.shared, args.out, dataset, seed, steps, args)
                print(f"{dataset} seed {seed} {steps} steps: done", flush=True)
    command = " ".join(["python", *sys.argv])
    lines = [
        "# Supervised convergence check (issue 16)",
        "",
        f"Command: `{command}`",
        "",
        f"MobileNetV2 ({args.model}) with ImageNet weights, {args.image_size} px, 75 labels per class, "
        f"validation: {args.val}; fixed schedule (no early stopping), body rate x{args.body_lr_mult}, "
        f"test macro-F1 (%) mean(std) over seeds.",
        "",
    ]
    for key, name in (("test_last", "last model (end of the schedule)"), ("test_best", "best on validation")):
        rows = (
            reference_table(results, args.steps, key)
            if args.single
            else table(results, args.steps, args.tolerance, key)
        )
        lines += [f"## {name}", "", *rows, ""]
    text = "\n".join(lines)
    write_text(args.out / "README.md", text + "\n")
    print(text)


if __name__ == "__main__":
    main()
