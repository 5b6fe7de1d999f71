"""The supervised base: the labelled images only (the paper's "base" column)."""

from __future__ import annotations

from ..training.config import TrainConfig
from ..training.run import RunResult, fit
from .base import Method, register_method


@register_method("supervised")
class Supervised(Method):
    summary = "labelled images only, two-stage transfer learning"

    def run(self, train: TrainConfig, resume: bool = False) -> RunResult:
        return fit(train, resume=resume)
