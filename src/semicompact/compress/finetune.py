"""Short fine-tuning of a compressed network with Lightning (labels, plus soft targets if asked).

Used by every compressor that needs to recover accuracy (pruning, weight sharing, low rank, XNOR,
QAT). The data is the run's own training data, so compression composes with the semi-supervised
methods: a student trained on pseudo-labels is fine-tuned on the same pseudo-labels. With few labels,
``unlabelled`` adds images of the unlabelled pool that are learnt from the float teacher's soft
targets alone: pruning destroys more than a few hundred labelled images can rebuild, while the
teacher can label thousands of images for free.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ConfigError
from ..quiet import quiet_libraries

quiet_libraries()  # fine-tuning frozen teachers: no "module(s) in eval mode" warning


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
        # a frozen copy: the caller's model (often the very network being compressed) stays trainable
        self.teacher = copy.deepcopy(teacher).eval() if teacher is not None and kd_alpha > 0 else None
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
        labelled = y >= 0  # unlabelled images (label -1) learn from the teacher only
        loss = F.cross_entropy(logits[labelled], y[labelled]) if bool(labelled.any()) else logits.sum() * 0
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
    unlabelled: int = 0,
) -> nn.Module:
    """Train ``module`` in place for ``epochs`` epochs on ``datamodule``'s training loader (plus up to
    ``unlabelled`` images of its unlabelled pool, -1 for all, taught by ``teacher``); returns it."""
    if epochs <= 0:
        return module.eval()
    if unlabelled and (teacher is None or kd_alpha <= 0):
        raise ConfigError("--finetune-unlabelled needs a teacher to learn from: set --kd-alpha above 0")
    L.seed_everything(seed, workers=True, verbose=False)
    wrapper = FinetuneModule(module, epochs, lr, teacher, kd_alpha, temperature)
    from ..training.progress import PlainProgress

    trainer = L.Trainer(
        callbacks=[PlainProgress()],  # one line per fine-tuning epoch, with an ETA
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
    trainer.fit(wrapper, datamodule=_TrainOnly(datamodule, unlabelled, seed))
    return module.cpu().eval()


class _TrainOnly(L.LightningDataModule):
    """The run's data module without validation (fine-tuning runs a fixed number of epochs)."""

    def __init__(self, inner: Any, unlabelled: int = 0, seed: int = 0) -> None:
        super().__init__()
        self.inner, self.unlabelled, self.seed = inner, unlabelled, seed

    def train_dataloader(self) -> Any:
        if not self.unlabelled:
            return self.inner.train_dataloader()
        from ..methods.pseudo import subsample_pool

        pool = list(self.inner.manifest.unlabelled)
        if not pool:
            raise ConfigError(
                "--finetune-unlabelled: the run's split has no unlabelled images to distil on; "
                "give --data with an unlabelled pool or drop the option"
            )
        limit = None if self.unlabelled < 0 else self.unlabelled
        # the pool's known labels (benchmark data) are hidden: these images learn from the teacher only
        extra = [[e[0], None] for e in subsample_pool(pool, limit, self.seed)]
        entries = [list(e) for e in self.inner.manifest.labelled] + extra
        return self.inner.loader_for(entries, shuffle=True)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        self.inner.trainer = self.trainer
        return self.inner.on_after_batch_transfer(batch, dataloader_idx)
