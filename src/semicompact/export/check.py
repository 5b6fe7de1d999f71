"""Does the exported file predict like the model it came from? Measured on real images, and gated.

The check compares the exported file with the source model on real images: top-1 agreement, the
largest difference of any class probability and, when the images have labels, the macro-F1 of both.
``gate_failures`` turns the check into a verdict: an export below the thresholds is not written
unless the user asks for it (``--allow-disagreement``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..errors import ModelError

DEFAULT_MIN_AGREEMENT = 0.97
DEFAULT_MAX_F1_DROP = 0.01  # 1 point of macro-F1


class ExportCheckError(ModelError):
    """An exported file predicts too differently from its source model."""


@torch.inference_mode()
def compare_predictions(
    reference: Callable[[torch.Tensor], torch.Tensor],
    candidate: Callable[[torch.Tensor], torch.Tensor],
    batches: Any,
    classes: list[str] | None = None,
) -> dict[str, Any]:
    """Agreement and probability differences of ``candidate`` vs ``reference`` on uint8 batches.

    ``batches`` holds uint8 image tensors or ``(images, labels)`` pairs; with labels for every image
    (and ``classes``), the macro-F1 of both models is added.
    """
    agree, n, max_diff, sum_diff = 0, 0, 0.0, 0.0
    ref_pred, cand_pred, labels = [], [], []
    for item in batches:
        x, y = item if isinstance(item, tuple | list) else (item, None)
        if x.shape[0] == 0:
            continue
        xf = x.float().div(255.0)
        p = torch.softmax(reference(xf).float(), dim=1)
        q = torch.softmax(candidate(xf).float(), dim=1)
        agree += int((p.argmax(1) == q.argmax(1)).sum())
        n += x.shape[0]
        diff = (p - q).abs().amax(dim=1)
        max_diff = max(max_diff, float(diff.max()))
        sum_diff += float(diff.sum())
        ref_pred.append(p.argmax(1))
        cand_pred.append(q.argmax(1))
        labels.append(None if y is None else torch.as_tensor(y))
    if n == 0:
        return {"n": 0}
    out: dict[str, Any] = {
        "n": n,
        "top1_agreement": agree / n,
        "max_prob_diff": max_diff,
        "mean_max_prob_diff": sum_diff / n,
    }
    if classes and labels and all(y is not None and bool((y >= 0).all()) for y in labels):
        from torchmetrics.functional.classification import multiclass_f1_score

        y = torch.cat(labels).long()
        k = len(classes)
        for key, pred in (("reference_macro_f1", ref_pred), ("macro_f1", cand_pred)):
            out[key] = float(multiclass_f1_score(torch.cat(pred), y, k, average="macro", zero_division=0))
        out["macro_f1_change"] = out["macro_f1"] - out["reference_macro_f1"]
    return out


def gate_failures(
    check: dict[str, Any],
    min_agreement: float = DEFAULT_MIN_AGREEMENT,
    max_f1_drop: float = DEFAULT_MAX_F1_DROP,
) -> list[str]:
    """What falls below the thresholds (empty: the export passes)."""
    failures = []
    if check.get("n") and check["top1_agreement"] < min_agreement:
        failures.append(f"top-1 agreement {100 * check['top1_agreement']:.2f}% < {100 * min_agreement:.2f}%")
    if "macro_f1_change" in check and -check["macro_f1_change"] > max_f1_drop + 1e-12:
        failures.append(
            f"macro-F1 {check['macro_f1']:.4f} vs {check['reference_macro_f1']:.4f} "
            f"({100 * check['macro_f1_change']:+.2f} points, limit -{100 * max_f1_drop:.2f})"
        )
    return failures


def format_check(name: str, check: dict[str, Any]) -> str:
    if not check.get("n"):
        return f"{name}: not checked (no images)"
    text = (
        f"{name}: top-1 agreement {100 * check['top1_agreement']:.2f}% on {check['n']} real images, "
        f"max probability difference {check['max_prob_diff']:.2e}"
    )
    if "macro_f1_change" in check:
        text += f", macro-F1 {check['macro_f1']:.4f} ({100 * check['macro_f1_change']:+.2f} points)"
    return text
