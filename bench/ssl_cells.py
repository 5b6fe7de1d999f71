"""Per-cell view of an equal-budget grid, for the README: each method's seed-mean test macro-F1 per
dataset, its mean change over the supervised base (seed-paired), its worst (dataset, seed) cell and
how many cells are at or above the base, with the run's cost. `ssl_goals.py` gives the goals and
seed spreads; this gives what a "safe default" claim rests on (every cell, not the mean).

    .venv/bin/python bench/ssl_cells.py bench/results/ssl_medmnist_64_budget --model mobilenetv2_100
"""

from __future__ import annotations

import argparse
import json
import statistics as st
from collections import defaultdict
from pathlib import Path

DATASETS = ("bloodmnist", "breastmnist", "pneumoniamnist", "retinamnist")
BASE = "supervised"


def load(results: Path, model: str) -> dict[str, dict[tuple[str, int], dict]]:
    """method -> (dataset, seed) -> metrics.json of the finished runs of ``model``."""
    runs: dict[str, dict[tuple[str, int], dict]] = defaultdict(dict)
    for metrics in sorted((results / "runs").glob(f"*__{model}__*__s*/metrics.json")):
        dataset, _, method, seed = metrics.parent.name.split("__")
        runs[method][(dataset, int(seed[1:]))] = json.loads(metrics.read_text())
    return runs


def _f1(metrics: dict) -> float:
    return float(metrics["test"]["macro_f1"]) * 100


def row(method: str, cells: dict[tuple[str, int], dict], base: dict[tuple[str, int], dict]) -> str:
    seeds = sorted({s for _, s in cells})
    means = [[_f1(cells[(d, s)]) for s in seeds if (d, s) in cells] for d in DATASETS]
    scores = " | ".join(f"{st.mean(v):.1f}" if v else "-" for v in means)
    diffs = {k: _f1(m) - _f1(base[k]) for k, m in cells.items() if k in base}
    change = worst = share = ""
    if method != BASE and diffs:
        per_set = defaultdict(list)
        for (dataset, _), d in diffs.items():
            per_set[dataset].append(d)
        change = f"{st.mean(st.mean(v) for v in per_set.values()):+.1f}"
        change += "" if len(per_set) == len(DATASETS) else f" ({len(per_set)} sets)"
        (dataset, seed), low = min(diffs.items(), key=lambda kv: kv[1])
        worst = f"{low:+.1f} ({dataset.removesuffix('mnist').capitalize()} s{seed})"
        share = f"{sum(d >= 0 for d in diffs.values())}/{len(diffs)}"
    costs = [m["cost"] for m in cells.values()]
    teacher_steps = costs[0].get("teacher_steps") or "-"
    unlabelled = round(st.mean(c["unlabelled_images_seen"] for c in costs))
    wall = f"{round(st.mean(c['wall_time_s'] for c in costs))}"
    teacher_wall = [c["teacher_wall_time_s"] for c in costs if c.get("teacher_wall_time_s")]
    wall += f" (+{round(st.mean(teacher_wall))})" if teacher_wall else ""
    seed_list = ",".join(map(str, seeds))
    by_set = {d: {s for d2, s in cells if d2 == d} for d in DATASETS}
    common = sorted(set.intersection(*by_set.values()))
    if common != seeds:  # say which sets have the extra seeds, so a partial row does not read as full
        extra = [d.removesuffix("mnist").capitalize() for d, have in by_set.items() if have != set(common)]
        seed_list = f"{','.join(map(str, common)) or '-'} (+ more on {', '.join(extra)})"
    return (
        f"| {method} | {seed_list} | {scores} | {change} | {worst} | {share} | {teacher_steps} "
        f"| {unlabelled} | {wall} |"
    )


def table(results: Path, model: str, order: list[str] | None = None) -> str:
    runs = load(results, model)
    methods = [BASE, *sorted(m for m in runs if m != BASE)]
    if order:
        methods = [m for m in order if m in runs] + [m for m in methods if m not in order]
    lines = [
        "| method | seeds | Blood | Breast | Pneumonia | Retina | change vs base | worst cell "
        "| cells >= base | teacher steps | unlabelled passes | wall s (+ teachers) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    return "\n".join(lines + [row(m, runs[m], runs[BASE]) for m in methods])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--model", default="mobilenetv2_100")
    parser.add_argument("--order", default="", help="comma-separated methods listed first")
    args = parser.parse_args()
    print(table(args.results, args.model, [m for m in args.order.split(",") if m]))


if __name__ == "__main__":
    main()
