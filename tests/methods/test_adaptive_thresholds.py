"""FlexMatch, FreeMatch, SoftMatch and DebiasPL: each rule on hand-computed tensors, the modules' wiring
(what is updated before what), and short runs (cost, CLI, resume of the threshold state)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from _shared import method_config, run_cli

from semicompact.methods import get_method, list_methods, run_method
from semicompact.methods.adaptive_thresholds import (
    DebiasedPseudoLabels,
    DistributionAlignment,
    FlexMatchThresholds,
    FreeMatchThresholds,
    SoftMatchWeights,
    flexmatch_learning_effect,
    freematch_fairness_loss,
    masked_cross_entropy,
)

# ------------------------------------------------------------------------------------ FlexMatch
# 8 pool images, 3 classes: two predicted as class 0, one as class 1, five unused
PREDICTIONS = torch.tensor([0, 0, 1, -1, -1, -1, -1, -1])


def test_flexmatch_learning_effect_with_and_without_warmup() -> None:
    # warm-up: sigma / max(max sigma, unused) = [2, 1, 0] / max(2, 5)
    assert flexmatch_learning_effect(PREDICTIONS, 3, warmup=True).tolist() == pytest.approx([0.4, 0.2, 0.0])
    # without: sigma / max sigma
    assert flexmatch_learning_effect(PREDICTIONS, 3, warmup=False).tolist() == pytest.approx([1.0, 0.5, 0.0])
    # nothing selected yet: every beta is 0, so every threshold is 0 (all images pass at the start)
    unused = torch.full((8,), -1)
    assert flexmatch_learning_effect(unused, 3, warmup=True).tolist() == [0.0, 0.0, 0.0]
    assert flexmatch_learning_effect(unused, 3, warmup=False).tolist() == [0.0, 0.0, 0.0]


def _flex(predictions: torch.Tensor, warmup: bool = True, mapping: str = "convex") -> FlexMatchThresholds:
    state = FlexMatchThresholds(len(predictions), 3, tau=0.95, warmup=warmup, mapping=mapping)
    state.predictions.copy_(predictions)
    return state


def test_flexmatch_thresholds_use_the_convex_mapping() -> None:
    # M(x) = x / (2 - x): M(0.4) = 0.25, M(0.2) = 1/9, times tau = 0.95
    assert _flex(PREDICTIONS).thresholds().tolist() == pytest.approx([0.2375, 0.95 / 9, 0.0])
    # without warm-up: M(1) = 1, M(0.5) = 1/3
    assert _flex(PREDICTIONS, warmup=False).thresholds().tolist() == pytest.approx([0.95, 0.95 / 3, 0.0])
    assert _flex(PREDICTIONS, mapping="linear").thresholds().tolist() == pytest.approx([0.38, 0.19, 0.0])
    concave = _flex(PREDICTIONS, mapping="concave").thresholds()
    assert concave.tolist() == pytest.approx([0.95 * math.log2(1.4), 0.95 * math.log2(1.2), 0.0])


def test_flexmatch_mask_compares_each_image_with_its_class_threshold() -> None:
    state = _flex(PREDICTIONS, warmup=False)  # thresholds [0.95, 0.3167, 0]
    probs = torch.tensor([[0.90, 0.05, 0.05], [0.96, 0.02, 0.02], [0.33, 0.35, 0.32], [0.30, 0.31, 0.39]])
    mask, pseudo = state.mask(probs)
    assert mask.tolist() == [0.0, 1.0, 1.0, 1.0]
    assert pseudo.tolist() == [0, 0, 1, 2]


def test_flexmatch_update_records_only_images_above_tau() -> None:
    state = _flex(PREDICTIONS)
    probs = torch.tensor([[0.96, 0.02, 0.02], [0.10, 0.10, 0.80], [0.01, 0.97, 0.02]])
    state.update(probs, torch.tensor([3, 0, 7]))
    # image 3 -> class 0, image 7 -> class 1; image 0 (0.8 < 0.95) keeps its earlier class
    assert state.predictions.tolist() == [0, 0, 1, 0, -1, -1, -1, 1]
    assert "predictions" in dict(state.named_buffers())  # checkpointed with the module


def test_masked_cross_entropy_averages_over_every_image() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    loss = masked_cross_entropy(logits, torch.tensor([0, 2]), torch.tensor([1.0, 0.5]))
    ce0 = math.log(1 + 2 * math.exp(-2))  # -log softmax(2, 0, 0)[0]
    ce1 = math.log(math.e + 2)  # -log softmax(0, 1, 0)[2]
    assert float(loss) == pytest.approx((ce0 + 0.5 * ce1) / 2)


# ------------------------------------------------------------------------------------ FreeMatch
def test_freematch_update_starts_at_one_over_c_and_follows_the_ema() -> None:
    state = FreeMatchThresholds(2, momentum=0.9)
    assert float(state.tau) == 0.5 and state.p_model.tolist() == [0.5, 0.5] == state.label_hist.tolist()
    state.update(torch.tensor([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7]]))
    assert float(state.tau) == pytest.approx(0.9 * 0.5 + 0.1 * 0.7)  # mean max confidence 0.7
    assert state.p_model.tolist() == pytest.approx([0.45 + 0.1 * 1.7 / 3, 0.45 + 0.1 * 1.3 / 3])
    assert state.label_hist.tolist() == pytest.approx([0.45 + 0.1 * 2 / 3, 0.45 + 0.1 / 3])
    # threshold of c: p~(c) / max p~ * tau
    p0, p1 = 0.45 + 0.1 * 1.7 / 3, 0.45 + 0.1 * 1.3 / 3
    assert state.thresholds().tolist() == pytest.approx([0.52, p1 / p0 * 0.52])
    mask, pseudo = state.mask(torch.tensor([[0.51, 0.49], [0.49, 0.51]]))
    assert mask.tolist() == [0.0, 1.0] and pseudo.tolist() == [0, 1]  # 0.51 < 0.52, 0.51 >= 0.5063


def test_freematch_fairness_loss_value() -> None:
    # target SumNorm(p~ / h~) = SumNorm([0.6 / 0.75, 0.4 / 0.25]) = [1/3, 2/3]
    p_model, label_hist = torch.tensor([0.6, 0.4]), torch.tensor([0.75, 0.25])
    logits = torch.tensor([[math.log(3), 0.0], [0.0, math.log(3)], [math.log(4), 0.0]], requires_grad=True)
    # probabilities [0.75, 0.25], [0.25, 0.75], [0.8, 0.2]: mean [0.6, 0.4], histogram [2/3, 1/3]
    loss = freematch_fairness_loss(logits, torch.ones(3), p_model, label_hist)
    value = float(loss.detach())
    pred = torch.tensor([0.6 * 1.5, 0.4 * 3.0])
    pred = pred / pred.sum()  # [3/7, 4/7]
    assert value == pytest.approx(math.log(3 / 7) / 3 + 2 * math.log(4 / 7) / 3, abs=1e-6)
    assert value == pytest.approx(float((torch.tensor([1 / 3, 2 / 3]) * pred.log()).sum()), abs=1e-6)
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    logits = logits.detach()
    # masked images only; none masked: 0
    masked = freematch_fairness_loss(logits, torch.tensor([1.0, 1.0, 0.0]), p_model, label_hist)
    assert float(masked) == pytest.approx(math.log(0.5), abs=1e-6)  # mean [0.5, 0.5], hist [0.5, 0.5]
    assert float(freematch_fairness_loss(logits, torch.zeros(3), p_model, label_hist)) == 0.0
    # a class no masked image predicts gets 1/0 -> 0 (USB): the prediction is all on class 0
    one_class = freematch_fairness_loss(logits, torch.tensor([1.0, 0.0, 1.0]), p_model, label_hist)
    assert float(one_class) == pytest.approx(math.log(1 + 1e-12) / 3 + 2 * math.log(1e-12) / 3, rel=1e-4)


# ------------------------------------------------------------------------------------ SoftMatch
def test_softmatch_weights_are_a_truncated_gaussian() -> None:
    state = SoftMatchWeights(2, momentum=0.9, n_sigma=2.0)
    state.mu.fill_(0.8)
    state.var.fill_(0.01)
    probs = torch.tensor([[0.6, 0.4], [0.3, 0.7], [0.9, 0.1]])
    # exp(-(p - mu)^2 / (2 var / n_sigma^2)) below mu: 2 var / 4 = 0.005
    assert state.weights(probs).tolist() == pytest.approx([math.exp(-8), math.exp(-2), 1.0], rel=1e-5)


def test_softmatch_update_is_an_ema_of_mean_and_unbiased_variance() -> None:
    state = SoftMatchWeights(2, momentum=0.9)
    assert (float(state.mu), float(state.var)) == (0.5, 1.0)
    state.update(torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]]))  # max 0.9, 0.6, 0.7
    mean = (0.9 + 0.6 + 0.7) / 3
    var = sum((x - mean) ** 2 for x in (0.9, 0.6, 0.7)) / 2
    assert float(state.mu) == pytest.approx(0.9 * 0.5 + 0.1 * mean)
    assert float(state.var) == pytest.approx(0.9 * 1.0 + 0.1 * var)
    state.update(torch.tensor([[0.2, 0.8]]))  # one image: no variance, the variance is kept
    assert float(state.var) == pytest.approx(0.9 * 1.0 + 0.1 * var)


def test_uniform_alignment_and_distribution_alignment() -> None:
    ua = DistributionAlignment(torch.tensor([0.5, 0.5]), momentum=0.9)
    batch = torch.tensor([[0.8, 0.2], [0.6, 0.4]])
    ua.update(batch)  # the first batch sets the running mean: [0.7, 0.3]
    assert ua.p_model.tolist() == pytest.approx([0.7, 0.3])
    # [0.8 / 0.7, 0.2 / 0.3] renormalised = [24/38, 14/38]
    assert ua.align(batch)[0].tolist() == pytest.approx([24 / 38, 14 / 38], rel=1e-5)
    ua.update(torch.tensor([[0.5, 0.5]]))
    assert ua.p_model.tolist() == pytest.approx([0.68, 0.32])
    da = DistributionAlignment(torch.tensor([0.25, 0.75]))
    da.update(torch.tensor([[0.5, 0.5]]))
    assert da.align(torch.tensor([[0.5, 0.5]]))[0].tolist() == pytest.approx([0.25, 0.75], rel=1e-5)


# ------------------------------------------------------------------------------------- DebiasPL
def test_debiaspl_marginal_is_an_ema_from_uniform_and_shifts_the_logits_both_ways() -> None:
    state = DebiasedPseudoLabels(2, tau=0.5, momentum=0.9)
    assert state.p_hat.tolist() == pytest.approx([0.5, 0.5])
    state.update(torch.tensor([[0.8, 0.2], [0.6, 0.4]]))  # batch mean [0.7, 0.3]
    assert state.p_hat.tolist() == pytest.approx([0.52, 0.48])
    logits = torch.tensor([[1.0, 1.0]])
    shift = [0.5 * math.log(0.52), 0.5 * math.log(0.48)]
    # debiased: logits - 0.5 log p_hat (the favoured class 0 goes down); margin: + 0.5 log p_hat
    assert state.debiased(logits)[0].tolist() == pytest.approx([1 - shift[0], 1 - shift[1]])
    assert state.margin(logits)[0].tolist() == pytest.approx([1 + shift[0], 1 + shift[1]])
    # an explicit marginal (the module's "before the batch") replaces the running one
    uniform = torch.tensor([0.5, 0.5])
    assert state.margin(logits, uniform)[0].tolist() == pytest.approx([1 + 0.5 * math.log(0.5)] * 2)


# ------------------------------------------------------------------------------ modules' wiring
def _module(name: str, **kwargs):
    from semicompact.methods.debiaspl import DebiasPLModule
    from semicompact.methods.flexmatch import FlexMatchModule
    from semicompact.methods.freematch import FreeMatchModule
    from semicompact.methods.softmatch import SoftMatchModule
    from semicompact.models import create_model

    modules = {"flexmatch": FlexMatchModule, "freematch": FreeMatchModule, "softmatch": SoftMatchModule}
    cls = {**modules, "debiaspl": DebiasPLModule}[name]
    return cls(create_model("resnet18", 2), ["a", "b"], head_steps=0, **kwargs)


# the modules log without a trainer in these tests
no_trainer = pytest.mark.filterwarnings("ignore:You are trying to `self.log")


def _fixed_views(module, weak: list[list[float]], strong: list[list[float]]) -> None:
    """The network's logits replaced by fixed ones: supervised loss 1.0, given weak and strong logits."""
    module.views = lambda batch: (torch.tensor(1.0), torch.tensor(weak), torch.tensor(strong))


def _batch(index: list[int]) -> dict:
    return {
        "x": (torch.zeros(1, 3, 8, 8), torch.zeros(1, dtype=torch.long)),
        "u": (None, torch.tensor(index)),
    }


@no_trainer
def test_flexmatch_module_masks_with_the_thresholds_from_before_the_batch() -> None:
    module = _module("flexmatch", pool_size=2, threshold=0.95)
    # weak probabilities 0.9526 and 0.6, both class 0; before the batch every threshold is 0
    weak, strong = [[3.0, 0.0], [math.log(1.5), 0.0]], [[0.0, 0.0], [0.0, 0.0]]
    _fixed_views(module, weak, strong)
    loss = module.training_loss(_batch([0, 1]))
    assert float(loss) == pytest.approx(1.0 + math.log(2))  # both images pass: CE of uniform logits
    assert module.flex.predictions.tolist() == [0, -1]  # only the image above 0.95 is recorded
    # after the batch beta_0 = 1 / max(1, 1 unused) = 1: T_0 = 0.95 would have masked the second image
    assert module.flex.thresholds().tolist() == pytest.approx([0.95, 0.0])
    with pytest.raises(RuntimeError, match="pool index"):
        module.training_loss(_batch([-1, -1]))


@no_trainer
def test_freematch_module_adds_the_weighted_fairness_term() -> None:
    module = _module("freematch", w_f=0.5, ema_p=0.9)
    weak, strong = [[math.log(4), 0.0], [0.0, math.log(4)]], [[math.log(3), 0.0], [0.0, math.log(3)]]
    _fixed_views(module, weak, strong)
    loss = module.training_loss(_batch([-1, -1]))
    # update first: tau = 0.9 * 0.5 + 0.1 * 0.8 = 0.53, p~ stays [0.5, 0.5]: both 0.8 >= 0.53 pass
    assert float(module.free.tau) == pytest.approx(0.53)
    unsupervised = -math.log(0.75)
    fairness = math.log(0.5)  # strong mean [0.5, 0.5], histogram [0.5, 0.5], target [0.5, 0.5]
    assert float(loss) == pytest.approx(1.0 + unsupervised + 0.5 * fairness, abs=1e-6)


@no_trainer
def test_softmatch_module_weights_aligned_probabilities_but_labels_from_the_raw_ones() -> None:
    module = _module("softmatch", ema_p=0.9)
    # raw weak probabilities [0.8, 0.2] and [0.6, 0.4]: UA's running mean is [0.7, 0.3], the aligned
    # second image [0.6/0.7, 0.4/0.3] -> class 1, but the pseudo-label stays class 0 (raw argmax)
    weak = [[math.log(4), 0.0], [math.log(1.5), 0.0]]
    strong = [[0.0, 0.0], [0.0, math.log(3)]]
    _fixed_views(module, weak, strong)
    loss = module.training_loss(_batch([-1, -1]))
    aligned = torch.tensor([[0.8 / 0.7, 0.2 / 0.3], [0.6 / 0.7, 0.4 / 0.3]])
    aligned = aligned / aligned.sum(dim=1, keepdim=True)
    confidence = aligned.max(dim=1).values
    mu = 0.9 * 0.5 + 0.1 * float(confidence.mean())
    var = 0.9 * 1.0 + 0.1 * float(confidence.var())
    weights = [1.0 if c >= mu else math.exp(-((c - mu) ** 2) / (2 * var / 4)) for c in confidence.tolist()]
    ce = [math.log(2), -math.log(1 / 4)]  # strong views against the raw argmax: class 0 for both
    assert float(loss) == pytest.approx(1.0 + (weights[0] * ce[0] + weights[1] * ce[1]) / 2, rel=1e-5)
    assert float(module.soft.mu) == pytest.approx(mu)


@no_trainer
def test_debiaspl_module_masks_on_debiased_probabilities_and_takes_the_margin_from_before() -> None:
    module = _module("debiaspl", debias=1.0, ema_p=0.9, threshold=0.59)
    # raw weak probabilities [0.8, 0.2] and [0.6, 0.4]: both class 0, both >= 0.59 for FixMatch
    weak, strong = [[math.log(4), 0.0], [math.log(1.5), 0.0]], [[0.0, 0.0], [0.0, 0.0]]
    _fixed_views(module, weak, strong)
    loss = module.training_loss(_batch([-1, -1]))
    # update first: p_hat = [0.52, 0.48]; debiased p ~ p / p_hat: [0.787, 0.213] and [0.581, 0.419],
    # so the second image falls below 0.59; the margin uses p_hat from before the batch (uniform),
    # which shifts both strong logits equally: CE log 2 for the first image, 0 for the masked one
    assert module.debias.p_hat.tolist() == pytest.approx([0.52, 0.48])
    assert float(loss) == pytest.approx(1.0 + math.log(2) / 2, abs=1e-6)
    # the same batch again: p_hat = [0.538, 0.462], the second image still masked (0.563); the margin
    # is now log [0.52, 0.48]: uniform strong logits give CE -log 0.52 for the first image
    loss = module.training_loss(_batch([-1, -1]))
    assert module.debias.p_hat.tolist() == pytest.approx([0.538, 0.462])
    assert float(loss) == pytest.approx(1.0 - math.log(0.52) / 2, abs=1e-6)


@no_trainer
def test_state_updates_use_every_ddp_process(monkeypatch) -> None:
    """Under DDP the probabilities and pool indices of all processes update the state: here a fake
    second process sends image 3, confidently class 1."""
    from types import SimpleNamespace

    module = _module("flexmatch", pool_size=4, threshold=0.95)
    module._trainer = SimpleNamespace(world_size=2)
    monkeypatch.setattr(module, "log", lambda *args, **kwargs: None)
    other = {torch.float32: torch.tensor([[0.01, 0.99], [0.5, 0.5]]), torch.int64: torch.tensor([3, 2])}
    monkeypatch.setattr(module, "all_gather", lambda t: torch.stack([t, other[t.dtype]]))
    _fixed_views(module, [[3.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]])
    module.training_loss(_batch([0, 1]))
    assert module.flex.predictions.tolist() == [0, -1, -1, 1]


def test_published_defaults_and_listing() -> None:
    assert {"flexmatch", "freematch", "softmatch"} <= set(list_methods())
    flex = get_method("flexmatch").config
    assert (flex["threshold"], flex["mapping"], flex["thresh_warmup"], flex["mu"]) == (
        0.95,
        "convex",
        True,
        7,
    )
    free = get_method("freematch").config
    assert (free["ema_p"], free["w_f"], free["lambda_u"], free["mu"]) == (0.999, 0.001, 1.0, 7)
    soft = get_method("softmatch").config
    assert (soft["ema_p"], soft["n_sigma"], soft["uniform_alignment"]) == (0.999, 2.0, True)
    debias = get_method("debiaspl").config
    assert (debias["threshold"], debias["debias"], debias["ema_p"]) == (0.95, 0.4, 0.999)  # USB's
    names = ("flexmatch", "freematch", "softmatch", "debiaspl")
    assert not any(get_method(m).config["dist_align"] for m in names)


def test_ssl_help_and_method_list_show_them(capsys) -> None:
    code, out, _ = run_cli(capsys, "ssl", "--help")
    assert code == 0
    assert all(name in out for name in ("flexmatch", "freematch", "softmatch", "debiaspl"))
    code, out, _ = run_cli(capsys, "ssl-methods")
    assert code == 0 and all(name in out for name in ("flexmatch", "freematch", "softmatch", "debiaspl"))


def test_bad_options_are_named(cells_dir: Path, tmp_path: Path, capsys) -> None:
    from _shared import cli_error

    err = cli_error(
        capsys, "ssl", str(cells_dir), "--out", str(tmp_path / "x"), "--method", "flexmatch",
        "--option", "mapping=cubic",
    )  # fmt: skip
    assert "option mapping must be one of convex, linear, concave, got 'cubic'" in err
    err = cli_error(
        capsys, "ssl", str(cells_dir), "--out", str(tmp_path / "y"), "--method", "softmatch",
        "--option", "dist_align=maybe",
    )  # fmt: skip
    assert "option dist_align must be true or false, got 'maybe'" in err
    err = cli_error(
        capsys, "ssl", str(cells_dir), "--out", str(tmp_path / "z"), "--method", "debiaspl",
        "--option", "dist_align=true",
    )  # fmt: skip
    assert "--method debiaspl: option dist_align=true is not supported" in err
    assert not (tmp_path / "z").exists()  # refused before the run folder is made


# --------------------------------------------------------------------------------- short runs
STEPS, BATCH, MU = 8, 8, 2
FLEX = {"mu": MU, "max_unlabelled": 40, "threshold": 0.4}  # a low tau so that a short run records classes


def _config(data: Path, out: Path):
    budget = dict(n_labelled=10, max_steps=STEPS, head_steps=2, val_every=4, early_stopping=False)
    return method_config(data, out, batch_size=BATCH, **budget)


def _cli_args(data: Path, out: Path) -> list[str]:
    return [
        "ssl", str(data), "--out", str(out), "--method", "flexmatch", "--model", "mobilenetv2_100",
        "--small-input", "--pretrained", "--image-size", "32", "--n-labelled", "10",
        "--max-steps", str(STEPS), "--head-steps", "2", "--val-every", "4", "--no-early-stopping",
        "--batch-size", str(BATCH), "--epochs", "2", "--head-epochs", "1",
        "--no-progress", "--no-tensorboard",
        *[a for k, v in FLEX.items() for a in ("--option", f"{k}={v}")],
    ]  # fmt: skip


def _state(run_dir: Path, prefix: str) -> dict[str, Any]:
    """The method's state in the run's last checkpoint (the current, not the EMA, model), and its
    ``global_step`` (Lightning writes last.ckpt only at validations that improved the best score)."""
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    state = checkpoint.get("current_model_state", checkpoint["state_dict"])
    return {
        "global_step": checkpoint["global_step"],
        **{k: v for k, v in state.items() if k.startswith(prefix)},
    }


@pytest.fixture(scope="module")
def flex_cli(cells_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A FlexMatch run from the command line, never interrupted."""
    from semicompact.cli.main import main

    out = tmp_path_factory.mktemp("flex") / "cli"
    with pytest.raises(SystemExit) as exit_info:
        main(_cli_args(cells_dir, out))
    assert exit_info.value.code == 0
    return out


def _check_cost(metrics: dict) -> None:
    cost = metrics["cost"]
    assert cost["optimizer_steps"] == STEPS
    assert cost["labelled_images_seen"] == STEPS * BATCH
    assert cost["unlabelled_images_seen"] == STEPS * 2 * MU * BATCH  # weak + strong view of each image


def test_flexmatch_from_the_command_line(flex_cli: Path) -> None:
    metrics = json.loads((flex_cli / "metrics.json").read_text())
    assert metrics["method"] == "flexmatch" and metrics["options"]["threshold"] == 0.4
    _check_cost(metrics)
    predictions = _state(flex_cli, "flex.")["flex.predictions"]
    assert predictions.shape == (40,)  # one entry per pool image
    assert int((predictions >= 0).sum()) > 0 and int(predictions.min()) >= -1 and int(predictions.max()) < 4


@pytest.mark.parametrize(("name", "prefix"), [("freematch", "free."), ("softmatch", "soft.")])
def test_freematch_and_softmatch_runs(cells_dir: Path, tmp_path: Path, name: str, prefix: str) -> None:
    # FreeMatch with distribution alignment: the labelled prior (8 per class) as target, one update a step
    extra = {"dist_align": True} if name == "freematch" else {}
    result = run_method(name, _config(cells_dir, tmp_path / name), {"mu": MU, "max_unlabelled": 40, **extra})
    _check_cost(result.metrics)
    state = _state(result.run_dir, prefix)
    align = _state(result.run_dir, "dist_align.")  # SoftMatch: uniform alignment
    assert align["dist_align.target"].tolist() == pytest.approx([0.25] * 4)
    assert int(align["dist_align.updates"]) == align["global_step"] > 0
    # the state moved away from its start (1/C, variance 1) and is in the checkpoint
    start = {"free.tau": 0.25, "soft.mu": 0.25, "soft.var": 1.0}
    moved = [k for k, v in state.items() if k in start and float(v) != pytest.approx(start[k], abs=1e-7)]
    assert moved, state


def test_debiaspl_run_keeps_its_marginal_in_the_checkpoint(cells_dir: Path, tmp_path: Path) -> None:
    result = run_method("debiaspl", _config(cells_dir, tmp_path / "d"), {"mu": MU, "max_unlabelled": 40})
    _check_cost(result.metrics)
    assert result.metrics["method"] == "debiaspl" and result.metrics["options"]["debias"] == 0.4
    p_hat = _state(result.run_dir, "debias.")["debias.p_hat"]
    assert float(p_hat.sum()) == pytest.approx(1.0, abs=1e-5)  # an average of probabilities
    assert not torch.allclose(p_hat, torch.full((4,), 0.25), atol=1e-7)  # it was updated


def test_flexmatch_resume_restores_the_threshold_state(cells_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """Stopped after the checkpoint of step 4 and resumed: the training continues from the pool's
    recorded classes in the checkpoint (not from an empty buffer) and the cost counts every step.

    Not compared with the uninterrupted run: under ``--max-steps`` the engine's resume is not
    bit-exact for FixMatch either (measured with kill -9 too), which is the engine's business."""
    from semicompact.methods.flexmatch import FlexMatchModule

    def stop(self, *args) -> None:
        if self.global_step >= 5:
            raise RuntimeError("stopped for the test")

    monkeypatch.setattr(FlexMatchModule, "on_train_batch_end", stop, raising=False)
    cut = tmp_path / "cut"
    with pytest.raises(RuntimeError, match="stopped for the test"):
        run_method("flexmatch", _config(cells_dir, cut), FLEX)
    monkeypatch.undo()
    assert not (cut / "metrics.json").exists()
    saved = _state(cut, "flex.")["flex.predictions"]
    assert int((saved >= 0).sum()) > 0  # classes were recorded before the checkpoint
    restored = []
    monkeypatch.setattr(
        FlexMatchModule,
        "on_train_start",
        lambda self: restored.append(self.flex.predictions.clone()),
        raising=False,
    )
    result = run_method("flexmatch", _config(cells_dir, cut), FLEX, resume=True)
    assert len(restored) == 1 and torch.equal(restored[0], saved)
    _check_cost(result.metrics)
    final = _state(cut, "flex.")["flex.predictions"]
    assert int((final >= 0).sum()) >= int((saved >= 0).sum())  # a recorded image never becomes unused
