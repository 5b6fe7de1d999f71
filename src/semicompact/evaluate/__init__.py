"""Metrics, plots, evaluation and prediction."""

from .metrics import classification_metrics

__all__ = ["classification_metrics"]
