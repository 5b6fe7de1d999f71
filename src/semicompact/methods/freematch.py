"""FreeMatch (Wang et al., ICLR 2023, "FreeMatch: Self-adaptive Thresholding for Semi-supervised
Learning"): thresholds that follow the model's confidence, and a class-fairness term."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ._adaptive import AdaptiveConsistencyModule, AdaptiveMethod
from ._options import number
from .adaptive_thresholds import FreeMatchThresholds, freematch_fairness_loss, masked_cross_entropy
from .base import register_method
from .consistency import POOL_OPTIONS


class FreeMatchModule(AdaptiveConsistencyModule):
    """Self-adaptive thresholds MaxNorm(p~)(c) * tau_t (:class:`FreeMatchThresholds`) plus
    ``w_f`` x the self-adaptive fairness loss on the strong views of the masked images."""

    def __init__(self, *args: Any, w_f: float = 0.001, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.w_f = w_f
        self.free = FreeMatchThresholds(len(self.classes), self.ema_p)

    def training_loss(self, batch: Any) -> torch.Tensor:
        supervised, weak, strong = self.views(batch)
        if weak is None or strong is None:
            return supervised
        probs = self.weak_probs(weak)
        self.free.update(self.gather(probs))  # the update first, then the mask, as USB
        mask, pseudo = self.free.mask(probs)
        loss_u = masked_cross_entropy(strong, pseudo, mask)
        fairness = freematch_fairness_loss(strong, mask, self.free.p_model, self.free.label_hist)
        self.log_unlabelled(loss_u, mask)
        self.log("train/loss_fair", fairness, on_step=False, on_epoch=True, batch_size=mask.shape[0])
        self.log("train/tau", self.free.tau, on_step=False, on_epoch=True, batch_size=mask.shape[0])
        return supervised + self.lambda_u * loss_u + self.w_f * fairness


@register_method("freematch")
class FreeMatch(AdaptiveMethod):
    summary = "FreeMatch: self-adaptive global x class thresholds (EMA 0.999) + fairness loss; EMA model"
    module_class = FreeMatchModule
    options: ClassVar[dict[str, Any]] = {
        "mu": 7,
        "lambda_u": 1.0,
        "w_f": 0.001,
        "ema_p": 0.999,
        "ema": 0.999,
        "warm_start": False,
        "dist_align": False,
        **POOL_OPTIONS,
    }

    def check(self) -> dict[str, Any]:
        return {"w_f": number(self.config, "w_f", 0.0, 100.0, self.name)}
