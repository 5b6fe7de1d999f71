"""The Lightning module: *how* a classifier learns (the data module says *what* it learns from).

Semi-supervised methods subclass :class:`ClassifierModule` and override :meth:`training_loss`
(and, when they need them, the other hooks); nothing else in the engine changes.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from ..models import Classifier


class ClassifierModule(L.LightningModule):
    """Supervised training with the paper's two stages (head only, then all layers).

    ``lr`` is the head's learning rate; the pretrained body gets ``lr * body_lr_mult`` once it is
    unfrozen (discriminative learning rates, as in fastai's ``fine_tune``). The schedule is by
    optimiser step, so that every method of an equal-step budget follows the same one: constant
    during the ``head_steps`` head-only steps, then a linear warm-up over ``warmup_steps`` (default
    5 % of the body steps) and a cosine decay that reaches ``LR_FLOOR`` (1 %) at the last step.
    """

    def __init__(
        self,
        model: Classifier,
        classes: list[str],
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        head_steps: int = 0,
        warmup_steps: int | None = None,
        body_lr_mult: float = 0.1,
        class_weights: torch.Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        # method-specific modules and tensors (teachers, soft targets) stay out of the checkpoint
        # hyper-parameters: those are loaded with weights_only=True
        self.save_hyperparameters(ignore=["model", "class_weights", "teachers", "soft_targets", "prior"])
        self.model = model
        self.classes = list(classes)
        k = len(self.classes)
        self.criterion = nn.CrossEntropyLoss(weight=class_weights, label_smoothing=label_smoothing)
        self.val_f1 = MulticlassF1Score(k, average="macro", zero_division=0)
        self.val_acc = MulticlassAccuracy(k, average="micro")
        # images through the network while training, for the run's cost (kept in checkpoints)
        self.images_seen = {"labelled": 0, "unlabelled": 0}
        self._total_steps: int | None = None

    def count_images(self, kind: str, n: int) -> None:
        """Add ``n`` image passes of ``kind`` (labelled / unlabelled, every view counts)."""
        self.images_seen[kind] = self.images_seen.get(kind, 0) + int(n)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["semicompact_images_seen"] = dict(self.images_seen)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.images_seen = {k: int(v) for k, v in checkpoint.get("semicompact_images_seen", {}).items()}

    # ---- hooks for methods -------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_loss(self, batch: Any) -> torch.Tensor:
        """The loss of one labelled batch; semi-supervised methods override this."""
        x, y = batch[0], batch[1]
        return self.criterion(self(x), y)

    def count_labelled(self, batch: Any, size: int) -> None:
        """Count the labelled images of a training batch (self-training splits off pseudo-labels)."""
        self.count_images("labelled", size)

    # ---- Lightning steps ---------------------------------------------------------------------
    def labelled_batch_size(self, batch: Any) -> int:
        """Images in the labelled part of ``batch`` (methods with a dict batch override this)."""
        return int(batch[0].shape[0])

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        size = self.labelled_batch_size(batch)
        if size == 0:  # every image of the batch was unreadable and skipped
            return None
        loss = self.training_loss(batch)
        self.count_labelled(batch, size)
        self.log(
            "train/loss",
            loss,
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            sync_dist=True,
            batch_size=size,
        )
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch[0], batch[1]
        if x.shape[0] == 0:
            return
        logits = self(x)
        loss = nn.functional.cross_entropy(logits, y)
        self.val_f1.update(logits, y)
        self.val_acc.update(logits, y)
        self.log("val/loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=x.shape[0])
        self.log("val/macro_f1", self.val_f1, on_step=False, on_epoch=True, prog_bar=True)
        self.log("val/accuracy", self.val_acc, on_step=False, on_epoch=True)

    # ---- optimisation ------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        groups = [
            {"params": list(self.model.head_parameters()), "lr": hp.lr, "name": "head"},
            {"params": list(self.model.body_parameters()), "lr": hp.lr * hp.body_lr_mult, "name": "body"},
        ]
        optimizer = torch.optim.AdamW(groups, weight_decay=hp.weight_decay)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=self._lr_factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def total_steps(self) -> int:
        """Optimiser steps of the whole run (``max_steps``, or the epochs' batches)."""
        if self._total_steps is None:
            if self._trainer is None:
                return max(1, int(self.hparams.head_steps) + 1)
            self._total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        return self._total_steps

    def body_warmup_steps(self) -> int:
        body = max(1, self.total_steps() - int(self.hparams.head_steps))
        given = self.hparams.warmup_steps
        return int(given) if given is not None else max(1, round(0.05 * body))

    def _lr_factor(self, step: int) -> float:
        return lr_factor(step, int(self.hparams.head_steps), self.total_steps(), self.body_warmup_steps())


LR_FLOOR = 0.01


def lr_factor(step: int, head: int, total: int, warmup: int) -> float:
    """The rate multiplier of optimiser step ``step`` (0-based): 1 during the head stage, then a
    linear warm-up over ``warmup`` steps and a cosine decay reaching ``LR_FLOOR`` at step ``total - 1``."""
    if step < head:
        return 1.0
    s, body = step - head, max(1, total - head)
    warmup = min(warmup, max(0, body - 1))
    if s < warmup:
        return (s + 1) / (warmup + 1)
    span = body - 1 - warmup
    progress = 1.0 if span <= 0 else min(1.0, (s - warmup) / span)
    return LR_FLOOR + (1.0 - LR_FLOOR) * 0.5 * (1.0 + math.cos(math.pi * progress))
