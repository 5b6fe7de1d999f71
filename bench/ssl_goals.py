"""Issue 5's and issue 17's goals, checked on a benchmark folder of semi-supervised runs (test macro-F1).

For every student network: mean(std) over seeds of each method on each dataset, its change against
the baseline method in points, and the goals:

- every method's mean over the datasets at least the baseline's (issue 5);
- the best method at least +5 points over the baseline on average (issue 5);
- FixMatch and MixMatch never more than 1 point below the baseline on any dataset (issue 5);
- the best method at least +3 points on average AND at or above the baseline on every dataset
  (issue 17, meaningful only for an equal-budget grid: see the cost section);
- some method at or above the baseline on every dataset with every seed: the safe default (issue 17);
- the student's best method at or above each of its teacher networks trained supervised on the same
  labels and budget (issue 17): the teacher's score is its ``supervised`` row when the grid trains
  that network as a student too, else its cached teacher run (``runs/teachers/``);
- where the gain comes from (issue 17: "from the unlabelled images"): each method against its
  control row, the same run without the unlabelled images (``--control kd=kd_labelled``), paired by
  (dataset, seed).

Only (dataset, seed) pairs where both the method and the baseline finished are compared, so a
partly run grid gives honest partial numbers (the seeds used are listed).

    .venv/bin/python bench/ssl_goals.py bench/results/ssl_medmnist_64 \
        --out bench/results/ssl_medmnist_64/goals.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from semicompact.io import write_text
from semicompact.report.collect import collect

CONSISTENCY = ("fixmatch", "mixmatch")


def is_consistency(label: str) -> bool:
    """FixMatch and MixMatch, and recipe variants of them labelled like ``mixmatch_warm``."""
    return any(label == name or label.startswith(f"{name}_") for name in CONSISTENCY)


def paired_scores(bench: Path, metric: str, baseline: str) -> pd.DataFrame:
    """One row per (model, dataset, seed, method) with the score and the baseline's score, in points."""
    done = pd.DataFrame(collect(bench).done)
    base = done[done["method"] == baseline][["model", "dataset", "seed", metric]]
    pairs = done.merge(base, on=["model", "dataset", "seed"], suffixes=("", "_base"))
    pairs["score"] = 100 * pairs[metric]
    pairs["change"] = 100 * (pairs[metric] - pairs[f"{metric}_base"])
    return pairs


def _cell(values: pd.Series, n_seeds: int) -> str:
    """mean(std) in points; a cell over fewer seeds than its baseline says so."""
    text = f"{values.iloc[0]:.1f}" if len(values) == 1 else f"{values.mean():.1f}({values.std(ddof=1):.1f})"
    return text if len(values) >= n_seeds else f"{text} [{len(values)} of {n_seeds} seeds]"


def model_section(pairs: pd.DataFrame, model: str, baseline: str) -> list[str]:
    benchmark_datasets = set(pairs["dataset"])
    sub = pairs[pairs["model"] == model]
    # only datasets where some method was compared: a lone baseline run would skew its mean
    sub = sub[sub["dataset"].isin(sub[sub["method"] != baseline]["dataset"])]
    datasets = sorted(sub["dataset"].unique())
    methods = [baseline, *sorted(set(sub["method"]) - {baseline})]
    lines = [f"## {model}", ""]
    seeds = {d: sorted(sub[(sub["dataset"] == d) & (sub["method"] == baseline)]["seed"]) for d in datasets}
    lines += ["Seeds per dataset: " + ", ".join(f"{d} {seeds[d]}" for d in datasets), ""]
    lines += [
        "| method | " + " | ".join(datasets) + " | mean over datasets | change vs "
        f"{baseline} (points) | worst dataset change |",
        "|---|" + "---|" * (len(datasets) + 3),
    ]
    summary = {}
    for method in methods:
        m = sub[sub["method"] == method]
        per_dataset = m.groupby("dataset")["change"].mean()
        cells = [
            _cell(m[m["dataset"] == d]["score"], len(seeds[d])) if d in set(m["dataset"]) else "-"
            for d in datasets
        ]
        mean_score = m.groupby("dataset")["score"].mean().mean()
        change = per_dataset.mean()
        # every dataset has the baseline's seeds (at least one), so this also means every dataset
        all_seeds = all((m["dataset"] == d).sum() >= len(seeds[d]) for d in datasets)
        summary[method] = (change, per_dataset.min(), all_seeds, m["change"].min())
        worst = "" if method == baseline else f"{per_dataset.min():+.1f} ({per_dataset.idxmin()})"
        delta = "" if method == baseline else f"{change:+.1f}"
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {mean_score:.1f} | {delta} | {worst} |")
    lines += [
        "",
        "Cells: test macro-F1 (%) mean(std) over seeds. Changes: mean over datasets of the "
        "seed-averaged paired differences.",
        "",
    ]
    others = {k: v for k, v in summary.items() if k != baseline}
    fewer_seeds = [k for k, v in others.items() if not v[2]]
    if set(datasets) != benchmark_datasets:
        note = f" (partial: {len(datasets)} of {len(benchmark_datasets)} datasets)"
    elif fewer_seeds:
        note = f" (partial: fewer seeds for {', '.join(fewer_seeds)})"
    else:
        note = ""
    complete = not note
    verdict = "yes" if complete else "so far yes (partial grid)"
    best = max(others, key=lambda k: others[k][0])
    below = [f"{k} {v[0]:+.1f}" for k, v in others.items() if v[0] < 0]
    ssl = {k: v for k, v in others.items() if is_consistency(k)}
    ssl_bad = [f"{k} {v[1]:+.1f}" for k, v in ssl.items() if v[1] < -1.0]
    lines += [
        "| goal | measured | reached |",
        "|---|---|---|",
        f"| every method's mean >= {baseline} | lowest: "
        f"{min(others, key=lambda k: others[k][0])} {min(v[0] for v in others.values()):+.1f}{note} | "
        f"{verdict if not below else '**no**: ' + ', '.join(below)} |",
        f"| best method >= +5 points on average | {best} {others[best][0]:+.1f}{note} | "
        f"{verdict if others[best][0] >= 5 else '**no**'} |",
        "| FixMatch, MixMatch never > 1 point below on any dataset | "
        + ", ".join(f"{k} worst {v[1]:+.1f}" for k, v in ssl.items())
        + f" | {verdict if not ssl_bad else '**no**: ' + ', '.join(ssl_bad)} |",
    ]
    lines += issue17_goals(others, verdict, note)
    return lines


def issue17_goals(others: dict[str, tuple], verdict: str, note: str) -> list[str]:
    """Issue 17: a real gain (+3 on average, never below on a dataset) and a safe default."""
    safe_first = [k for k, v in others.items() if v[1] >= 0]  # at or above on every dataset
    best = max(safe_first, key=lambda k: others[k][0]) if safe_first else None
    gain = f"{best} {others[best][0]:+.1f}{note}" if best else "no method is at or above it on every dataset"
    safe = sorted((k for k, v in others.items() if v[3] >= 0), key=lambda k: -others[k][0])
    worst = max(others, key=lambda k: others[k][3])
    return [
        f"| best method >= +3 points on average and >= the base on every dataset (issue 17) | {gain} | "
        f"{verdict if best and others[best][0] >= 3 else '**no**'} |",
        "| a method >= the base on every dataset with every seed (issue 17's safe default) | "
        + (
            ", ".join(f"{k} ({others[k][0]:+.1f})" for k in safe)
            if safe
            else f"none; closest {worst} (worst pair {others[worst][3]:+.1f})"
        )
        + f"{note} | {verdict if safe else '**no**'} |",
        "",
    ]


def teacher_scores(bench: Path, metric: str, baseline: str) -> pd.DataFrame:
    """(network, dataset, seed, score in points) of every network trained supervised in ``bench``:
    the baseline rows, and the cached teacher runs (matched to datasets by their data file)."""
    done = pd.DataFrame(collect(bench).done)
    base = done[done["method"] == baseline]
    rows = [
        {"network": n, "dataset": d, "seed": sd, "score": 100 * v}
        for n, d, sd, v in zip(base["model_name"], base["dataset"], base["seed"], base[metric], strict=True)
    ]
    datasets = {}  # data file -> dataset name, from the finished runs
    for run_dir, name in zip(done["run_dir"], done["dataset"], strict=True):
        config = Path(run_dir) / "config.json"
        if config.is_file():
            datasets[Path(json.loads(config.read_text())["data"]).name] = name
    for teacher in sorted((bench / "runs" / "teachers").glob("*/metrics.json")):
        config = json.loads((teacher.parent / "config.json").read_text())
        name = datasets.get(Path(config["data"]).name)
        score = json.loads(teacher.read_text()).get("test", {}).get(metric)
        if name is not None and score is not None:
            network, seed = config["model"], config["seed"]
            rows.append({"network": network, "dataset": name, "seed": seed, "score": 100 * score})
    table = pd.DataFrame(rows, columns=["network", "dataset", "seed", "score"])
    return table.drop_duplicates(["network", "dataset", "seed"])  # a baseline row wins over its cache


def teacher_section(pairs: pd.DataFrame, teachers: pd.DataFrame, model: str, baseline: str) -> list[str]:
    """The student's best method (by mean change) against each teacher network trained supervised
    on the same labels, over the (dataset, seed) pairs both have."""
    sub = pairs[(pairs["model"] == model) & (pairs["method"] != baseline)]
    if sub.empty or teachers.empty:
        return []
    best = sub.groupby(["method", "dataset"])["change"].mean().groupby("method").mean().idxmax()
    ours = sub[sub["method"] == best][["dataset", "seed", "score"]]
    lines = [
        f"Student vs teacher (issue 17): {model} trained with its best method ({best}) against each "
        "teacher network trained supervised on the same labels and step budget.",
        "",
        "| teacher network | datasets (seeds) | teacher | student | change | reached |",
        "|---|---|---|---|---|---|",
    ]
    for network in sorted(set(teachers["network"])):
        theirs = teachers[teachers["network"] == network]
        both = ours.merge(theirs, on=["dataset", "seed"], suffixes=("", "_t"))
        if both.empty:
            continue
        student = both.groupby("dataset")["score"].mean().mean()
        teacher = both.groupby("dataset")["score_t"].mean().mean()
        where = ", ".join(f"{d} ({len(g)})" for d, g in both.groupby("dataset"))
        reached = "yes" if student >= teacher else "**no**"
        lines.append(
            f"| {network} | {where} | {teacher:.1f} | {student:.1f} | {student - teacher:+.1f} | {reached} |"
        )
    return [*lines, ""]


#: method -> its run without the unlabelled images; a pair shows only where both rows have runs
CONTROLS = {"kd": "kd_labelled", "kd_pool": "kd_labelled"}


def control_pair(text: str) -> tuple[str, str]:
    """``--control METHOD=CONTROL`` as a pair; anything else is one clear argparse error."""
    method, sep, control = text.partition("=")
    if not (sep and method and control):
        raise argparse.ArgumentTypeError(f"'{text}' is not METHOD=CONTROL, e.g. kd=kd_labelled")
    return method, control


def control_section(pairs: pd.DataFrame, model: str, baseline: str, controls: dict[str, str]) -> list[str]:
    """Each method against its control (the same run without the unlabelled images), paired by
    (dataset, seed): the method's gain over the baseline split into the part the control already
    has (teachers, soft targets) and the part only the unlabelled images give."""
    sub = pairs[pairs["model"] == model]
    rows = []
    for method, control in controls.items():
        mine = sub[sub["method"] == method][["dataset", "seed", "score", "change"]]
        theirs = sub[sub["method"] == control][["dataset", "seed", "score", "change"]]
        both = mine.merge(theirs, on=["dataset", "seed"], suffixes=("", "_c"))
        if both.empty:
            continue
        both["gain"] = both["score"] - both["score_c"]
        by_dataset = both.groupby("dataset")[["change", "change_c", "gain"]].mean()
        worst = by_dataset["gain"].idxmin()
        wins = int((both["gain"] > 0).sum())
        cells = f"{len(both)} ({both['dataset'].nunique()} datasets)"
        rows.append(
            f"| {method} | {control} | {cells} | {by_dataset['change'].mean():+.1f} | "
            f"{by_dataset['change_c'].mean():+.1f} | **{by_dataset['gain'].mean():+.1f}** | "
            f"{by_dataset['gain'][worst]:+.1f} ({worst}) | {wins} of {len(both)} |"
        )
    if not rows:
        return []
    return [
        f"Where the gain comes from (issue 17): each method against its control, the same run without "
        f"the unlabelled images, paired by (dataset, seed); changes are in points against {baseline}.",
        "",
        "| method | control (no unlabelled images) | cells | method vs base | control vs base | "
        "from the unlabelled images | worst dataset | cells where the method wins |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]


COST_COLUMNS = {
    "optimizer_steps": "steps",
    "teacher_steps": "teacher steps",
    "labelled_images_seen": "labelled seen",
    "unlabelled_images_seen": "unlabelled seen",
    "wall_time_s": "wall s",
    "teacher_wall_time_s": "teacher wall s",
}


def cost_section(pairs: pd.DataFrame, model: str) -> list[str]:
    """What each score cost (mean per run): steps of the run and of its teachers or warm start,
    images through the student (every view), wall time; and whether the steps were equal in every
    cell. Runs from before costs were recorded give no section."""
    sub = pairs[pairs["model"] == model]
    if "optimizer_steps" not in sub or sub["optimizer_steps"].isna().all():
        return ["Cost: not recorded by these runs (they predate issue 16's cost fields).", ""]
    lines = [
        "| method | " + " | ".join(COST_COLUMNS.values()) + " |",
        "|---|" + "---|" * len(COST_COLUMNS),
    ]
    for method in dict.fromkeys(sub["method"]):
        m = sub[sub["method"] == method]
        cells = []
        for column in COST_COLUMNS:
            values = pd.to_numeric(m[column], errors="coerce").dropna() if column in m else pd.Series([])
            cells.append(f"{values.mean():.0f}" if len(values) else "-")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    per_cell = sub.groupby(["dataset", "seed"])["optimizer_steps"].nunique()
    equal = "equal in every (dataset, seed) cell" if (per_cell == 1).all() else "**not equal** in some cells"
    return [f"Cost per run (mean): optimiser steps {equal}.", "", *lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bench", type=Path)
    parser.add_argument("--metric", default="macro_f1", choices=["macro_f1", "f1", "accuracy"])
    parser.add_argument("--baseline", default="supervised")
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--control",
        action="append",
        type=control_pair,
        metavar="METHOD=CONTROL",
        help=f"a method and its run without the unlabelled images (default: {CONTROLS})",
    )
    args = parser.parse_args()
    controls = dict(args.control) if args.control else CONTROLS
    pairs = paired_scores(args.bench, args.metric, args.baseline)
    teachers = teacher_scores(args.bench, args.metric, args.baseline)
    lines = [f"# Semi-supervised goals: {args.bench} ({args.metric})", ""]
    for model in dict.fromkeys(pairs["model"]):
        lines += model_section(pairs, model, args.baseline)
        lines += teacher_section(pairs, teachers, model, args.baseline)
        lines += control_section(pairs, model, args.baseline, controls)
        lines += cost_section(pairs, model)
    text = "\n".join(lines)
    if args.out:
        write_text(args.out, text + "\n")
    print(text)


if __name__ == "__main__":
    main()
