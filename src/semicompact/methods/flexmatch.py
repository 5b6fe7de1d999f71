"""FlexMatch (Zhang et al., NeurIPS 2021, "FlexMatch: Boosting Semi-Supervised Learning with
Curriculum Pseudo Labeling"): FixMatch with per-class thresholds that follow how well each class
is learnt."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ._adaptive import AdaptiveConsistencyModule, AdaptiveMethod
from ._options import choice, flag
from .adaptive_thresholds import MAPPINGS, FlexMatchThresholds, masked_cross_entropy
from .base import register_method
from .consistency import POOL_OPTIONS


class FlexMatchModule(AdaptiveConsistencyModule):
    """Curriculum pseudo-labelling: class c's threshold is M(beta_c) * tau, beta_c the share of
    pool images last predicted as c above tau (:class:`FlexMatchThresholds`); the unlabelled
    batches carry each image's index in the pool."""

    needs_pool_size = True

    def __init__(
        self,
        *args: Any,
        pool_size: int = 0,
        thresh_warmup: bool = True,
        mapping: str = "convex",
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.flex = FlexMatchThresholds(pool_size, len(self.classes), self.threshold, thresh_warmup, mapping)

    def training_loss(self, batch: Any) -> torch.Tensor:
        supervised, weak, strong = self.views(batch)
        if weak is None or strong is None:
            return supervised
        index = batch["u"][1]
        if bool((index < 0).any()):
            raise RuntimeError(
                "FlexMatch needs the pool index of each unlabelled image (IndexedPoolDataModule)"
            )
        probs = self.weak_probs(weak)
        mask, pseudo = self.flex.mask(probs)  # the thresholds from before this batch, as USB
        self.flex.update(self.gather(probs), self.gather(index))
        loss_u = masked_cross_entropy(strong, pseudo, mask)
        self.log_unlabelled(loss_u, mask)
        return supervised + self.lambda_u * loss_u


@register_method("flexmatch")
class FlexMatch(AdaptiveMethod):
    summary = "FlexMatch: FixMatch with per-class curriculum thresholds M(beta_c) x 0.95; EMA model"
    module_class = FlexMatchModule
    indexed_pool = True
    options: ClassVar[dict[str, Any]] = {
        "threshold": 0.95,
        "mu": 7,
        "lambda_u": 1.0,
        "thresh_warmup": True,
        "mapping": "convex",
        "ema": 0.999,
        "warm_start": False,
        "dist_align": False,
        "ema_p": 0.999,
        **POOL_OPTIONS,
    }

    def check(self) -> dict[str, Any]:
        c = self.config
        return {
            "thresh_warmup": flag(c, "thresh_warmup", self.name),
            "mapping": choice(c, "mapping", tuple(MAPPINGS), self.name),
        }
