"""The report's figures: model x method heat map, critical-difference diagram, Pareto fronts.

Each function writes one PNG and returns its path, or None when the results cannot support the
figure (one method only, no latency measured, ...). Learning curves and confusion matrices are the
PNGs every run already wrote; the report embeds them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from ..evaluate.stats import pairwise_p
from .tables import Study


def _save(fig: Any, path: Path) -> Path:
    from ..io import atomic_open

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def heatmap(study: Study, path: Path) -> Path | None:
    df = study.frame
    if df.empty:
        return None
    grid = df.groupby(["method", "model"])["value"].mean().unstack("model")
    grid = grid.reindex(index=study.methods, columns=study.models)
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(study.models), 1.0 + 0.55 * len(study.methods)))
    image = ax.imshow(grid.to_numpy(dtype=float), cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(study.models)), study.models, rotation=35, ha="right")
    ax.set_yticks(range(len(study.methods)), study.methods)
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            value = grid.iat[i, j]
            if not math.isnan(value):
                ax.text(j, i, f"{value:.1f}", ha="center", va="center", color="w", fontsize=8)
    fig.colorbar(image, ax=ax, label=f"{study.metric} (%)")
    ax.set_title(f"Mean {study.metric} (%) over datasets and seeds")
    return _save(fig, path)


def cd_diagram(study: Study, group: str, order: list[str], path: Path, title: str) -> Path | None:
    """Friedman average ranks (1 = best, Demšar's convention) joined where Holm finds no difference."""
    import scikit_posthocs as sp

    matrix = study.matrix(study.frame, group, order)
    if matrix.shape[0] < 2 or matrix.shape[1] < 3:
        return None
    x = matrix.to_numpy(dtype=float)
    names = [str(c) for c in matrix.columns]
    ranks = pd.DataFrame(x).rank(axis=1, ascending=False).mean(axis=0)
    ranks.index = names
    sig = pairwise_p(x, names)
    fig, ax = plt.subplots(figsize=(8, 0.6 + 0.35 * len(names)))
    sp.critical_difference_diagram(ranks, sig, ax=ax)
    ax.set_title(title)
    return _save(fig, path)


def pareto_front(points: pd.DataFrame) -> list[Any]:
    """The rows (with ``cost``, ``score``) no other row beats on both: lower cost and higher score."""
    front, best = [], -math.inf
    for row in points.sort_values(["cost", "score"], ascending=[True, False]).itertuples():
        if row.score > best:
            front.append(row)
            best = row.score
    return front


def pareto(study: Study, column: str, label: str, path: Path) -> Path | None:
    """Score against cost for every (model, method); the Pareto front is what is worth deploying."""
    runs = pd.DataFrame(study.collection.done)
    if runs.empty or column not in runs or runs[column].isna().all():
        return None
    runs = runs.assign(score=100.0 * runs[study.metric].astype(float), cost=pd.to_numeric(runs[column]))
    points = runs.groupby(["model", "method"], sort=False)[["cost", "score"]].mean().reset_index()
    points = points.dropna()
    front = pareto_front(points)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter(points["cost"], points["score"], color="0.6", label="model / method")
    ax.plot([r.cost for r in front], [r.score for r in front], "o-", color="C3", label="Pareto front")
    for r in front:
        ax.annotate(
            f"{r.model} / {r.method}",
            (r.cost, r.score),
            fontsize=7,
            xytext=(4, 4),
            textcoords="offset points",
        )
    ax.set_xlabel(label)
    ax.set_ylabel(f"{study.metric} (%)")
    if points["cost"].min() > 0 and points["cost"].max() / points["cost"].min() > 20:
        ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{study.metric} against {label.split(' (')[0].lower()}")
    return _save(fig, path)


def build_figures(study: Study, folder: Path) -> list[tuple[str, str, Path]]:
    """(key, caption, path) of every figure the results support."""
    figures: list[tuple[str, str, Path | None]] = [
        ("heatmap", "Model x method mean score.", heatmap(study, folder / "heatmap.png")),
        (
            "cd_methods",
            "Critical-difference diagram of the methods (Friedman ranks, 1 = best, i.e. k + 1 minus the "
            "tables' rank, where higher is better; a bar joins methods "
            "Holm does not separate).",
            cd_diagram(study, "method", study.methods, folder / "cd_methods.png", "Methods"),
        ),
        (
            "cd_models",
            "Critical-difference diagram of the models, all methods pooled.",
            cd_diagram(study, "model", study.models, folder / "cd_models.png", "Models"),
        ),
        (
            "pareto_latency",
            "Score against CPU latency per image: the Pareto front of what to deploy.",
            pareto(study, "latency_ms", "latency per image (ms)", folder / "pareto_latency.png"),
        ),
        (
            "pareto_size",
            "Score against model size.",
            pareto(study, "size_mb", "model size (MB)", folder / "pareto_size.png"),
        ),
    ]
    return [(k, c, p) for k, c, p in figures if p is not None]


def run_figures(study: Study) -> list[tuple[str, str, Path]]:
    """Learning curve and confusion matrix of the best run of each dataset (of the single run).

    Benchmark folders in git keep only each run's JSON files, so the best run may have no figures
    on disk: then the best run that has them is shown, and the caption says so.
    """
    files = (("learning_curve.png", "Learning curves"), ("confusion_matrix.png", "Confusion matrix"))
    best: dict[str, dict[str, Any]] = {}
    shown: dict[str, dict[str, Any]] = {}
    for run in study.collection.done:
        dataset = run["dataset"]
        if dataset not in best or run[study.metric] > best[dataset][study.metric]:
            best[dataset] = run
        has_figures = any((Path(run["run_dir"]) / file).is_file() for file, _ in files)
        if has_figures and (dataset not in shown or run[study.metric] > shown[dataset][study.metric]):
            shown[dataset] = run
    figures = []
    for dataset, run in shown.items():
        folder = Path(run["run_dir"])
        if best[dataset] is run:
            which = f"the best run on {dataset} ({_run_name(run)})"
        else:
            which = (
                f"the best run on {dataset} with figures on disk ({_run_name(run)}; the best, "
                f"{_run_name(best[dataset])}, kept only its JSON results)"
            )
        for file, what in files:
            if (folder / file).is_file():
                key = f"{what.split()[0].lower()}_{dataset}".replace(" ", "_")
                figures.append((key, f"{what} of {which}.", folder / file))
    return figures


def _run_name(run: dict[str, Any]) -> str:
    return f"{run['model']} / {run['method']} / seed {run['seed']}"
