"""Every (model, dataset, seed) of a benchmark folder: the baseline and two methods side by side.

Prints a Markdown table of test macro-F1 with each method's change against the baseline in points
(as in ``bench/results/mixmatch_warm_64/README.md``), then the wall-time range and sum of the
second method's runs (``elapsed_s`` of their result files).

    .venv/bin/python bench/paired_runs.py bench/results/mixmatch_warm_64 mixmatch mixmatch_warm
"""

from __future__ import annotations

import argparse
from pathlib import Path

from semicompact.report.collect import collect


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bench", type=Path)
    parser.add_argument("first", help="method label, e.g. mixmatch")
    parser.add_argument("second", help="method label, e.g. mixmatch_warm")
    parser.add_argument("--baseline", default="supervised")
    args = parser.parse_args()
    rows = collect(args.bench).done
    score = {(r["model"], r["dataset"], r["seed"], r["method"]): r["macro_f1"] for r in rows}
    columns = [args.baseline, args.first, args.second, f"change {args.first} -> {args.second} (points)"]
    print("| model | dataset | seed | " + " | ".join(columns) + " |")
    print("|---|---|---|---|---|---|---|")
    for model, dataset, seed, _ in sorted(k for k in score if k[3] == args.baseline):
        b, a, w = (score.get((model, dataset, seed, m)) for m in (args.baseline, args.first, args.second))
        if a is None or w is None:
            continue
        change = f"{100 * (a - b):+.1f} -> {100 * (w - b):+.1f}"
        print(f"| {model} | {dataset} | {seed} | {b:.4f} | {a:.4f} | {w:.4f} | {change} |")
    times = [r["elapsed_s"] for r in rows if r["method"] == args.second and r["elapsed_s"]]
    if times:
        span = f"{min(times):.0f} to {max(times):.0f} s each, {sum(times):.0f} s in all"
        print(f"\n{args.second}: {len(times)} runs, {span}")


if __name__ == "__main__":
    main()
