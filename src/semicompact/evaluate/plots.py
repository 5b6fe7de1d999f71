"""Figures of a run: learning curves and the confusion matrix (PNG, written atomically)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt

from ..io import write_bytes


def _save(fig: plt.Figure, path: str | Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    write_bytes(path, buffer.getvalue())


def read_epoch_metrics(logs: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Per-epoch series from Lightning's CSV logs: ``logs/metrics.csv`` and, after each resumption,
    ``logs/resume-K/metrics.csv``; a later file's value for an epoch replaces an earlier one."""
    logs = Path(logs)
    files = [logs] if logs.is_file() else [logs / "metrics.csv"]
    if logs.is_dir():
        files += sorted(logs.glob("resume-*/metrics.csv"), key=lambda p: int(p.parent.name.split("-")[1]))
    values: dict[str, dict[int, float]] = {}
    for metrics_csv in files:
        if not metrics_csv.is_file():
            continue
        with open(metrics_csv, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                epoch = row.get("epoch")
                if not epoch:
                    continue
                for key, value in row.items():
                    if key not in ("epoch", "step") and value:
                        values.setdefault(key, {})[int(float(epoch))] = float(value)
    return {key: sorted(per_epoch.items()) for key, per_epoch in values.items()}


def plot_learning_curves(logs: str | Path, path: str | Path, head_epochs: int = 0) -> None:
    """Loss (left) and validation scores (right) per epoch; a line marks the end of the head-only stage."""
    series = read_epoch_metrics(logs)
    fig, (ax_loss, ax_score) = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, label in (("train/loss", "train loss"), ("val/loss", "validation loss")):
        if key in series:
            ax_loss.plot(*zip(*series[key], strict=True), marker="o", ms=3, label=label)
    for key, label in (("val/macro_f1", "validation macro-F1"), ("val/accuracy", "validation accuracy")):
        if key in series:
            ax_score.plot(*zip(*series[key], strict=True), marker="o", ms=3, label=label)
    for ax, title in ((ax_loss, "Loss"), (ax_score, "Validation")):
        if head_epochs:
            ax.axvline(head_epochs - 0.5, color="grey", ls="--", lw=1, label="all layers from here")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax_score.set_ylim(0, 1)
    _save(fig, path)


def plot_confusion_matrix(
    matrix: Sequence[Sequence[int]], classes: Sequence[str], path: str | Path, title: str = "Confusion matrix"
) -> None:
    """Counts with row-normalised colour, so rare classes stay visible."""
    k = len(classes)
    rows = [max(1, sum(r)) for r in matrix]
    norm = [[v / rows[i] for v in r] for i, r in enumerate(matrix)]
    size = max(4.0, 0.6 * k + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    image = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                str(matrix[i][j]),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if norm[i][j] > 0.5 else "black",
            )
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of true class")
    _save(fig, path)
