"""The semi-supervised and distillation losses on small hand-computed tensors (issue 16, item 6).

Expected values are written out with math.log / math.exp on plain floats, never by calling the code
under test. Module-level tests run the real ``training_loss`` with a stub network whose "image" is
its own logits, identity or fixed augmentations, and a fixed Beta sample and permutation.

Mutations tried, each on a copy of the tree (other agents share this one), and the tests that failed:
- FixMatch: mean over the masked images only; pseudo-label and mask from the strong view; weak and
  strong slices swapped; lambda_u dropped; a soft, non-detached weak-view target -> the two fixmatch
  loss/wiring tests (the last via the weak view's .grad); ``>`` for ``>=`` -> the threshold test.
  Dropping ``.detach()`` alone is not caught and cannot be: argmax and the threshold carry no gradient.
- MixMatch: lam for max(lam, 1 - lam); min; targets shuffled by another permutation or not mixed ->
  mix test and wiring test; CE or class-summed L2 on the unlabelled rows, L2 on the labelled rows ->
  loss test and wiring test; each view sharpened then averaged, first view only, no sharpening,
  unlabelled weight ignored -> wiring test; p^T for p^(1/T) -> sharpen test; alignment momentum
  1/16 -> alignment test.
- KD: T^2 dropped, KL ``mean`` for ``batchmean``, KL reversed, teacher not divided by T -> the four
  KD/soft-target tests; alpha swapped, soft term on labelled rows only -> kd_loss and KD wiring;
  teachers' logits averaged, first teacher only -> teacher_logits and KD wiring; finetune alpha
  swapped -> the finetune test.
- Function matching: lambda' = max(lam, 1 - lam), the ratio on the other row, teachers labelling
  the unmixed images, the labelled rows mixed too, no weak view -> the mixup and function-matching
  wiring tests.
- Self-training targets: soft row off by one, soft rows replaced by their argmax, codes indexing the
  pool instead of the selection, table of the whole pool, soft module on argmax labels -> the
  coded-targets / soft-module / student-targets tests.
- Pseudo-labels: ensemble multiplying by T, weights divided by their count, fit_temperature
  multiplying by T -> the ensemble and temperature tests.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from semicompact.compress.finetune import FinetuneModule, soft_target_loss
from semicompact.methods.fixmatch import FixMatchModule
from semicompact.methods.kd import DistillationModule
from semicompact.methods.losses import (
    coded_targets,
    fixmatch_unlabelled_loss,
    kd_loss,
    mixmatch_loss,
    mixmatch_mix,
    mixup_images,
    sharpen,
)
from semicompact.methods.mixmatch import MixMatchModule
from semicompact.methods.pseudo import PseudoLabels, ensemble_predict, fit_temperature
from semicompact.methods.self_training import SoftTargetModule, student_targets

# the modules log outside a Trainer in these tests: Lightning warns and drops the value
pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")

L2, L3 = math.log(2), math.log(3)
CLASSES = ["a", "b", "c"]


def _softmax(row: list[float]) -> list[float]:
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def _ce(row: list[float], target: list[float]) -> float:
    """Cross-entropy of logits ``row`` against the distribution ``target``."""
    return -sum(t * math.log(p) for t, p in zip(target, _softmax(row), strict=True))


def _kl(q: list[float], p: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(q, p, strict=True))


def _assert_rows(actual: torch.Tensor, expected: list[list[float]], atol: float = 1e-6) -> None:
    """``actual`` equals the hand-computed rows (same shape, every value within ``atol``)."""
    want = torch.tensor(expected, dtype=torch.float64)
    got = actual.detach().double()
    assert got.shape == want.shape, (got.tolist(), expected)
    assert torch.allclose(got, want, rtol=0.0, atol=atol), (got.tolist(), expected)


def _images(rows: list[list[float]]) -> torch.Tensor:
    """(B, 3, 1, 1) images whose pixels are the stub network's logits."""
    return torch.tensor(rows, dtype=torch.float32).view(len(rows), 3, 1, 1)


class _Logits(nn.Module):
    """The image is its own logits, times a trainable scale of 1; every output keeps its .grad."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.outputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x.flatten(1) * self.scale
        if out.requires_grad:
            out.retain_grad()
        self.outputs.append(out)
        return out


class _Roll(nn.Module):
    """A "strong view" that rotates the logits by one class, so it differs from the weak view."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.roll(1, dims=1)


class _Views(nn.Module):
    """Weak views of MixMatch: the i-th call returns the i-th fixed batch."""

    def __init__(self, views: list[torch.Tensor]) -> None:
        super().__init__()
        self.views, self.calls = views, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        view = self.views[self.calls]
        self.calls += 1
        return view


class _Const(nn.Module):
    """A teacher predicting the same logits for every image."""

    def __init__(self, row: list[float]) -> None:
        super().__init__()
        self.register_buffer("row", torch.tensor(row))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.row.expand(x.shape[0], -1)


# ---- FixMatch ---------------------------------------------------------------------------------

# weak-view logits: confidences 9/11 (kept at 0.8, class 1), 1/3 (masked), 18/20 (kept, class 0)
WEAK = [[0.0, math.log(9), 0.0], [0.0, 0.0, 0.0], [math.log(18), 0.0, 0.0]]


def test_fixmatch_loss_hard_labels_from_the_weak_view_averaged_over_all_images() -> None:
    weak = torch.tensor(WEAK, requires_grad=True)
    strong = torch.tensor([[L2, 0.0, 0.0], [L3, 0.0, 0.0], [0.0, L3, 0.0]], requires_grad=True)
    loss, mask = fixmatch_unlabelled_loss(weak, strong, threshold=0.8)
    assert mask.tolist() == [1.0, 0.0, 1.0]
    # image 0: strong probs (1/2, 1/4, 1/4), label 1 -> log 4; image 2: (1/5, 3/5, 1/5), label 0 ->
    # log 5; image 1 is masked but counts in the mean: / 3, not / 2
    assert loss.item() == pytest.approx((math.log(4) + math.log(5)) / 3, rel=1e-6)
    loss.backward()
    assert weak.grad is None  # no gradient through the pseudo-label or the mask
    expected = [[1 / 2, 1 / 4 - 1, 1 / 4], [0.0, 0.0, 0.0], [1 / 5 - 1, 3 / 5, 1 / 5]]
    assert strong.grad is not None
    _assert_rows(strong.grad, [[v / 3 for v in r] for r in expected])


def test_fixmatch_threshold_keeps_a_confidence_equal_to_it() -> None:
    weak, strong = torch.zeros(1, 2), torch.zeros(1, 2)  # confidence exactly 0.5, CE log 2 either way
    loss, mask = fixmatch_unlabelled_loss(weak, strong, threshold=0.5)
    assert mask.tolist() == [1.0] and loss.item() == pytest.approx(L2, rel=1e-6)
    loss, mask = fixmatch_unlabelled_loss(weak, strong, threshold=0.5001)
    assert mask.tolist() == [0.0] and loss.item() == 0.0


def test_fixmatch_module_wiring_weak_mask_strong_ce_and_lambda_u() -> None:
    net = _Logits()
    module = FixMatchModule(net, CLASSES, threshold=0.8, lambda_u=2.0)
    module.weak, module.strong = nn.Identity(), _Roll()
    xl, yl = _images([[L3, 0.0, 0.0], [0.0, 0.0, 0.0]]), torch.tensor([0, 2])
    xu = _images(WEAK)
    loss = module.training_loss({"x": (xl, yl), "u": (xu, torch.full((3,), -1))})
    # labelled: probs 3/5 for class 0 -> log(5/3); uniform, class 2 -> log 3; mean = log(5) / 2
    supervised = math.log(5) / 2
    # strong = weak rolled by one class: image 0 (label 1) logits (0, 0, log 9) -> log 11; image 2
    # (label 0) logits (0, log 18, 0) -> log 20; image 1 masked; mean over all 3 images
    unsupervised = (math.log(11) + math.log(20)) / 3
    assert loss.item() == pytest.approx(supervised + 2.0 * unsupervised, rel=1e-6)
    loss.backward()
    (out,) = net.outputs  # one forward pass over labelled, weak and strong images
    assert out.shape == (8, 3) and out.grad is not None
    assert out.grad[2:5].abs().max().item() == 0.0  # the weak view only gives the (detached) target
    strong_grad = [[1 / 11, 1 / 11 - 1, 9 / 11], [0.0, 0.0, 0.0], [1 / 20 - 1, 18 / 20, 1 / 20]]
    _assert_rows(out.grad[5:], [[2.0 / 3 * v for v in r] for r in strong_grad])


# ---- MixMatch ---------------------------------------------------------------------------------


def test_sharpen_squares_and_renormalises_at_t_one_half() -> None:
    q = sharpen(torch.tensor([[0.5, 0.3, 0.2], [0.25, 0.25, 0.5]]), 0.5)
    _assert_rows(q, [[25 / 38, 9 / 38, 4 / 38], [1 / 6, 1 / 6, 4 / 6]])
    q = sharpen(torch.tensor([[0.64, 0.36]]), 2.0)  # T > 1 flattens: square roots 0.8, 0.6
    _assert_rows(q, [[0.8 / 1.4, 0.6 / 1.4]])


@pytest.mark.parametrize("lam", [0.25, 0.75])
def test_mixmatch_mix_uses_max_lambda_and_one_joint_permutation(lam: float) -> None:
    inputs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    mixed, mixed_targets = mixmatch_mix(inputs, targets, lam, torch.tensor([2, 0, 1]))
    # lambda' = 0.75 either way; row i mixes with row order[i] for inputs AND targets
    _assert_rows(mixed, [[1.25, 0.5], [0.25, 0.75], [1.5, 1.75]])
    _assert_rows(mixed_targets, [[0.875, 0.125], [0.25, 0.75], [0.375, 0.625]])


def test_mixmatch_loss_is_soft_ce_on_labelled_rows_and_l2_on_the_rest() -> None:
    logits = torch.tensor([[L3, 0.0], [0.0, 0.0], [math.log(4), 0.0]])
    targets = torch.tensor([[0.875, 0.125], [0.25, 0.75], [0.375, 0.625]])
    loss_x, loss_u = mixmatch_loss(logits, targets, n=1)
    # labelled row: probs (3/4, 1/4)
    assert float(loss_x) == pytest.approx(-(0.875 * math.log(0.75) + 0.125 * math.log(0.25)), rel=1e-6)
    # unlabelled rows: probs (1/2, 1/2) and (4/5, 1/5); squared errors averaged over rows AND classes
    sq = (0.5 - 0.25) ** 2 + (0.5 - 0.75) ** 2 + (0.8 - 0.375) ** 2 + (0.2 - 0.625) ** 2
    assert float(loss_u) == pytest.approx(sq / 4, rel=1e-6)


def test_mixmatch_module_wiring_k_views_sharpened_mean_lambda_prime_joint_shuffle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    net = _Logits()
    module = MixMatchModule(net, CLASSES, k=2, temperature=0.5, lambda_u=75.0)
    v1, v2 = [L3, 0.0, 0.0], [0.0, 0.0, L2]  # probs (3/5, 1/5, 1/5) and (1/4, 1/4, 1/2)
    module.weak = _Views([_images([v1]), _images([v2])])
    module.beta = SimpleNamespace(sample=lambda: torch.tensor(0.2))  # lambda' = 0.8
    module.unlabelled_weight = lambda: 10.0  # type: ignore[method-assign]  # the ramp is tested elsewhere
    orders = []

    def randperm(n: int, device: object = None) -> torch.Tensor:
        orders.append(n)
        return torch.tensor([1, 2, 0])

    monkeypatch.setattr(torch, "randperm", randperm)
    r0 = [0.0, L2, 0.0]
    loss = module.training_loss({"x": (_images([r0]), torch.tensor([1])), "u": (_images([[9.0] * 3]), None)})
    assert orders == [3]  # one permutation over the labelled row and both unlabelled views
    assert module.weak.calls == 2
    # mean of the two views (17/40, 9/40, 14/40), sharpened at T = 1/2: squares 289, 81, 196
    g = [289 / 566, 81 / 566, 196 / 566]
    # rows (labelled, view 1, view 2) mixed 0.8 with rows (view 1, view 2, labelled)
    m0, t0 = [0.2 * L3, 0.8 * L2, 0.0], [0.2 * g[0], 0.8 + 0.2 * g[1], 0.2 * g[2]]
    m1, t1 = [0.8 * L3, 0.0, 0.2 * L2], g
    m2, t2 = [0.0, 0.2 * L2, 0.8 * L2], [0.8 * g[0], 0.8 * g[1] + 0.2, 0.8 * g[2]]
    loss_x = _ce(m0, t0)
    sq = [(p - t) ** 2 for m, tt in ((m1, t1), (m2, t2)) for p, t in zip(_softmax(m), tt, strict=True)]
    assert loss.item() == pytest.approx(loss_x + 10.0 * sum(sq) / 6, rel=1e-5)
    assert torch.allclose(net.outputs[-1].detach(), torch.tensor([m0, m1, m2]), atol=1e-6)


def test_mixmatch_distribution_alignment_scales_by_prior_over_running_mean() -> None:
    module = MixMatchModule(_Logits(), ["a", "b"], prior=torch.tensor([0.75, 0.25]))
    out = module.align_distribution(torch.tensor([[0.5, 0.5], [0.9, 0.1]]))
    # running mean (1/2, 1/2) moves 1/32 of the way to the batch mean (0.7, 0.3)
    mean = [0.5 * 31 / 32 + 0.7 / 32, 0.5 * 31 / 32 + 0.3 / 32]
    assert module.guess_mean.tolist() == pytest.approx(mean, abs=1e-7)
    rows = [[0.5 * 0.75 / mean[0], 0.5 * 0.25 / mean[1]], [0.9 * 0.75 / mean[0], 0.1 * 0.25 / mean[1]]]
    _assert_rows(out, [[a / (a + b), b / (a + b)] for a, b in rows])


# ---- knowledge distillation -------------------------------------------------------------------


def test_soft_target_loss_is_batchmean_kl_times_t_squared() -> None:
    # T = 2: student (2 log 2, 0, 0) / 2 -> (1/2, 1/4, 1/4); uniform student; teachers (0, 2 log 2, 0)
    # -> (1/4, 1/2, 1/4) and (2 log 3, 0, 0) -> (3/5, 1/5, 1/5)
    student = torch.tensor([[2 * L2, 0.0, 0.0], [0.0, 0.0, 0.0]])
    teacher = torch.tensor([[0.0, 2 * L2, 0.0], [2 * L3, 0.0, 0.0]])
    kl0 = _kl([1 / 4, 1 / 2, 1 / 4], [1 / 2, 1 / 4, 1 / 4])  # = log(2) / 4
    kl1 = _kl([3 / 5, 1 / 5, 1 / 5], [1 / 3, 1 / 3, 1 / 3])
    assert kl0 == pytest.approx(L2 / 4)
    assert float(soft_target_loss(student, teacher, 2.0)) == pytest.approx(4 * (kl0 + kl1) / 2, rel=1e-6)


def test_kd_loss_mixes_labelled_ce_and_soft_loss_over_every_row() -> None:
    student = torch.tensor([[2 * L2, 0.0, 0.0], [0.0, 0.0, 0.0]])
    teacher = torch.tensor([[0.0, 2 * L2, 0.0], [2 * L3, 0.0, 0.0]])
    loss = kd_loss(student, teacher, torch.tensor([0]), t=2.0, alpha=0.25)
    hard = math.log(1.5)  # row 0 at T = 1: probs (4/6, 1/6, 1/6), label 0
    soft = 4 * (L2 / 4 + _kl([3 / 5, 1 / 5, 1 / 5], [1 / 3] * 3)) / 2  # row 1 is unlabelled
    assert loss.item() == pytest.approx(0.75 * hard + 0.25 * soft, rel=1e-6)


def _kd_module() -> DistillationModule:
    # teachers at T = 2: (3/5, 1/5, 1/5) and (1/5, 3/5, 1/5); their mean (2/5, 2/5, 1/5)
    teachers = [(_Const([2 * L3, 0.0, 0.0]), 1), (_Const([0.0, 2 * L3, 0.0]), 1)]
    return DistillationModule(_Logits(), CLASSES, teachers=teachers, temperature=2.0, alpha=0.25)


def test_kd_teacher_logits_are_the_mean_of_the_teachers_probabilities() -> None:
    module = _kd_module()
    t = module.teacher_logits(_images([[0.0, 0.0, 0.0]]))
    _assert_rows(t, [[2 * math.log(0.4), 2 * math.log(0.4), 2 * math.log(0.2)]])
    _assert_rows((t / 2).softmax(dim=1), [[0.4, 0.4, 0.2]])
    assert not any(p.requires_grad for p in module.teachers.parameters())
    assert module.train().teachers.training is False


def test_kd_module_wiring_labelled_ce_and_soft_targets_on_unlabelled_images() -> None:
    module = _kd_module()
    xl, xu = _images([[2 * L2, 0.0, 0.0]]), _images([[0.0, 0.0, 0.0]])
    q = [0.4, 0.4, 0.2]
    kl0, kl1 = _kl(q, [1 / 2, 1 / 4, 1 / 4]), _kl(q, [1 / 3] * 3)
    loss = module.training_loss({"x": (xl, torch.tensor([0])), "u": (xu, torch.tensor([-1]))})
    assert loss.item() == pytest.approx(0.75 * math.log(1.5) + 0.25 * 4 * (kl0 + kl1) / 2, rel=1e-6)
    # a plain labelled batch (KD without the pool): the soft term covers the labelled row only
    loss = module.training_loss((xl, torch.tensor([0])))
    assert loss.item() == pytest.approx(0.75 * math.log(1.5) + 0.25 * 4 * kl0, rel=1e-6)


def test_mixup_images_uses_one_ratio_and_a_permutation_without_lambda_prime() -> None:
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    mixed = mixup_images(x, 0.3, torch.tensor([2, 0, 1]))
    # 0.3 x own row + 0.7 x the permuted row (MixMatch's lambda' would keep 0.7 of the own row)
    _assert_rows(mixed, [[0.3 + 1.4, 1.4], [0.7, 0.3], [0.6, 0.6 + 0.7]])


def test_function_matching_teacher_and_student_see_the_same_weak_mixed_images(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the teacher is the stub network too, so it "labels" exactly the image it is given
    net, teacher = _Logits(), _Logits()
    module = DistillationModule(
        net, CLASSES, teachers=[(teacher, 1)], temperature=2.0, alpha=0.25, transfer_augment=True, mixup=1.0
    )
    module.transfer = _Roll()  # the "weak view": logits rotated by one class
    module.beta = SimpleNamespace(sample=lambda: torch.tensor(0.25))
    monkeypatch.setattr(torch, "randperm", lambda n, device=None: torch.tensor([1, 0]))
    xl = _images([[2 * L2, 0.0, 0.0]])
    xu = _images([[L3, 0.0, 0.0], [0.0, 0.0, 4.0]])
    loss = module.training_loss({"x": (xl, torch.tensor([0])), "u": (xu, torch.tensor([-1, -1]))})
    # weak views (0, L3, 0) and (4, 0, 0); mixed 0.25 own + 0.75 other; the labelled row untouched
    rows = [[2 * L2, 0.0, 0.0], [3.0, 0.25 * L3, 0.0], [1.0, 0.75 * L3, 0.0]]
    _assert_rows(net.outputs[-1], rows)
    _assert_rows(teacher.outputs[-1], rows)
    # teacher = student on every row: the soft term is 0 and only the labelled CE is left
    assert loss.item() == pytest.approx(0.75 * math.log(1.5), rel=1e-5)


def test_finetune_kd_ce_on_labelled_rows_only_and_soft_targets_on_all() -> None:
    module = FinetuneModule(
        _Logits(), epochs=1, lr=1e-3, teacher=_Const([2 * L3, 0.0, 0.0]), kd_alpha=0.25, temperature=2.0
    )
    x = _images([[2 * L2, 0.0, 0.0], [0.0, 0.0, 0.0]])
    loss = module.training_step((x, torch.tensor([0, -1])), 0)
    q = [3 / 5, 1 / 5, 1 / 5]
    soft = 4 * (_kl(q, [1 / 2, 1 / 4, 1 / 4]) + _kl(q, [1 / 3] * 3)) / 2
    assert loss is not None
    assert loss.item() == pytest.approx(0.75 * math.log(1.5) + 0.25 * soft, rel=1e-6)


# ---- self-training targets (hard and soft) ----------------------------------------------------


def test_coded_targets_one_hot_for_classes_teacher_rows_for_pseudo_codes() -> None:
    table = torch.tensor([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    target = coded_targets(torch.tensor([1, 3, 0, 4]), 3, table)
    _assert_rows(target, [[0, 1, 0], [0.2, 0.3, 0.5], [1, 0, 0], [0.6, 0.3, 0.1]])


def test_soft_target_module_mixes_labels_and_teacher_distributions_in_one_batch() -> None:
    table = torch.tensor([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    module = SoftTargetModule(_Logits(), CLASSES, soft_targets=table)
    x = _images([[L2, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, L3, 0.0]])
    loss = module.training_loss((x, torch.tensor([1, 3, 4])))
    # class 1 on probs (1/2, 1/4, 1/4): log 4; soft row 0 on a uniform prediction: log 3;
    # soft row 1 (0.6, 0.3, 0.1) on probs (1/5, 3/5, 1/5)
    third = -(0.6 * math.log(0.2) + 0.3 * math.log(0.6) + 0.1 * math.log(0.2))
    assert loss.item() == pytest.approx((math.log(4) + L3 + third) / 3, rel=1e-6)


def test_student_targets_hard_pseudo_labels_and_soft_table() -> None:
    probs = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.05, 0.05, 0.9]])
    pseudo = PseudoLabels(["u0", "u1", "u2"], probs, [None, None, None], CLASSES)
    labelled = [["l0", 2], ["l1", 0]]
    entries, codes, soft = student_targets(labelled, pseudo, pseudo.select(0.65))
    assert entries == [["l0", 2], ["l1", 0], ["u0", 1], ["u2", 2]]  # hard: the teachers' argmax
    assert codes == [2, 0, 3, 4]
    _assert_rows(soft, [[0.1, 0.7, 0.2], [0.05, 0.05, 0.9]])
    # the hard pseudo-labels train as one-hot targets; the soft codes give back the teachers' rows
    _assert_rows(
        coded_targets(torch.tensor(codes), 3, soft),
        [[0, 0, 1], [1, 0, 0], [0.1, 0.7, 0.2], [0.05, 0.05, 0.9]],
    )
    entries, codes, soft = student_targets(labelled, pseudo, [])
    assert entries == labelled and codes == [2, 0] and soft.shape == (0, 3)


# ---- pseudo-labels: ensemble and temperature --------------------------------------------------


def test_ensemble_divides_by_each_teachers_temperature_and_weights_the_mean(cells_dir: Path) -> None:
    from semicompact.data import SemiCompactDataModule, make_split, open_source
    from semicompact.data.tta import build_tta

    source = open_source(cells_dir)
    manifest = make_split(source, n_labelled=5, seed=0)
    dm = SemiCompactDataModule(source, manifest, image_size=32, batch_size=8)
    pool = manifest.unlabelled[:3]
    # teacher A at T = 2: (2 log 3, 0, 0, 0) / 2 -> (1/2, 1/6, 1/6, 1/6)
    # teacher B at T = 1: (0, 0, 0, log 2) -> (1/5, 1/5, 1/5, 2/5); weights 3 : 1
    teachers = [(_Const([2 * L3, 0.0, 0.0, 0.0]), 32), (_Const([0.0, 0.0, 0.0, L2]), 32)]
    got = ensemble_predict(
        teachers, dm, pool, build_tta(["hflip"]), temperatures=[2.0, 1.0], weights=[3.0, 1.0]
    )
    expected = [
        (3 * a + b) / 4 for a, b in zip([1 / 2, 1 / 6, 1 / 6, 1 / 6], [0.2, 0.2, 0.2, 0.4], strict=True)
    ]
    _assert_rows(got.probs, [expected] * 3)
    assert got.labels.tolist() == [0, 0, 0] and got.confidence.tolist() == pytest.approx([0.425] * 3)


def test_temperature_is_the_nll_minimum_of_a_two_class_example() -> None:
    # every image p = (0.9, 0.1), 3 of 4 are class 0: the NLL is minimal where sigmoid(log 9 / T) =
    # 3/4, i.e. T = log 9 / log 3 = 2
    probs = torch.tensor([[0.9, 0.1]] * 4)
    assert fit_temperature(probs, torch.tensor([0, 0, 0, 1])) == pytest.approx(2.0, rel=1e-3)
