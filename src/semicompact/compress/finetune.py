"""Short fine-tuning of a compressed network with Lightning (labels, plus soft targets if asked).

Used by every compressor that needs to recover accuracy (pruning, weight sharing, low rank, XNOR,
QAT). The data is the run's own training data, so compression composes with the semi-supervised
methods: a student trained on pseudo-labels is fine-tuned on the same pseudo-labels.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F


def soft_target_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, t: float) -> torch.Tensor:
    """Hinton et al. 2015: KL(teacher_T || student_T) scaled by T^2 so gradients keep their size."""
    log_p = F.log_softmax(student_logits / t, dim=1)
    q = F.softmax(teacher_logits / t, dim=1)
    return F.kl_div(log_p, q, reduction="batchmean") * (t * t)


class FinetuneModule(L.LightningModule):
    """Cross-entropy (and optional distillation) on any ``module(x in [0,1]) -> logits``."""

    def __init__(
        self,
        module: nn.Module,
        epochs: int,
        lr: float,
        teacher: nn.Module | None = None,
        kd_alpha: float = 0.0,
        temperature: float = 4.0,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__()
        self.module = module
        self.teacher = teacher.eval() if teacher is not None and kd_alpha > 0 else None
        if self.teacher is not None:
            for p in self.teacher.parameters():
                p.requires_grad_(False)
        self.epochs, self.lr, self.kd_alpha, self.t, self.wd = epochs, lr, kd_alpha, temperature, weight_decay

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        x, y = batch[0], batch[1]
        if x.shape[0] == 0:
            return None
        logits = self.module(x)
        loss = F.cross_entropy(logits, y)
        if self.teacher is not None:
            with torch.no_grad():
                target = self.teacher(x)
            loss = (1 - self.kd_alpha) * loss + self.kd_alpha * soft_target_loss(logits, target, self.t)
        self.log("finetune/loss", loss, on_step=False, on_epoch=True, batch_size=x.shape[0])
        return loss

    def configure_optimizers(self) -> Any:
        params = [p for p in self.module.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.wd)
        total = max(1, self.epochs)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda e: 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, e / total)))
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "epoch"}}


def finetune(
    module: nn.Module,
    datamodule: Any,
    epochs: int,
    lr: float = 1e-4,
    teacher: nn.Module | None = None,
    kd_alpha: float = 0.0,
    temperature: float = 4.0,
    seed: int = 0,
) -> nn.Module:
    """Train ``module`` in place for ``epochs`` epochs on ``datamodule``'s training loader; returns it."""
    if epochs <= 0:
        return module.eval()
    L.seed_everything(seed, workers=True, verbose=False)
    wrapper = FinetuneModule(module, epochs, lr, teacher, kd_alpha, temperature)
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="auto",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(wrapper, datamodule=_TrainOnly(datamodule))
    return module.cpu().eval()


class _TrainOnly(L.LightningDataModule):
    """The run's data module without validation (fine-tuning runs a fixed number of epochs)."""

    def __init__(self, inner: Any) -> None:
        super().__init__()
        self.inner = inner

    def train_dataloader(self) -> Any:
        return self.inner.train_dataloader()

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        self.inner.trainer = self.trainer
        return self.inner.on_after_batch_transfer(batch, dataloader_idx)
