"""Does the exported file predict like the model it came from? Measured on real images."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


@torch.inference_mode()
def compare_predictions(
    reference: Callable[[torch.Tensor], torch.Tensor],
    candidate: Callable[[torch.Tensor], torch.Tensor],
    batches: Any,
) -> dict[str, Any]:
    """Top-1 agreement and probability differences of ``candidate`` vs ``reference`` on uint8 batches."""
    agree, n, max_diff, sum_diff = 0, 0, 0.0, 0.0
    for x in batches:
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
    if n == 0:
        return {"n": 0}
    return {
        "n": n,
        "top1_agreement": agree / n,
        "max_prob_diff": max_diff,
        "mean_max_prob_diff": sum_diff / n,
    }


def format_check(name: str, check: dict[str, Any]) -> str:
    if not check.get("n"):
        return f"{name}: not checked (no images)"
    return (
        f"{name}: top-1 agreement {100 * check['top1_agreement']:.2f}% on {check['n']} real images, "
        f"max probability difference {check['max_prob_diff']:.2e}"
    )
