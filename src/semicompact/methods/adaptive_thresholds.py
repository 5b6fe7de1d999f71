"""The arithmetic of FlexMatch, FreeMatch, SoftMatch and DebiasPL: thresholds, weights, state.

Pure functions of tensors, and small ``nn.Module`` s whose state lives in registered buffers (so it
moves with the module to any device and is saved in every checkpoint: ``--resume`` continues the
thresholds where they were). The methods (``flexmatch.py``, ``freematch.py``, ``softmatch.py``,
``debiaspl.py``) run the network and call these; the tests check them on hand-computed tensors
(``tests/methods/test_adaptive_thresholds.py``).

The formulas and defaults follow the papers and their reference implementation, USB
(microsoft/Semi-supervised-learning, ``semilearn/algorithms/{flexmatch,freematch,softmatch}``,
``semilearn/imb_algorithms/debiaspl`` and ``hooks/dist_align.py``); where the two differ, the
docstring says which one is followed.

State updates take the statistics of one step. Under DDP the modules gather the weak-view
probabilities (and FlexMatch's image indices) of every process before updating, so all processes
hold the same state (this needs the same unlabelled batch size on every process, which holds unless
an unreadable image was skipped).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F


def masked_cross_entropy(
    strong_logits: torch.Tensor, pseudo: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy of the strong view against hard pseudo-labels, times a per-image weight (a 0/1
    mask or SoftMatch's soft weight), averaged over every unlabelled image (masked ones add 0), as
    FixMatch and USB's ``consistency_loss`` do."""
    return (F.cross_entropy(strong_logits, pseudo, reduction="none") * weight).mean()


# ------------------------------------------------------------------------------------- FlexMatch
def _convex(x: torch.Tensor) -> torch.Tensor:
    return x / (2.0 - x)


def _concave(x: torch.Tensor) -> torch.Tensor:
    return torch.log1p(x) / math.log(2.0)


#: FlexMatch's mapping functions M (Zhang et al. 2021, section 3.2 and the ablation): convex is published
MAPPINGS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "convex": _convex,
    "linear": lambda x: x,
    "concave": _concave,
}


def flexmatch_learning_effect(
    predictions: torch.Tensor, num_classes: int, warmup: bool = True
) -> torch.Tensor:
    """Normalised learning effect beta_c of FlexMatch (Zhang et al. 2021, eq. 5 and 11).

    ``predictions[i]`` is the class of unlabelled image ``i`` the last time its weak view was
    predicted above the fixed threshold tau, or -1 if it never was. sigma_c counts the images of
    class c; beta_c = sigma_c / max(max_c sigma, N - sum sigma) with the threshold warm-up (the
    unused images count, so the thresholds rise from 0 while most images are unused), or
    sigma_c / max_c sigma without it. All zeros while nothing was selected (USB keeps its initial
    zeros then, which is the same). One difference in a degenerate case: when every pool image holds
    the same class, USB skips the update and keeps the previous values; here that class gets 1.
    """
    used = predictions[predictions >= 0]
    sigma = torch.bincount(used, minlength=num_classes).to(torch.float32)
    denominator = sigma.max()
    if warmup:
        denominator = torch.maximum(denominator, (predictions < 0).sum().to(torch.float32))
    if float(denominator) == 0.0:
        return torch.zeros(num_classes, device=predictions.device)
    return sigma / denominator


class FlexMatchThresholds(nn.Module):
    """Curriculum pseudo-labelling: per-class thresholds T_c = M(beta_c) * tau.

    ``predictions`` (length N = pool size, -1 = unused) is the whole state; it is a buffer, so it
    is checkpointed. As in USB, the mask of a batch uses the thresholds from before the batch, then
    the images whose confidence reaches tau record their class.
    """

    def __init__(
        self,
        pool_size: int,
        num_classes: int,
        tau: float = 0.95,
        warmup: bool = True,
        mapping: str = "convex",
    ) -> None:
        super().__init__()
        if mapping not in MAPPINGS:
            raise ValueError(f"mapping must be one of {', '.join(MAPPINGS)}, got {mapping!r}")
        self.num_classes, self.tau, self.warmup, self.mapping = num_classes, tau, warmup, mapping
        self.register_buffer("predictions", torch.full((pool_size,), -1, dtype=torch.long))

    def thresholds(self) -> torch.Tensor:
        beta = flexmatch_learning_effect(self.predictions, self.num_classes, self.warmup)
        return MAPPINGS[self.mapping](beta) * self.tau

    def mask(self, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(0/1 mask, hard pseudo-label) of weak-view probabilities ``probs`` (B, C)."""
        confidence, pseudo = probs.max(dim=1)
        return (confidence >= self.thresholds()[pseudo]).to(probs.dtype), pseudo

    @torch.no_grad()
    def update(self, probs: torch.Tensor, index: torch.Tensor) -> None:
        """Record the class of every image of the batch predicted above tau (its pool index)."""
        confidence, pseudo = probs.max(dim=1)
        selected = confidence >= self.tau
        self.predictions[index[selected]] = pseudo[selected]


# ------------------------------------------------------------------------------------- FreeMatch
class FreeMatchThresholds(nn.Module):
    """Self-adaptive thresholds of FreeMatch (Wang et al. 2023, eq. 6-9).

    EMA with momentum lambda of the mean max confidence tau_t (global), of the mean probability
    p~_t(c) and of the histogram of predicted classes h~_t (for the fairness loss); the threshold of
    class c is MaxNorm(p~_t)(c) * tau_t. Initial values 1/C as in the paper; USB starts all three at
    1 (``torch.ones``), which holds the global threshold high at first (tau_t decays from 1).
    The update comes first, then the mask uses the updated state (as USB).
    """

    def __init__(self, num_classes: int, momentum: float = 0.999) -> None:
        super().__init__()
        self.num_classes, self.momentum = num_classes, momentum
        self.register_buffer("tau", torch.tensor(1.0 / num_classes))
        self.register_buffer("p_model", torch.full((num_classes,), 1.0 / num_classes))
        self.register_buffer("label_hist", torch.full((num_classes,), 1.0 / num_classes))

    @torch.no_grad()
    def update(self, probs: torch.Tensor) -> None:
        m = self.momentum
        confidence, pseudo = probs.max(dim=1)
        hist = torch.bincount(pseudo, minlength=self.num_classes).to(probs.dtype)
        self.tau.mul_(m).add_(confidence.mean(), alpha=1 - m)
        self.p_model.mul_(m).add_(probs.mean(dim=0), alpha=1 - m)
        self.label_hist.mul_(m).add_(hist / hist.sum(), alpha=1 - m)

    def thresholds(self) -> torch.Tensor:
        return self.p_model / self.p_model.max() * self.tau

    def mask(self, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        confidence, pseudo = probs.max(dim=1)
        return (confidence >= self.thresholds()[pseudo]).to(probs.dtype), pseudo


def _inverse_or_zero(x: torch.Tensor) -> torch.Tensor:
    inverse = 1.0 / x
    return torch.where(torch.isinf(inverse), torch.zeros_like(inverse), inverse)


def freematch_fairness_loss(
    strong_logits: torch.Tensor, mask: torch.Tensor, p_model: torch.Tensor, label_hist: torch.Tensor
) -> torch.Tensor:
    """FreeMatch's self-adaptive fairness term L_f = -H(SumNorm(p~/h~), SumNorm(p_bar/h_bar)) (eq. 10-11).

    p_bar and h_bar are the mean probability and the histogram of predicted classes of the strong
    views of the masked images; the loss is sum_c target_c log(pred_c) (a negative cross-entropy),
    added to the total loss with weight w_f. As USB: the scales 1/h are detached, 1/0 counts as 0
    (a class no masked image predicts), log takes +1e-12, and the term is 0 when no image is masked.
    """
    keep = mask.bool()
    if not bool(keep.any()):
        return strong_logits.sum() * 0.0
    probs = strong_logits[keep].softmax(dim=1)
    hist = torch.bincount(probs.argmax(dim=1), minlength=probs.shape[1]).to(probs.dtype)
    hist = hist / hist.sum()
    target = p_model * _inverse_or_zero(label_hist).detach()
    target = target / target.sum()
    pred = probs.mean(dim=0) * _inverse_or_zero(hist).detach()
    pred = pred / pred.sum()
    return (target * torch.log(pred + 1e-12)).sum()


# ------------------------------------------------------------------------------------- SoftMatch
class SoftMatchWeights(nn.Module):
    """SoftMatch's truncated Gaussian weights (Chen et al. 2023, eq. 7-8).

    EMA (momentum m) of the mean mu_t and the unbiased variance sigma_t^2 of the batch's max
    confidence, starting at mu = 1/C, sigma^2 = 1 (USB); the weight of an image with max
    probability p is exp(-(p - mu)^2 / (2 sigma^2 / n_sigma^2)) below mu and 1 above. The update
    comes first, then the weights use it (USB). A batch of one image has no variance: the
    variance is then left as it was (USB would turn it into nan).
    """

    def __init__(self, num_classes: int, momentum: float = 0.999, n_sigma: float = 2.0) -> None:
        super().__init__()
        self.momentum, self.n_sigma = momentum, n_sigma
        self.register_buffer("mu", torch.tensor(1.0 / num_classes))
        self.register_buffer("var", torch.tensor(1.0))

    @torch.no_grad()
    def update(self, probs: torch.Tensor) -> None:
        m = self.momentum
        confidence = probs.max(dim=1).values
        self.mu.mul_(m).add_(confidence.mean(), alpha=1 - m)
        if confidence.numel() > 1:
            self.var.mul_(m).add_(confidence.var(unbiased=True), alpha=1 - m)

    def weights(self, probs: torch.Tensor) -> torch.Tensor:
        confidence = probs.max(dim=1).values
        below = torch.clamp(confidence - self.mu, max=0.0)
        return torch.exp(-(below**2) / (2 * self.var / self.n_sigma**2))


# --------------------------------------------------------------------------------------- DebiasPL
class DebiasedPseudoLabels(nn.Module):
    """DebiasPL's running class marginal and its two logit adjustments (Wang et al., CVPR 2022,
    "Debiased Learning from Naturally Imbalanced Pseudo-Labels").

    ``p_hat`` is an EMA (momentum m) of the batch mean of the weak view's probabilities, starting
    uniform (USB's ``imb_algorithms/debiaspl``). Counterfactual debiasing: the pseudo-label comes
    from ``logits - tau * log p_hat``, which lowers the classes the model already predicts too
    often. Adaptive marginal loss: the strong view's cross-entropy is taken on
    ``logits + tau * log p_hat``, a larger margin for the rarely predicted classes.
    """

    def __init__(self, num_classes: int, tau: float = 0.4, momentum: float = 0.999) -> None:
        super().__init__()
        self.tau, self.momentum = tau, momentum
        self.register_buffer("p_hat", torch.full((num_classes,), 1.0 / num_classes))

    @torch.no_grad()
    def update(self, probs: torch.Tensor) -> None:
        self.p_hat.mul_(self.momentum).add_(probs.mean(dim=0), alpha=1 - self.momentum)

    def debiased(self, logits: torch.Tensor) -> torch.Tensor:
        return logits - self.tau * torch.log(self.p_hat)

    def margin(self, logits: torch.Tensor, p_hat: torch.Tensor | None = None) -> torch.Tensor:
        p = self.p_hat if p_hat is None else p_hat
        return logits + self.tau * torch.log(p)


# ------------------------------------------------------------------------- distribution alignment
class DistributionAlignment(nn.Module):
    """Scale probabilities by target / running mean prediction and renormalise.

    With a uniform target this is SoftMatch's Uniform Alignment (UA); with the labelled class prior
    it is ReMixMatch's distribution alignment (Berthelot et al. 2020). The running mean is an EMA
    with momentum m of the batch mean, set to the first batch's mean (USB's ``DistAlignEMAHook``;
    ReMixMatch itself averages the last 128 batches); +1e-6 on both sides as USB.
    """

    def __init__(self, target: torch.Tensor, momentum: float = 0.999) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("target", target.detach().float().clone())
        self.register_buffer("p_model", torch.zeros_like(self.target))
        self.register_buffer("updates", torch.tensor(0, dtype=torch.long))

    @torch.no_grad()
    def update(self, probs: torch.Tensor) -> None:
        mean = probs.mean(dim=0)
        if int(self.updates) == 0:
            self.p_model.copy_(mean)
        else:
            self.p_model.mul_(self.momentum).add_(mean, alpha=1 - self.momentum)
        self.updates.add_(1)

    def align(self, probs: torch.Tensor) -> torch.Tensor:
        aligned = probs * (self.target + 1e-6) / (self.p_model + 1e-6)
        return aligned / aligned.sum(dim=1, keepdim=True)
