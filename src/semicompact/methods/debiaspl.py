"""DebiasPL (Wang et al., CVPR 2022, "Debiased Learning from Naturally Imbalanced Pseudo-Labels"):
FixMatch whose pseudo-labels are debiased by the model's running class marginal, with an adaptive
marginal loss. Aimed at the imbalance of medical sets, where confident pseudo-labels pile onto the
majority class."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..errors import ConfigError
from ._adaptive import AdaptiveConsistencyModule, AdaptiveMethod
from ._options import flag, number
from .adaptive_thresholds import DebiasedPseudoLabels, masked_cross_entropy
from .base import register_method
from .consistency import POOL_OPTIONS


class DebiasPLModule(AdaptiveConsistencyModule):
    """FixMatch's fixed threshold on the debiased weak-view probabilities
    (:class:`DebiasedPseudoLabels`), the strong view's loss with the adaptive margin.

    Order as USB: the running marginal is updated with this batch before the pseudo-labels are
    debiased, and the margin uses the marginal from before the batch.
    """

    def __init__(self, *args: Any, debias: float = 0.4, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.debias = DebiasedPseudoLabels(len(self.classes), debias, self.ema_p)

    def training_loss(self, batch: Any) -> torch.Tensor:
        supervised, weak, strong = self.views(batch)
        if weak is None or strong is None:
            return supervised
        before = self.debias.p_hat.clone()
        self.debias.update(self.gather(weak.detach().softmax(dim=1)))
        confidence, pseudo = self.debias.debiased(weak.detach()).softmax(dim=1).max(dim=1)
        mask = (confidence >= self.threshold).to(strong.dtype)
        loss_u = masked_cross_entropy(self.debias.margin(strong, before), pseudo, mask)
        self.log_unlabelled(loss_u, mask)
        return supervised + self.lambda_u * loss_u


@register_method("debiaspl")
class DebiasPL(AdaptiveMethod):
    summary = "DebiasPL: FixMatch, pseudo-labels debiased by the running class marginal (0.4) + margin loss"
    module_class = DebiasPLModule
    options: ClassVar[dict[str, Any]] = {
        "threshold": 0.95,
        "mu": 7,
        "lambda_u": 1.0,
        "debias": 0.4,
        "ema_p": 0.999,
        "ema": 0.999,
        "warm_start": False,
        "dist_align": False,
        **POOL_OPTIONS,
    }

    def check(self) -> dict[str, Any]:
        if flag(self.config, "dist_align", self.name):
            raise ConfigError(
                f"--method {self.name}: option dist_align=true is not supported: DebiasPL already "
                "adjusts the pseudo-labels by the running class marginal; leave dist_align out"
            )
        return {"debias": number(self.config, "debias", 0.0, 10.0, self.name)}
