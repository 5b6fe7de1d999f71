"""SoftMatch (Chen et al., ICLR 2023, "SoftMatch: Addressing the Quantity-Quality Trade-off in
Semi-supervised Learning"): every unlabelled image counts, weighted by a truncated Gaussian of its
confidence, with Uniform Alignment of the weak view's probabilities."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ._adaptive import AdaptiveConsistencyModule, AdaptiveMethod
from ._options import flag, number
from .adaptive_thresholds import DistributionAlignment, SoftMatchWeights, masked_cross_entropy
from .base import register_method
from .consistency import POOL_OPTIONS


class SoftMatchModule(AdaptiveConsistencyModule):
    """Weights from :class:`SoftMatchWeights` on the aligned weak-view probabilities; the
    pseudo-label is the argmax of the weak view before alignment (USB: UA only shapes the weights).

    Uniform Alignment (``uniform_alignment``, published) aligns to the uniform distribution;
    ``dist_align`` aligns to the labelled class prior instead (ReMixMatch's target).
    """

    def __init__(
        self, *args: Any, n_sigma: float = 2.0, uniform_alignment: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        c, ema_p = len(self.classes), self.ema_p
        self.soft = SoftMatchWeights(c, ema_p, n_sigma)
        if self.dist_align is None and uniform_alignment:
            self.dist_align = DistributionAlignment(torch.full((c,), 1.0 / c), ema_p)

    def training_loss(self, batch: Any) -> torch.Tensor:
        supervised, weak, strong = self.views(batch)
        if weak is None or strong is None:
            return supervised
        aligned = self.weak_probs(weak)
        self.soft.update(self.gather(aligned))  # the update first, then the weights, as USB
        weight = self.soft.weights(aligned)
        pseudo = weak.detach().argmax(dim=1)
        loss_u = masked_cross_entropy(strong, pseudo, weight)
        self.log_unlabelled(loss_u, weight)
        return supervised + self.lambda_u * loss_u


@register_method("softmatch")
class SoftMatch(AdaptiveMethod):
    summary = "SoftMatch: truncated-Gaussian confidence weights (n_sigma 2) + uniform alignment; EMA model"
    module_class = SoftMatchModule
    options: ClassVar[dict[str, Any]] = {
        "mu": 7,
        "lambda_u": 1.0,
        "n_sigma": 2.0,
        "ema_p": 0.999,
        "uniform_alignment": True,
        "ema": 0.999,
        "warm_start": False,
        "dist_align": False,
        **POOL_OPTIONS,
    }

    def check(self) -> dict[str, Any]:
        c = self.config
        return {
            "n_sigma": number(c, "n_sigma", 0.01, 100.0, self.name),
            "uniform_alignment": flag(c, "uniform_alignment", self.name),
        }
