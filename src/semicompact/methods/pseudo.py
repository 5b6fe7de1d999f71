"""Pseudo-labelling: ensembles of teachers x test-time transforms over the unlabelled pool.

Batched on the device and streamed: each batch of the pool is read once per teacher, every
transform of the batch goes through the network in a single forward pass, and the class
probabilities are averaged over teachers and views (the paper's ensembling by mean probability).
"""

from __future__ import annotations

import csv
import io
import math
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data import SemiCompactDataModule
from ..data.datasets import read_skip_log
from ..errors import ConfigError
from ..io import atomic_open, write_json
from ..models import Classifier


@dataclass
class PseudoLabels:
    """Mean class probabilities for each image of the pool (``true`` is None where unknown)."""

    refs: list[str]
    probs: torch.Tensor  # (N, k)
    true: list[int | None]
    classes: list[str]

    @property
    def confidence(self) -> torch.Tensor:
        return self.probs.max(dim=1).values

    @property
    def labels(self) -> torch.Tensor:
        return self.probs.argmax(dim=1)

    def select(
        self, threshold: float, balance: bool | str = False, prior: torch.Tensor | None = None
    ) -> list[int]:
        """Indices of the images kept: confidence >= threshold, optionally class-balanced.

        ``balance`` (see :func:`balance_mode`): ``median`` caps each class at the median per-class
        count of the confident images, keeping the most confident ones, so that an easy majority
        class cannot swamp the student while rare classes keep every confident image they have;
        ``quota`` keeps at most :func:`class_quotas` images of each predicted class (the most
        confident), quotas proportional to ``prior``. ``align`` changes the probabilities, not the
        selection: use :func:`select_pseudo`, which aligns first.
        """
        mode = balance_mode(balance)
        if mode == "align":
            raise ValueError("balance 'align' changes the probabilities: use select_pseudo()")
        conf, labels = self.confidence, self.labels
        keep = [i for i in range(len(self.refs)) if float(conf[i]) >= threshold]
        if mode == "none" or not keep:
            return keep
        by_class: dict[int, list[int]] = {}
        for i in keep:
            by_class.setdefault(int(labels[i]), []).append(i)
        if mode == "median":
            counts = sorted(len(v) for v in by_class.values())
            caps = dict.fromkeys(by_class, counts[len(counts) // 2])
        else:
            if prior is None:
                raise ValueError("balance 'quota' needs the labelled class prior")
            quotas = class_quotas(len(keep), prior)
            caps = {c: quotas[c] for c in by_class}
        chosen: list[int] = []
        for c, members in by_class.items():
            members.sort(key=lambda i: -float(conf[i]))
            chosen += members[: caps[c]]
        return sorted(chosen)

    def aligned(self, prior: torch.Tensor) -> PseudoLabels:
        """Distribution alignment (ReMixMatch, Berthelot et al. 2020): ``p * prior / mean_pred``,
        renormalised per image, with ``mean_pred`` the mean probability over this pool.

        A teacher trained on few labels leans towards the classes it finds easy; alignment pulls
        the pool's mean prediction to the labelled class distribution before the threshold, so a
        rare class's images can reach it and a favoured class's doubtful ones fall below it.
        """
        prior = prior.to(self.probs.dtype)
        mean = self.probs.mean(dim=0).clamp_min(1e-12)
        p = self.probs * prior / mean
        p = p / p.sum(dim=1, keepdim=True).clamp_min(1e-12)
        return PseudoLabels(list(self.refs), p, list(self.true), list(self.classes))

    def summary(self, selected: list[int], threshold: float) -> dict[str, Any]:
        """Counts per class and, where the true labels are known, the accuracy of the pseudo-labels."""
        labels = self.labels.tolist()
        per_class = Counter(self.classes[labels[i]] for i in selected)
        known = [i for i in selected if self.true[i] is not None and self.true[i] >= 0]
        known_all = [i for i in range(len(self.refs)) if self.true[i] is not None and self.true[i] >= 0]

        def accuracy(idx: list[int]) -> float | None:
            return sum(labels[i] == self.true[i] for i in idx) / len(idx) if idx else None

        return {
            "pool": len(self.refs),
            "threshold": threshold,
            "selected": len(selected),
            "selected_per_class": {c: per_class.get(c, 0) for c in self.classes},
            "accuracy_selected": accuracy(known),
            "accuracy_all": accuracy(known_all),
            "true_labels_known": len(known_all),
        }

    def write(self, path: Path, selected: list[int]) -> None:
        """image, class, confidence, selected, true class (if known), atomically."""
        chosen = set(selected)
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["image", "class", "confidence", "selected", "true_class"])
        labels, conf = self.labels.tolist(), self.confidence.tolist()
        for i, ref in enumerate(self.refs):
            true = self.true[i]
            writer.writerow(
                [
                    ref,
                    self.classes[labels[i]],
                    f"{conf[i]:.6f}",
                    int(i in chosen),
                    self.classes[true] if true is not None and true >= 0 else "",
                ]
            )
        with atomic_open(path, "w") as fh:
            fh.write(buffer.getvalue())


#: class balancing of the selected pseudo-labels (option ``balance``); true / false are the older
#: spellings of median / none
BALANCE_MODES = ("none", "median", "quota", "align")


def balance_mode(value: Any, method: str | None = None) -> str:
    """The option ``balance`` as one of :data:`BALANCE_MODES` (``true`` = median, ``false`` = none)."""
    if value is True:
        return "median"
    if value is False:
        return "none"
    if isinstance(value, str) and value in BALANCE_MODES:
        return value
    where = f"--method {method}: " if method else ""
    raise ConfigError(
        f"{where}option balance must be one of {', '.join(BALANCE_MODES)} "
        f"(true = median, false = none), got '{value}'"
    )


def labelled_prior(labelled: list[list[Any]], k: int) -> torch.Tensor:
    """The class distribution of the labelled training images (uniform when there are none)."""
    counts = torch.zeros(k, dtype=torch.float64)
    for _, label in labelled:
        counts[int(label)] += 1
    if counts.sum() <= 0:
        return torch.full((k,), 1.0 / k, dtype=torch.float64)
    return counts / counts.sum()


def class_quotas(total: int, prior: torch.Tensor) -> list[int]:
    """Per-class quotas ``round(total * prior_c)`` (halves rounded up).

    Proportional to the labelled class prior; under the paper's protocol (the same number of labels
    per class) that prior is uniform, which gives Noisy Student's equal top-K per class.
    """
    return [math.floor(total * float(v) + 0.5 + 1e-9) for v in prior]  # 1e-9: float noise at halves


def fill_quotas(pseudo: PseudoLabels, selected: list[int], quotas: list[int]) -> list[int]:
    """Noisy Student's balancing of rare classes: a class with fewer selected images than its quota
    gets its images repeated (most confident first, cyclically) up to the quota. Classes with no
    selected image stay empty. Returns indices with repeats, sorted."""
    conf, labels = pseudo.confidence, pseudo.labels
    by_class: dict[int, list[int]] = {}
    for i in selected:
        by_class.setdefault(int(labels[i]), []).append(i)
    out = list(selected)
    for c, members in by_class.items():
        members.sort(key=lambda i: -float(conf[i]))
        missing = quotas[c] - len(members)
        out += [members[j % len(members)] for j in range(max(0, missing))]
    return sorted(out)


def select_pseudo(
    pseudo: PseudoLabels, threshold: float, balance: Any, prior: torch.Tensor
) -> tuple[PseudoLabels, list[int]]:
    """The pseudo-labels the student learns from and the indices kept, for any ``balance`` mode
    (``align`` returns the aligned probabilities: their argmax and distribution are the targets)."""
    mode = balance_mode(balance)
    if mode == "align":
        pseudo = pseudo.aligned(prior)
        mode = "none"
    return pseudo, pseudo.select(threshold, mode, prior)


def subsample_pool(entries: list[list[Any]], limit: int | None, seed: int) -> list[list[Any]]:
    """At most ``limit`` unlabelled images, chosen reproducibly from the seed."""
    if limit is None or limit <= 0 or len(entries) <= limit:
        return list(entries)
    rng = random.Random(seed)
    return sorted(rng.sample(list(entries), limit), key=lambda e: str(e[0]))


def fit_temperature(probs: torch.Tensor, targets: torch.Tensor) -> float:
    """Temperature scaling (Guo et al. 2017): the T minimising the NLL of ``softmax(log p / T)``.

    Teachers trained on a few dozen images are badly calibrated (often under-confident, so that a
    0.8 threshold keeps nothing); after scaling on the validation split a confidence of 0.8 means
    about 80 % correct, which is what the threshold is meant to say.

    A bounded 1-D search over log T in [0.05, 20] (scipy's Brent): the NLL is smooth in log T, and
    a bounded search cannot diverge. (An unguarded LBFGS step did, on near-uniform teachers: T = nan
    made every probability nan and silently selected no pseudo-label.)
    """
    from scipy.optimize import minimize_scalar

    if probs.numel() == 0 or targets.numel() == 0:
        return 1.0
    if not torch.isfinite(probs).all():
        raise ValueError("the teacher's validation probabilities are not finite (nan or inf): it diverged")
    logits = probs.detach().double().clamp_min(1e-12).log()
    targets = targets.detach().long()

    def nll(log_t: float) -> float:
        return float(torch.nn.functional.cross_entropy(logits / math.exp(log_t), targets))

    best = minimize_scalar(
        nll, bounds=(math.log(0.05), math.log(20.0)), method="bounded", options={"xatol": 1e-4}
    )
    return float(min(20.0, max(0.05, math.exp(best.x))))


@torch.no_grad()
def ensemble_predict(
    teachers: list[tuple[Classifier, int]],
    datamodule: SemiCompactDataModule,
    entries: list[list[Any]],
    transforms: list[Any],
    device: str | torch.device = "cpu",
    batch_size: int = 256,
    temperatures: list[float] | None = None,
    weights: list[float] | None = None,
) -> PseudoLabels:
    """Mean probability over the views (the identity plus each transform) of each teacher, then the
    teachers' weighted mean (equal ``weights`` by default: the paper's mean probability)."""
    temperatures = temperatures or [1.0] * len(teachers)
    weights = weights or [1.0] * len(teachers)
    if len(weights) != len(teachers) or min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(f"teacher weights must be {len(teachers)} non-negative numbers, got {weights}")
    total: torch.Tensor | None = None
    refs: list[str] = []
    true: list[int | None] = []
    for (model, size), temperature, weight in zip(teachers, temperatures, weights, strict=True):
        model = model.to(device).eval()
        dm = SemiCompactDataModule(
            datamodule.source,
            datamodule.manifest,
            image_size=size,
            batch_size=batch_size,
            num_workers=datamodule.num_workers,
            skip_log=datamodule.skip_log,
            seed=datamodule.seed,
        )
        parts, labels = [], []
        for images, y in dm.loader_for(entries):
            if images.shape[0] == 0:
                continue
            x = images.to(device).float().div_(255.0)
            views = torch.cat([x, *[t(x) for t in transforms]], dim=0)
            p = (model(views) / temperature).softmax(dim=1)
            p = p.view(len(transforms) + 1, x.shape[0], -1).mean(dim=0)
            parts.append(p.cpu())
            labels.append(y)
        probs = torch.cat(parts) if parts else torch.empty(0, len(datamodule.classes))
        total = weight * probs if total is None else total + weight * probs
        if not refs:
            skipped = {ref for ref, _ in read_skip_log(datamodule.skip_log)}
            refs = [str(e[0]) for e in entries if str(e[0]) not in skipped]
            true = [int(v) for v in torch.cat(labels).tolist()] if labels else []
        model.cpu()
    assert total is not None
    probs = total / sum(weights)
    if not torch.isfinite(probs).all():  # never select nothing in silence
        raise ValueError("the teachers' probabilities on the unlabelled pool are not finite (nan or inf)")
    true_labels: list[int | None] = [None if v < 0 else v for v in true]
    return PseudoLabels(refs, probs, true_labels, list(datamodule.classes))


def teacher_weights(scores: list[float], n_classes: int) -> list[float]:
    """Ensemble weights from each teacher's validation macro-F1 above chance (``1 / n_classes``).

    Why: a mean over teachers is only as confident as their agreement, so one teacher near chance
    (e.g. a network that fine-tunes slowly on a few dozen images) pulls every image below the
    threshold and self-training silently turns into supervised training. Weighting by skill above
    chance keeps the ensemble of equally good teachers a plain mean and mutes a useless one.
    """
    chance = 1.0 / max(n_classes, 1)
    skill = [max(s - chance, 0.0) for s in scores]
    if sum(skill) <= 0:
        return [1.0] * len(scores)
    return [v / sum(skill) for v in skill]


def save_soft_targets(path: Path, pseudo: PseudoLabels, selected: list[int]) -> None:
    write_json(path, {"refs": [pseudo.refs[i] for i in selected], "probs": pseudo.probs[selected].tolist()})
