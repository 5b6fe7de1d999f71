"""Which test-time views data distillation uses: the declared invariances, and ``transforms: auto``.

A test-time view is only worth averaging over if it keeps the label. Two guards:

- the declared invariances (``--invariances``, ``data.invariances``): a flip that is not declared
  is never used (a chest X-ray without ``vflip`` gets no up-down flip), whatever ``transforms`` says;
- ``transforms: auto`` measures it: each candidate view is scored by the teachers' accuracy on the
  labelled validation images under that view and by its agreement with their plain predictions,
  and only the views that do not lower the accuracy are kept. A view that changes what the
  teachers see as the class (say a flip that turns one class's pattern into another's) costs
  validation accuracy and is dropped. It spends no label beyond the budget: the validation images
  are the ones early stopping and the temperature already use.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from rich.console import Console

from ..data import SemiCompactDataModule
from ..data.invariances import tta_allowed
from ..data.tta import EXTRA_TTA, TTA_NAMES, TestTimeTransform, build_tta
from ..errors import ConfigError
from ..models import Classifier
from ._options import as_list

console = Console(stderr=True)

AUTO = "auto"
#: what ``transforms: auto`` scores by default: the paper's ten and the two quarter turns (the
#: flips and turns only where the declared invariances allow them)
AUTO_CANDIDATES = [*TTA_NAMES, *EXTRA_TTA]


def is_auto(options: dict[str, Any]) -> bool:
    value = options.get("transforms")
    return isinstance(value, str) and value.strip().lower() == AUTO


def check_transforms(method: str, options: dict[str, Any]) -> None:
    """Unknown transform names fail before any training; ``auto`` checks its candidates."""
    if is_auto(options):
        candidates = as_list(options.get("auto_candidates")) or AUTO_CANDIDATES
        if any(str(c).strip().lower() == AUTO for c in candidates):
            raise ConfigError(f"--method {method}: option auto_candidates lists transforms, not 'auto'")
        build_tta(candidates)
        return
    build_tta(as_list(options.get("transforms")))


def run_transforms(options: dict[str, Any], invariances: Sequence[str] | None) -> list[TestTimeTransform]:
    """The transforms of a run (for ``auto``: the candidates), without the undeclared flips."""
    if is_auto(options):
        specs = as_list(options.get("auto_candidates")) or AUTO_CANDIDATES
    else:
        specs = as_list(options.get("transforms"))
    transforms = build_tta(specs)
    kept = [t for t in transforms if tta_allowed(t.name, invariances)]
    dropped = [str(t) for t in transforms if t not in kept]
    if dropped:
        console.print(
            f"test-time transform(s) {', '.join(dropped)} not used: not among the declared "
            f"--invariances {','.join(invariances or []) or 'none'}"
        )
    return kept


@torch.no_grad()
def view_predictions(
    model: torch.nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    transforms: Sequence[TestTimeTransform],
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted classes (1 + V, N): the identity then each view, true labels (N,)).

    ``batches`` hold uint8 or float [0, 1] images; each batch goes through the network once with
    all its views, as in pseudo-labelling.
    """
    model = model.to(device).eval()
    preds, targets = [], []
    for images, y in batches:
        if images.shape[0] == 0:
            continue
        x = images.to(device)
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        views = torch.cat([x, *[t(x) for t in transforms]], dim=0)
        preds.append(model(views).argmax(dim=1).view(len(transforms) + 1, x.shape[0]).cpu())
        targets.append(y.cpu())
    if not preds:
        return torch.empty(len(transforms) + 1, 0, dtype=torch.long), torch.empty(0, dtype=torch.long)
    return torch.cat(preds, dim=1), torch.cat(targets).long()


def choose_views(
    predictions: Sequence[torch.Tensor], targets: torch.Tensor, transforms: Sequence[TestTimeTransform]
) -> tuple[list[TestTimeTransform], dict[str, Any]]:
    """Keep the views whose validation accuracy, averaged over the teachers, is at least the
    identity's (ties kept: a view that changes nothing costs nothing); the record says why.

    ``predictions[i]`` is teacher i's (1 + V, N) from :func:`view_predictions`.
    """
    n = int(targets.numel())
    if n == 0:
        raise ConfigError(
            "transforms: auto scores the views on the labelled validation images, and the split has "
            "none; use --val labelled (the default) or list the transforms"
        )

    def accuracy(row: int) -> float:
        return sum(float((p[row] == targets).float().mean()) for p in predictions) / len(predictions)

    def agreement(row: int) -> float:
        return sum(float((p[row] == p[0]).float().mean()) for p in predictions) / len(predictions)

    base = accuracy(0)
    scored, kept = [], []
    for i, t in enumerate(transforms, start=1):
        acc = accuracy(i)
        keep = acc >= base - 1e-9
        scored.append({"view": str(t), "accuracy": acc, "agreement": agreement(i), "kept": keep})
        if keep:
            kept.append(t)
    record = {
        "rule": "keep a view if the teachers' validation accuracy under it is at least the identity's",
        "val_images": n,
        "identity_accuracy": base,
        "views": scored,
        "chosen": [str(t) for t in kept],
    }
    return kept, record


def select_views(
    teachers: Sequence[tuple[Classifier, int]],
    datamodule: SemiCompactDataModule,
    candidates: Sequence[TestTimeTransform],
    device: str | torch.device = "cpu",
    batch_size: int = 256,
) -> tuple[list[TestTimeTransform], dict[str, Any]]:
    """Score the candidate views with each teacher on the validation images (at its input size)."""
    predictions, targets = [], torch.empty(0, dtype=torch.long)
    for model, size in teachers:
        val = SemiCompactDataModule(
            datamodule.source,
            datamodule.manifest,
            image_size=size,
            batch_size=batch_size,
            skip_log=datamodule.skip_log,
        )
        preds, targets = view_predictions(model, val.val_dataloader(), candidates, device)
        model.cpu()
        predictions.append(preds)
    kept, record = choose_views(predictions, targets, candidates)
    shown = ", ".join(
        f"{v['view']} {v['accuracy']:.3f}{'' if v['kept'] else ' (dropped)'}" for v in record["views"]
    )
    console.print(
        f"test-time views on {record['val_images']} validation images (identity "
        f"{record['identity_accuracy']:.3f}): {shown or 'no candidate'}"
    )
    record["inference_images"] = record["val_images"] * (len(candidates) + 1) * len(teachers)
    return kept, record
