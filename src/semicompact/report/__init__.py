"""Reports of a run or a whole benchmark: tables (Markdown, CSV, LaTeX), figures, one HTML page.

``write_report(DIR)`` writes ``DIR/report/``: ``report.md``, ``report.html`` (self-contained),
``stats.json`` (every statistical comparison in full), ``tables/<key>.{md,csv,tex}`` and
``figures/*.png``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..io import write_bytes, write_json, write_text
from .collect import Collection, collect
from .tables import Table, build_tables, to_csv, to_latex, to_markdown

__all__ = ["Collection", "ReportResult", "collect", "write_report"]


@dataclass
class ReportResult:
    out: Path
    tables: list[Table]
    figures: list[tuple[str, str, Path]]
    html: Path
    markdown: Path


def _run_tables(collection: Collection) -> list[Table]:
    run = collection.runs[0]
    metrics = json.loads((Path(run["run_dir"]) / "metrics.json").read_text(encoding="utf-8"))
    test = metrics.get("test", {})
    summary = Table(
        "run",
        f"Run {run['id']}: test results",
        "Scores on the test split of the run's own data (F1 is the positive-class F1 for two classes).",
        ["Model", "Dataset", "F1", "Macro-F1", "Accuracy", "Balanced accuracy", "ROC-AUC", "Test images"],
        [
            [
                run["model"],
                run["dataset"],
                test.get("f1"),
                test.get("macro_f1"),
                test.get("accuracy"),
                test.get("balanced_accuracy"),
                test.get("roc_auc"),
                test.get("n"),
            ]
        ],
    )
    per_class = Table(
        "per_class",
        "Per-class results",
        "Precision, recall, F1 and support of every class on the test split.",
        ["Class", "Precision", "Recall", "F1", "Support"],
        [
            [name, v["precision"], v["recall"], v["f1"], v["support"]]
            for name, v in test.get("per_class", {}).items()
        ],
    )
    info = Table(
        "training",
        "Training",
        "Epochs trained, mean training time per epoch, labelled images, model size and CPU latency.",
        ["Epochs", "s / epoch", "Labelled images", "Size (MB)", "Latency (ms)"],
        [
            [
                metrics.get("epochs_trained"),
                metrics.get("train_time_per_epoch_s"),
                metrics.get("labelled_images"),
                run.get("size_mb"),
                run.get("latency_ms"),
            ]
        ],
        numeric=False,
    )
    for table in (summary, per_class, info):
        table.digits = 3
    return [summary, per_class, info]


def environment_notes(runs: list[dict[str, Any]]) -> list[str]:
    """Which environments the finished runs come from: one seed's scores are bit-comparable only
    within one (the same recipe and seed can differ across library versions or CPUs)."""
    done = [r for r in runs if r.get("status") == "done"]
    envs: dict[str, int] = {}
    for r in done:
        if r.get("environment"):
            envs[r["environment"]] = envs.get(r["environment"], 0) + 1
    unknown = len(done) - sum(envs.values())
    if not envs:
        return []
    listed = "; ".join(f"{n} run(s) in {label}" for label, n in sorted(envs.items(), key=lambda kv: -kv[1]))
    note = f"Environments: {listed}"
    if unknown:
        note += f"; {unknown} run(s) finished before environments were recorded"
    if len(envs) > 1:
        note += ". The runs come from several environments: compare seeds within one where it matters"
    return [note + "."]


def zero_pseudo_label_notes(runs: list[dict[str, Any]]) -> list[str]:
    """Runs whose teachers kept no pseudo-label trained on the labelled images only, like the
    baseline: their cells are not a result of the method, and the reader must be told."""
    empty = [r for r in runs if r.get("pseudo_selected") == 0]
    if not empty:
        return []
    names = ", ".join(f"{r['dataset']}/{r['model']}/{r['method']}/seed {r['seed']}" for r in empty)
    return [
        f"Warning: {len(empty)} run(s) selected 0 pseudo-labels, so their student learnt from the "
        f"labelled images only (a baseline run, not a result of the method): {names}."
    ]


def write_report(path: str | Path, out: str | Path | None = None, metric: str = "f1") -> ReportResult:
    """Collect ``path`` (a benchmark or a run folder) and write its whole report to ``out``."""
    from .figures import build_figures, run_figures
    from .html import render_html
    from .tables import Study

    collection = collect(path)
    study = Study.build(collection, metric)
    folder = Path(out) if out else collection.root / "report"
    if collection.kind == "run":
        tables = _run_tables(collection) if collection.done else []
        figures = run_figures(study)
        title = f"semicompact run report: {collection.root.name}"
    else:
        tables = build_tables(study)
        figures = build_figures(study, folder / "figures") + run_figures(study)
        title = f"semicompact benchmark report: {collection.recipe.get('name', collection.root.name)}"
    counts: dict[str, int] = {}
    for run in collection.runs:
        counts[run["status"]] = counts.get(run["status"], 0) + 1
    intro = [
        f"Source: {collection.root}. Runs: "
        + ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        + f". Score: test {metric}, in percent for the study tables.",
    ]
    if collection.kind == "bench":
        intro.append(
            f"Datasets: {', '.join(study.datasets) or '-'}; models: {', '.join(study.models) or '-'}; "
            f"methods: {', '.join(study.methods) or '-'}; baseline: {study.baseline or '-'}."
        )
    if collection.kind == "bench":
        intro += environment_notes(collection.runs)
    intro += zero_pseudo_label_notes(collection.done)
    for table in tables:
        stem = folder / "tables" / table.key
        write_text(stem.with_suffix(".md"), to_markdown(table))
        write_text(stem.with_suffix(".csv"), to_csv(table))
        write_text(stem.with_suffix(".tex"), to_latex(table))
    stats: dict[str, Any] = {key: c.to_dict() for key, c in study.comparisons.items()}
    write_json(folder / "stats.json", stats)
    md = [f"# {title}", "", *intro, ""]
    md += [to_markdown(t) for t in tables]
    md += ["## Figures", ""]
    copied = []
    for key, caption, fig in figures:  # run plots are copied in: the report folder stands alone
        if not fig.resolve().is_relative_to(folder.resolve()):
            target = folder / "figures" / f"{key}.png"
            write_bytes(target, fig.read_bytes())
            fig = target
        copied.append((key, caption, fig))
        md += [f"![{key}]({fig.relative_to(folder).as_posix()})", "", caption, ""]
    figures = copied
    markdown = folder / "report.md"
    write_text(markdown, "\n".join(md))
    page = folder / "report.html"
    write_text(page, render_html(title, intro, tables, figures))
    return ReportResult(folder, tables, figures, page, markdown)
