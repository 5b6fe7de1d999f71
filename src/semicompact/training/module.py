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
    unfrozen (discriminative learning rates, as in fastai's ``fine_tune``). After the head-only
    stage the rate follows a cosine decay to 1 % over the remaining epochs.
    """

    def __init__(
        self,
        model: Classifier,
        classes: list[str],
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        head_epochs: int = 2,
        epochs: int = 50,
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

    # ---- hooks for methods -------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_loss(self, batch: Any) -> torch.Tensor:
        """The loss of one labelled batch; semi-supervised methods override this."""
        x, y = batch[0], batch[1]
        return self.criterion(self(x), y)

    # ---- Lightning steps ---------------------------------------------------------------------
    def labelled_batch_size(self, batch: Any) -> int:
        """Images in the labelled part of ``batch`` (methods with a dict batch override this)."""
        return int(batch[0].shape[0])

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        size = self.labelled_batch_size(batch)
        if size == 0:  # every image of the batch was unreadable and skipped
            return None
        loss = self.training_loss(batch)
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
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "epoch"}}

    def _lr_factor(self, epoch: int) -> float:
        head, total = self.hparams.head_epochs, self.hparams.epochs
        if epoch < head or total <= 1:
            return 1.0
        progress = min(1.0, (epoch - head) / max(1, total - 1))
        return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress))
