"""The semi-supervised and distillation losses as pure functions of tensors.

The modules' ``training_loss`` draw the views, the MixUp coefficient and the permutation and run the
network; the arithmetic of the loss lives here so that tests can check it on small hand-computed
tensors (tests/methods/test_losses.py) without a network or a random generator.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F

from ..compress.finetune import soft_target_loss


def fixmatch_unlabelled_loss(
    weak_logits: torch.Tensor, strong_logits: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """FixMatch's unlabelled term and its mask (Sohn et al. 2020, eq. 4).

    The hard pseudo-label and the confidence come from the detached weak view, so no gradient
    flows into the target. The mean runs over all ``m`` unlabelled images, masked ones included
    (they add 0): a low mask rate weakens the term instead of over-weighting a few images.
    """
    confidence, pseudo = weak_logits.detach().softmax(dim=1).max(dim=1)
    mask = (confidence >= threshold).float()
    loss = (F.cross_entropy(strong_logits, pseudo, reduction="none") * mask).mean()
    return loss, mask


def sharpen(p: torch.Tensor, t: float) -> torch.Tensor:
    """Lower the entropy of a distribution: p^(1/T), renormalised."""
    q = p.pow(1.0 / t)
    return q / q.sum(dim=1, keepdim=True)


def mixmatch_mix(
    inputs: torch.Tensor, targets: torch.Tensor, lam: float, order: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """MixUp of MixMatch: lambda' = max(lam, 1 - lam), so each mix stays closer to its own row (the
    labelled rows stay mostly labelled), and ONE permutation for inputs and targets, labelled and
    unlabelled rows shuffled together."""
    lam = max(lam, 1.0 - lam)
    mixed = lam * inputs + (1 - lam) * inputs[order]
    mixed_targets = lam * targets + (1 - lam) * targets[order]
    return mixed, mixed_targets


def mixup_images(x: torch.Tensor, lam: float, order: torch.Tensor) -> torch.Tensor:
    """MixUp of distillation's transfer images (Beyer et al. 2022, function matching): one ratio
    ``lam`` for the batch, no target to mix (the teacher labels the mixed image itself), and unlike
    MixMatch no lambda' = max(lam, 1 - lam): a mixed image belongs to neither row."""
    return lam * x + (1 - lam) * x[order]


def mixmatch_loss(
    logits: torch.Tensor, mixed_targets: torch.Tensor, n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss_x, loss_u): cross-entropy against the mixed targets on the first ``n`` (labelled)
    rows; L2 between the predicted probabilities and the mixed targets on the rest (mean over rows
    and classes, as the published code), which is bounded and so tolerates wrong guesses."""
    loss_x = -(mixed_targets[:n] * logits[:n].log_softmax(dim=1)).sum(dim=1).mean()
    loss_u = F.mse_loss(logits[n:].softmax(dim=1), mixed_targets[n:])
    return loss_x, loss_u


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    t: float,
    alpha: float,
    hard_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
) -> torch.Tensor:
    """Hinton et al. 2015: (1 - alpha) CE(labels) + alpha T^2 KL(teacher_T || student_T), batchmean.

    The first ``len(labels)`` rows are labelled; the soft term covers every row, so unlabelled rows
    appended after them learn from the teacher alone.
    """
    hard = hard_loss(student_logits[: labels.shape[0]], labels)
    soft = soft_target_loss(student_logits, teacher_logits, t)
    return (1 - alpha) * hard + alpha * soft


def coded_targets(codes: torch.Tensor, k: int, soft_targets: torch.Tensor) -> torch.Tensor:
    """Target distributions of a self-training batch: a code ``< k`` is a class (one-hot), a code
    ``k + j`` is row ``j`` of the teachers' soft-target table."""
    target = torch.zeros(codes.shape[0], k, device=codes.device)
    hard = codes < k
    target[hard] = F.one_hot(codes[hard], k).float()
    target[~hard] = soft_targets[codes[~hard] - k]
    return target
