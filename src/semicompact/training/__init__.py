"""The training engine: Lightning module, callbacks and the run orchestration."""

from .config import TrainConfig
from .module import ClassifierModule
from .run import RunResult, fit

__all__ = ["ClassifierModule", "RunResult", "TrainConfig", "fit"]
