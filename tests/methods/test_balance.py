"""Class-balanced pseudo-label selection (option ``balance``): none, median, quota, align.

Small hand-computed tensors: the exact indices kept and the exact aligned probabilities.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from _shared import cli_error

from semicompact.errors import ConfigError
from semicompact.methods import get_method
from semicompact.methods.pseudo import (
    PseudoLabels,
    balance_mode,
    class_quotas,
    fill_quotas,
    labelled_prior,
    select_pseudo,
)

CLASSES = ["a", "b", "c"]


def _labels(probs: list[list[float]], classes: list[str] = CLASSES) -> PseudoLabels:
    return PseudoLabels(
        [f"img{i}" for i in range(len(probs))], torch.tensor(probs), [None] * len(probs), classes
    )


# 8 confident images at 0.8: class a 5 (img0..img4, confidence 0.99 down to 0.95), b 1 (img5),
# c 2 (img6 0.9, img7 0.85); img8 (0.5) is below the threshold
POOL = [
    [0.99, 0.005, 0.005],
    [0.98, 0.01, 0.01],
    [0.97, 0.02, 0.01],
    [0.96, 0.02, 0.02],
    [0.95, 0.03, 0.02],
    [0.05, 0.9, 0.05],
    [0.05, 0.05, 0.9],
    [0.1, 0.05, 0.85],
    [0.5, 0.3, 0.2],
]


def test_balance_values_and_their_old_spellings() -> None:
    assert [balance_mode(v) for v in (False, True, "none", "median", "quota", "align")] == [
        "none",
        "median",
        "none",
        "median",
        "quota",
        "align",
    ]
    with pytest.raises(ConfigError) as info:
        balance_mode("equal", "plain_distillation")
    assert str(info.value) == (
        "--method plain_distillation: option balance must be one of none, median, quota, align "
        "(true = median, false = none), got 'equal'"
    )


def test_none_and_median_are_unchanged() -> None:
    p = _labels(POOL)
    assert p.select(0.8) == p.select(0.8, "none") == p.select(0.8, False) == [0, 1, 2, 3, 4, 5, 6, 7]
    # counts 5, 1, 2: median 2 -> a keeps its two most confident
    assert p.select(0.8, True) == p.select(0.8, "median") == [0, 1, 5, 6, 7]


def test_quotas_follow_the_labelled_prior() -> None:
    assert class_quotas(8, torch.tensor([0.5, 0.25, 0.25])) == [4, 2, 2]
    assert class_quotas(8, torch.tensor([1 / 3, 1 / 3, 1 / 3])) == [3, 3, 3]  # 2.67 rounds to 3
    assert class_quotas(5, torch.tensor([0.5, 0.5])) == [3, 3]  # halves round up
    labelled = [["x", 0], ["y", 0], ["z", 1], ["w", 2]]
    assert labelled_prior(labelled, 3).tolist() == [0.5, 0.25, 0.25]


def test_quota_keeps_the_most_confident_of_each_predicted_class() -> None:
    p = _labels(POOL)
    # 8 confident images; prior 1/2, 1/4, 1/4 -> quotas 4, 2, 2: a keeps img0..img3 (not img4)
    assert p.select(0.8, "quota", torch.tensor([0.5, 0.25, 0.25])) == [0, 1, 2, 3, 5, 6, 7]
    # uniform prior (the paper's equal top-K): quotas 3, 3, 3
    assert p.select(0.8, "quota", torch.tensor([1 / 3, 1 / 3, 1 / 3])) == [0, 1, 2, 5, 6, 7]
    # a quota of 1 for c keeps its more confident image, img6 (0.9), not img7 (0.85)
    assert p.select(0.8, "quota", torch.tensor([0.75, 0.125, 0.125])) == [0, 1, 2, 3, 4, 5, 6]


def test_fill_quotas_repeats_the_images_of_rare_classes() -> None:
    p = _labels(POOL)
    prior = torch.tensor([0.5, 0.25, 0.25])
    kept = p.select(0.8, "quota", prior)
    # b has 1 image for a quota of 2: img5 twice; a and c are full
    assert fill_quotas(p, kept, class_quotas(8, prior)) == [0, 1, 2, 3, 5, 5, 6, 7]
    # quotas 3, 3, 3: b three times img5, c img6 (more confident) repeated once
    uniform = torch.tensor([1 / 3, 1 / 3, 1 / 3])
    kept = p.select(0.8, "quota", uniform)
    assert fill_quotas(p, kept, class_quotas(8, uniform)) == [0, 1, 2, 5, 5, 5, 6, 6, 7]


def test_align_rescales_by_prior_over_mean_prediction() -> None:
    # mean prediction over the pool (0.65, 0.35); prior uniform: factors 0.5/0.65 and 0.5/0.35
    p = _labels([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7]], ["a", "b"])
    q = p.aligned(torch.tensor([0.5, 0.5]))
    # img2: (0.6 / 0.65, 0.4 / 0.35) renormalised = (21/47, 26/47): it changes class
    assert q.probs[2].tolist() == pytest.approx([21 / 47, 26 / 47])
    assert q.probs[3].tolist() == pytest.approx([0.1875, 0.8125])  # (3/13, 1) / (16/13)
    assert q.probs.sum(dim=1).tolist() == pytest.approx([1.0] * 4)
    assert q.labels.tolist() == [0, 0, 1, 1] and p.labels.tolist() == [0, 0, 0, 1]
    aligned, kept = select_pseudo(p, 0.6, "align", torch.tensor([0.5, 0.5]))
    assert p.select(0.6) == [0, 1, 2, 3]
    assert kept == [0, 1, 3]  # img2's aligned confidence 26/47 = 0.553 is under 0.6
    assert torch.allclose(aligned.probs, q.probs)
    # a pool whose mean is the prior is left as it is
    same, kept = select_pseudo(
        _labels([[0.7, 0.3], [0.3, 0.7]], ["a", "b"]), 0.6, "align", torch.tensor([0.5, 0.5])
    )
    assert torch.allclose(same.probs, torch.tensor([[0.7, 0.3], [0.3, 0.7]])) and kept == [0, 1]


@pytest.mark.parametrize("method", ["plain_distillation", "data_distillation", "model_distillation"])
def test_the_paper_methods_still_default_to_no_balancing(method: str) -> None:
    assert get_method(method).config["balance"] is False
    assert balance_mode(get_method(method).config["balance"]) == "none"


def test_a_bad_balance_value_is_one_clear_line(cells_dir: Path, tmp_path: Path, capsys) -> None:
    line = cli_error(
        capsys,
        "ssl", str(cells_dir), "--out", str(tmp_path / "x"), "--no-progress",
        "--method", "plain_distillation", "--option", "balance=topk",
    )  # fmt: skip
    assert line == (
        "error: --method plain_distillation: option balance must be one of none, median, quota, align "
        "(true = median, false = none), got 'topk'"
    )
    assert not (tmp_path / "x").exists()


def test_align_in_a_run_trains_on_the_aligned_pseudo_labels(
    tmp_path_factory, cells_dir: Path, capsys
) -> None:
    """plain_distillation with balance=align: the written pseudo-labels are the teacher's raw
    probabilities (pseudo_labels.pt) aligned to the labelled prior, and the student trains on them."""
    from _shared import run_cli

    from semicompact.data import SplitManifest

    out = tmp_path_factory.mktemp("align") / "plain"
    args = [
        "ssl", str(cells_dir), "--out", str(out), "--method", "plain_distillation",
        "--model", "mobilenetv2_100", "--small-input", "--pretrained", "--image-size", "32",
        "--n-labelled", "10", "--max-steps", "6", "--head-steps", "2", "--no-early-stopping",
        "--batch-size", "8", "--no-progress", "--no-tensorboard", "--option", "teachers=mobilenetv2_100",
        "--option", "max_unlabelled=24", "--option", "balance=align", "--option", "confidence=0.3",
    ]  # fmt: skip
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    raw = torch.load(out / "pseudo_labels.pt", weights_only=True)
    manifest = SplitManifest.load(out / "split.json")
    prior = labelled_prior(manifest.labelled, len(manifest.classes))
    expected = PseudoLabels(raw["refs"], raw["probs"], raw["true"], manifest.classes).aligned(prior)
    assert (expected.probs - raw["probs"]).abs().max() > 0.01  # alignment moved the probabilities
    rows = list(csv.DictReader((out / "pseudo_labels.csv").open()))
    assert [r["image"] for r in rows] == expected.refs
    assert [float(r["confidence"]) for r in rows] == pytest.approx(expected.confidence.tolist(), abs=1e-6)
    assert [r["class"] for r in rows] == [manifest.classes[i] for i in expected.labels.tolist()]
    kept = [i for i, r in enumerate(rows) if r["selected"] == "1"]
    assert kept == expected.select(0.3)
    summary = json.loads((out / "pseudo_summary.json").read_text())
    assert summary["balance"] == "align" and summary["selected"] == len(kept)
    trained = json.loads((out / "train_entries.json").read_text())[4 * 8 :]
    assert trained == [[expected.refs[i], int(expected.labels[i])] for i in kept]
