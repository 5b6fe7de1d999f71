"""Plain progress lines for logs: one line per epoch (training) or per stage, with an ETA.

Progress bars redraw one terminal line; redirected to a file (nohup, CI, a cluster job) they print
nothing useful, and the user sees no sign of life for minutes. When stderr is not a terminal,
training prints one flushed line per epoch instead, and ``logs/metrics.csv`` is flushed with it so
that ``tail -f`` and plotting during the run see every finished epoch.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

import lightning as L

from ..progress import format_duration
from ..quiet import quiet_libraries

quiet_libraries()


def _value(metrics: dict[str, Any], key: str) -> float | None:
    value = metrics.get(key)
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


class PlainProgress(L.Callback):
    """One line per training epoch on ``stream`` (stderr): epoch, step, losses, validation, ETA.

    The ETA is the time per optimiser step measured in this process times the steps left of the
    budget (``max_steps``, or the epochs left); early stopping may end the run sooner.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self._start = 0.0
        self._first_step = 0
        self._loss_sum, self._loss_n = 0.0, 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()
        self._first_step = trainer.global_step

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._loss_sum, self._loss_n = 0.0, 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # the epoch's train/loss reaches callback_metrics only after this hook's epoch end: keep a mean
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None and hasattr(loss, "item"):
            self._loss_sum += float(loss.detach().item())
            self._loss_n += 1

    def _steps_total(self, trainer: L.Trainer) -> int | None:
        if trainer.max_steps and trainer.max_steps > 0:
            return int(trainer.max_steps)
        per_epoch = trainer.num_training_batches
        if trainer.max_epochs is None or not isinstance(per_epoch, int) or per_epoch <= 0:
            return None
        return int(trainer.max_epochs) * per_epoch

    def line(self, trainer: L.Trainer) -> str:
        metrics = trainer.callback_metrics
        step = trainer.global_step
        total = self._steps_total(trainer)
        elapsed = time.perf_counter() - self._start
        done = step - self._first_step
        parts = [f"epoch {trainer.current_epoch + 1}"]
        if (
            trainer.max_epochs
            and trainer.max_epochs > 0
            and not (trainer.max_steps and trainer.max_steps > 0)
        ):
            parts[0] += f"/{trainer.max_epochs}"
        parts.append(f"step {step}" + (f"/{total}" if total else ""))
        if self._loss_n:
            parts.append(f"loss {self._loss_sum / self._loss_n:.4f}")
        value = _value(metrics, "val/loss")
        if value is not None:
            parts.append(f"val loss {value:.4f}")
        for key, label in (("val/macro_f1", "val macro-F1"), ("val/accuracy", "val accuracy")):
            value = _value(metrics, key)
            if value is not None:
                parts.append(f"{label} {value:.3f}")
        parts.append(f"{format_duration(elapsed)} elapsed")
        if total and done > 0:
            parts.append(f"ETA {format_duration(elapsed / done * max(0, total - step))}")
        return " | ".join(parts)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        for logger in trainer.loggers:  # logs/metrics.csv up to date at every epoch
            logger.save()
        stream = self.stream or sys.stderr
        print(self.line(trainer), file=stream, flush=True)
