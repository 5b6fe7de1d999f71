"""Classification metrics of the paper and of a careful clinical report.

``f1`` is the paper's number: the F1 of the positive class (index 1) for binary tasks and the
macro-F1 otherwise; ``macro_f1`` is always reported too, because on imbalanced data it is the one
that matters.
"""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_auroc,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)


def classification_metrics(probs: torch.Tensor, targets: torch.Tensor, classes: list[str]) -> dict[str, Any]:
    """All metrics for ``probs`` (N, C) against integer ``targets`` (N,)."""
    probs = probs.detach().float().cpu()
    targets = targets.detach().long().cpu()
    k = len(classes)
    if probs.ndim != 2 or probs.shape[1] != k:
        raise ValueError(f"probs must be (N, {k}), got {tuple(probs.shape)}")
    n = int(targets.numel())
    result: dict[str, Any] = {"n": n, "classes": list(classes)}
    if n == 0:
        return result
    preds = probs.argmax(dim=1)
    per_class = {
        "precision": multiclass_precision(preds, targets, k, average=None, zero_division=0),
        "recall": multiclass_recall(preds, targets, k, average=None, zero_division=0),
        "f1": multiclass_f1_score(preds, targets, k, average=None, zero_division=0),
    }
    support = torch.bincount(targets, minlength=k)
    macro_f1 = float(multiclass_f1_score(preds, targets, k, average="macro", zero_division=0))
    result.update(
        accuracy=float(multiclass_accuracy(preds, targets, k, average="micro")),
        balanced_accuracy=float(multiclass_accuracy(preds, targets, k, average="macro")),
        macro_f1=macro_f1,
        f1=float(per_class["f1"][1]) if k == 2 else macro_f1,
        per_class={
            name: {
                "precision": float(per_class["precision"][i]),
                "recall": float(per_class["recall"][i]),
                "f1": float(per_class["f1"][i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(classes)
        },
        confusion_matrix=multiclass_confusion_matrix(preds, targets, k).tolist(),
        roc_auc=_roc_auc(probs, targets, k),
        predicted_classes=int(torch.unique(preds).numel()),
    )
    return result


def _roc_auc(probs: torch.Tensor, targets: torch.Tensor, k: int) -> float | None:
    """Macro one-vs-rest ROC-AUC over the classes present; None when fewer than two are present."""
    present = torch.unique(targets)
    if present.numel() < 2:
        return None
    auc = multiclass_auroc(probs, targets, k, average=None)
    return float(auc[present].mean())


def chance_macro_f1(support: list[int]) -> float:
    """Expected macro-F1 of the better of two no-skill predictors on a test set with ``support``.

    A uniform random guess scores ``2 p_c / (k p_c + 1)`` on class c (precision p_c, recall 1/k);
    always predicting the majority class scores ``2 p_max / (1 + p_max) / k``.
    """
    n, k = sum(support), len(support)
    if n == 0 or k == 0:
        return 0.0
    priors = [s / n for s in support]
    uniform = sum(2 * p / (k * p + 1) for p in priors) / k
    majority = 2 * max(priors) / (1 + max(priors)) / k
    return max(uniform, majority)


def collapse_check(metrics: dict[str, Any], margin: float = 0.02) -> str | None:
    """Why a run has collapsed (all one class, or no better than chance), or None if it has not.

    FixMatch and MixMatch in the seed library silently reached F1 = 0 on several datasets; the run
    summary and the report carry this reason so that such a result can never pass unnoticed.
    """
    if not metrics.get("n"):
        return None
    k = len(metrics["classes"])
    if k > 1 and metrics.get("predicted_classes") == 1:
        return "every test image is predicted as one class"
    support = [metrics["per_class"][c]["support"] for c in metrics["classes"]]
    chance = chance_macro_f1(support)
    if metrics["macro_f1"] <= chance + margin:
        return f"macro-F1 {metrics['macro_f1']:.3f} is at chance level ({chance:.3f})"
    return None
