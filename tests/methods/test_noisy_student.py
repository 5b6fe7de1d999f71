"""Noisy Student (Xie et al. 2020): a clean teacher, a noised student, balanced pseudo-labels, rounds.

The wiring is checked piece by piece (the student's dropout and stochastic depth, RandAugment on its
training batches, the teacher in eval mode on clean images) and in one end-to-end run of two rounds
through the command line, under an exact step budget, with every round's cost in ``metrics.json``.
"""

from __future__ import annotations

import csv
import functools
import json
import types
from pathlib import Path

import pytest
import torch
from _shared import cli_error, run_cli

from semicompact.cli.main import main as cli_main
from semicompact.data import SemiCompactDataModule, SplitManifest, make_split, open_source
from semicompact.data.ssl_augment import BatchRandAugment
from semicompact.methods import get_method, method_class
from semicompact.methods import self_training as st
from semicompact.methods.noisy_student import _noisy_datamodule, _noisy_module
from semicompact.methods.pseudo import PseudoLabels, subsample_pool
from semicompact.methods.self_training import CodedTrainDataModule, SoftTargetModule, _soft_module
from semicompact.models import create_model
from semicompact.models.noise import InputDropout, is_noisy, stochastic_depth_blocks

STEPS = 10
BATCH = 8
POOL = 24


def test_defaults_follow_the_paper_where_the_project_allows() -> None:
    c = method_class("noisy_student").options
    assert (c["labels"], c["confidence"], c["balance"], c["duplicate"]) == ("soft", 0.3, "quota", True)
    assert (c["drop_rate"], c["drop_path_rate"], c["randaugment_n"], c["rounds"]) == (0.5, 0.2, 2, 2)
    assert c["teachers"] is None and c["transforms"] == []  # own network; the teacher sees clean images


def test_the_student_gets_dropout_and_stochastic_depth_without_new_parameters() -> None:
    torch.manual_seed(0)
    clean = create_model("mobilenetv2_100", 4)
    noisy = create_model("mobilenetv2_100", 4)
    noisy.load_state_dict(clean.state_dict())
    record: dict = {}
    noise = dict(drop_rate=0.5, drop_path_rate=0.2, record=record)
    module = _noisy_module(
        noisy, list("abcd"), None, inner=_soft_module, soft_targets=torch.empty(0, 4), **noise
    )
    assert isinstance(module, SoftTargetModule)  # the self-training module: it counts images seen
    blocks = stochastic_depth_blocks(noisy)
    assert len(blocks) == 17  # MobileNetV2's inverted-residual blocks
    assert record == {"drop_rate": 0.5, "drop_path_rate": 0.2, "stochastic_depth_blocks": 17}
    rates = [getattr(b.drop_path, "drop_prob", 0.0) for b in blocks]
    assert rates == pytest.approx([0.2 * i / 17 for i in range(17)])  # linear in depth, 0 at the first block
    (hook,) = noisy.head._forward_pre_hooks.values()
    assert isinstance(hook, InputDropout) and hook.p == 0.5
    assert is_noisy(noisy) and not is_noisy(clean)
    # no parameter or buffer was added: the student saves and reloads as the plain network
    assert noisy.state_dict().keys() == clean.state_dict().keys()
    x = torch.rand(4, 3, 32, 32)
    noisy.eval(), clean.eval()
    with torch.no_grad():
        assert torch.allclose(noisy(x), clean(x), atol=1e-6)  # eval mode is the clean network
    noisy.train()
    assert not torch.allclose(noisy(x), noisy(x))  # dropout and dropped blocks differ per pass


def test_the_student_trains_on_randaugmented_batches_and_validates_on_clean_ones(cells_dir: Path) -> None:
    source = open_source(cells_dir)
    manifest = make_split(source, n_labelled=4, seed=0)
    codes = [int(e[1]) for e in manifest.labelled]
    common = dict(source=source, manifest=manifest, image_size=32, batch_size=8, augment="standard")
    inner = functools.partial(CodedTrainDataModule, codes=codes)
    plain = inner(**common)
    noisy = _noisy_datamodule(inner=inner, n=2, m=10.0, cutout=0.0, **common)
    assert isinstance(noisy, CodedTrainDataModule) and noisy.codes == codes
    assert any(isinstance(op, BatchRandAugment) for op in noisy.augment)
    assert not any(isinstance(op, BatchRandAugment) for op in plain.augment)  # other methods unchanged
    images = (torch.rand(6, 3, 32, 32) * 255).to(torch.uint8)
    labels = torch.arange(6)
    clean = images.float() / 255
    noisy.trainer = types.SimpleNamespace(training=True)
    torch.manual_seed(0)
    x, y = noisy.on_after_batch_transfer((images.clone(), labels), 0)
    assert torch.equal(y, labels) and x.shape == clean.shape
    assert (x - clean).abs().amax(dim=(1, 2, 3)).min() > 0.01  # every image of the batch is changed
    noisy.trainer = types.SimpleNamespace(training=False)
    x, _ = noisy.on_after_batch_transfer((images.clone(), labels), 0)
    assert torch.equal(x, clean)


def test_rare_classes_are_duplicated_up_to_their_quota() -> None:
    probs = [[0.99, 0.005, 0.005], [0.98, 0.01, 0.01], [0.97, 0.02, 0.01], [0.96, 0.02, 0.02]]
    probs += [[0.95, 0.03, 0.02], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9], [0.1, 0.05, 0.85], [0.5, 0.3, 0.2]]
    pseudo = PseudoLabels([f"i{k}" for k in range(9)], torch.tensor(probs), [None] * 9, ["a", "b", "c"])
    method = get_method("noisy_student", confidence=0.8)
    _, kept, extra = method.select_pseudo(pseudo, torch.tensor([0.5, 0.25, 0.25]))
    # 8 confident images, quotas 4, 2, 2: a keeps its 4 most confident, b's one image twice
    assert kept == [0, 1, 2, 3, 5, 5, 6, 7]
    assert extra == {"quotas": {"a": 4, "b": 2, "c": 2}, "duplicated": 1, "pseudo_images_trained": 8}
    _, kept, extra = get_method("noisy_student", confidence=0.8, duplicate=False).select_pseudo(
        pseudo, torch.tensor([0.5, 0.25, 0.25])
    )
    assert kept == [0, 1, 2, 3, 5, 6, 7] and extra == {}


class _Recorder(torch.nn.Module):
    """A teacher that records its mode and the images it is given."""

    def __init__(self, inner: torch.nn.Module, calls: list) -> None:
        super().__init__()
        self.inner, self.calls = inner, calls

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((self.training, self.inner.training, x.detach().clone()))
        return self.inner(x)


def _cli(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "ssl", str(data), "--out", str(out), "--method", "noisy_student",
        "--model", "mobilenetv2_100", "--small-input", "--pretrained", "--image-size", "32",
        "--n-labelled", "10", "--max-steps", str(STEPS), "--head-steps", "2", "--no-early-stopping",
        "--batch-size", str(BATCH), "--no-progress", "--no-tensorboard",
        "--option", f"max_unlabelled={POOL}", "--option", "inference_batch_size=16", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def two_rounds(cells_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    """``semicompact ssl --method noisy_student`` with its default two rounds, every teacher recorded."""
    out = tmp_path_factory.mktemp("noisy") / "ns"
    loads: list[dict] = []
    real = st.load_teachers

    def recorded(dirs: list[Path]) -> list:
        calls: list = []
        loads.append({"dirs": [Path(d) for d in dirs], "calls": calls})
        return [(_Recorder(model, calls), size) for model, size in real(dirs)]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(st, "load_teachers", recorded)
        with pytest.raises(SystemExit) as done:
            cli_main(_cli(cells_dir, out))
    assert done.value.code in (0, None)
    return out, loads


def test_two_rounds_each_take_the_budget_and_the_last_is_charged_for_all(two_rounds) -> None:
    run, _ = two_rounds
    metrics = json.loads((run / "metrics.json").read_text())
    first = json.loads((run / "rounds" / "round-1" / "metrics.json").read_text())
    cost, cost1 = metrics["cost"], first["cost"]
    assert cost["optimizer_steps"] == cost1["optimizer_steps"] == STEPS
    # round 1 pays for the supervised teacher; round 2 for it and for round 1
    assert cost1["teacher_steps"] == STEPS and cost1["total_steps"] == 2 * STEPS
    assert cost["teacher_steps"] == 2 * STEPS and cost["total_steps"] == 3 * STEPS
    assert cost["earlier_rounds_steps"] == STEPS
    # and its wall time and labelled images: the teacher's and round 1's
    assert cost["teacher_wall_time_s"] == pytest.approx(cost1["teacher_wall_time_s"] + cost1["wall_time_s"])
    labelled = cost1["teacher_labelled_images_seen"] + cost1["labelled_images_seen"]
    assert cost["teacher_labelled_images_seen"] == labelled
    assert cost1["teacher_labelled_images_seen"] == STEPS * BATCH  # the supervised teacher: labels only
    (earlier,) = cost["rounds"]
    assert earlier["round"] == 1 and earlier["run_dir"] == str(run / "rounds" / "round-1")
    for key in (
        "optimizer_steps",
        "labelled_images_seen",
        "unlabelled_images_seen",
        "teacher_inference_images_seen",
    ):
        assert earlier[key] == cost1[key], key
    assert "rounds" not in cost1
    for c in (cost, cost1):
        # every step is a full batch of labelled + pseudo-labelled (repeats included) images
        assert c["labelled_images_seen"] + c["unlabelled_images_seen"] == STEPS * BATCH
        assert c["unlabelled_images_seen"] > 0
        assert c["teacher_inference_images_seen"] == POOL  # one clean view per pool image
        assert c["train_labels"] == 4 * 8 and c["label_budget"] == 4 * 10
    assert metrics["noise"] == {
        "randaugment": {"n": 2, "m": 10.0},
        "cutout": 0.0,
        "drop_rate": 0.5,
        "drop_path_rate": 0.2,
        "stochastic_depth_blocks": 17,
    }
    assert metrics["method"] == "noisy_student"


def test_the_teacher_is_the_students_own_supervised_network(two_rounds) -> None:
    run, loads = two_rounds
    options = json.loads((run / "method.json").read_text())["options"]
    assert options["teachers"] == ["mobilenetv2_100"] and options["labels"] == "soft"
    (teacher,) = loads[0]["dirs"]
    config = json.loads((teacher / "config.json").read_text())
    assert config["model"] == "mobilenetv2_100" and config["pretrained"] is True
    assert json.loads((teacher / "metrics.json").read_text()).get("method") is None  # plain supervised
    assert loads[1]["dirs"] == [run / "rounds" / "round-1"]  # round 1's student teaches round 2


def test_pseudo_labels_are_soft_balanced_and_written_per_round(two_rounds) -> None:
    run, _ = two_rounds
    for folder in (run / "rounds" / "round-1", run):
        summary = json.loads((folder / "pseudo_summary.json").read_text())
        assert summary["balance"] == "quota" and summary["threshold"] == 0.3 and summary["pool"] == POOL
        rows = list(csv.DictReader((folder / "pseudo_labels.csv").open()))
        confident = sum(float(r["confidence"]) >= 0.3 for r in rows)
        # 8 labels per class: a uniform prior, equal quotas (the paper's top-K per class)
        assert summary["quotas"] == dict.fromkeys(summary["selected_per_class"], int(confident / 4 + 0.5))
        trained = json.loads((folder / "train_entries.json").read_text())
        assert len(trained) == 4 * 8 + summary["pseudo_images_trained"]
        assert summary["pseudo_images_trained"] == summary["selected"] + summary["duplicated"]
        for cls, n in summary["selected_per_class"].items():
            assert n <= summary["quotas"][cls]


def test_the_teacher_labels_clean_images_in_eval_mode(two_rounds, cells_dir: Path) -> None:
    run, loads = two_rounds
    source = open_source(cells_dir)
    manifest = SplitManifest.load(run / "split.json")
    pool = subsample_pool(manifest.unlabelled, POOL, 0)
    dm = SemiCompactDataModule(source, manifest, image_size=32, batch_size=16)
    clean = torch.cat([images.float() / 255 for images, _ in dm.loader_for(pool)])
    assert len(loads) == 2
    for load in loads:
        assert load["calls"] and all(not a and not b for a, b, _ in load["calls"])  # eval mode only
        seen = torch.cat([x for _, _, x in load["calls"]])
        assert torch.equal(seen[-POOL:], clean)  # exactly the pool images, no augmentation


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("drop_rate=1.0", "option drop_rate must be a number in [0, 1), got '1.0'"),
        ("drop_path_rate=-0.1", "option drop_path_rate must be a number in [0, 1), got '-0.1'"),
        ("randaugment_n=0", "option randaugment_n must be an integer in 1..14, got '0'"),
        ("randaugment_m=11", "option randaugment_m must be a number in (0, 10], got '11'"),
        (
            "balance=align",
            "option duplicate=true fills the per-class quotas of balance=quota, but balance is 'align'; "
            "set balance=quota or duplicate=false",
        ),
        ("duplicate=maybe", "option duplicate must be true or false, got 'maybe'"),
        (
            "balance=true",
            "option duplicate=true fills the per-class quotas of balance=quota, but balance is 'True'; "
            "set balance=quota or duplicate=false",
        ),
    ],
)
def test_bad_options_give_one_exact_line(
    cells_dir: Path, tmp_path: Path, capsys, option: str, message: str
) -> None:
    out = tmp_path / "bad"
    line = cli_error(capsys, *_cli(cells_dir, out, "--option", option))
    assert line == f"error: --method noisy_student: {message}"
    assert not out.exists()


def test_a_run_stopped_after_its_first_round_resumes_to_the_same_result(
    two_rounds, cells_dir: Path, capsys
) -> None:
    """The process dies as the last round starts (round 1 finished): --resume reuses the teacher and
    round 1, and the run ends exactly where the uninterrupted one did."""
    run, _ = two_rounds
    cut = run.parent / "ns-cut"  # beside the run: the same teacher cache
    teachers = sorted((run.parent / "teachers").iterdir())
    real = st.fit

    def dies_in_the_last_round(config, *args, **kwargs):
        if Path(config.out) == cut:
            raise KeyboardInterrupt
        return real(config, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(st, "fit", dies_in_the_last_round)
        with pytest.raises((KeyboardInterrupt, SystemExit)):
            cli_main(_cli(cells_dir, cut))
    assert (cut / "rounds" / "round-1" / "metrics.json").is_file() and not (cut / "metrics.json").exists()
    code, _, err = run_cli(capsys, *_cli(cells_dir, cut, "--resume"))
    assert code == 0, err
    assert sorted((run.parent / "teachers").iterdir()) == teachers  # the teacher was not retrained
    whole = json.loads((run / "metrics.json").read_text())
    resumed = json.loads((cut / "metrics.json").read_text())
    assert resumed["test"]["confusion_matrix"] == whole["test"]["confusion_matrix"]
    assert resumed["pseudo_labels"]["selected"] == whole["pseudo_labels"]["selected"]
    assert resumed["cost"]["total_steps"] == whole["cost"]["total_steps"] == 3 * STEPS
    assert resumed["cost"]["rounds"][0]["optimizer_steps"] == STEPS


def test_one_round_with_hard_labels(two_rounds, cells_dir: Path, capsys) -> None:
    run, _ = two_rounds
    out = run.parent / "ns-hard"  # beside the run: its cached teacher
    code, _, err = run_cli(capsys, *_cli(cells_dir, out, "--option", "rounds=1", "--option", "labels=hard"))
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    cost = metrics["cost"]
    assert (
        cost["optimizer_steps"] == STEPS
        and cost["teacher_steps"] == STEPS
        and cost["total_steps"] == 2 * STEPS
    )
    assert "rounds" not in cost and not (out / "rounds").exists()
    assert cost["labelled_images_seen"] + cost["unlabelled_images_seen"] == STEPS * BATCH
    summary = metrics["pseudo_labels"]
    # round 1 of the two-round run had the same teacher: the same selection and repeats
    first = json.loads((run / "rounds" / "round-1" / "pseudo_summary.json").read_text())
    assert (summary["selected"], summary["duplicated"]) == (first["selected"], first["duplicated"])
    rows = {r["image"]: r["class"] for r in csv.DictReader((out / "pseudo_labels.csv").open())}
    classes = json.loads((out / "split.json").read_text())["classes"]
    trained = json.loads((out / "train_entries.json").read_text())[4 * 8 :]
    assert len(trained) == summary["pseudo_images_trained"]
    assert all(classes[label] == rows[ref] for ref, label in trained)  # hard labels: the argmax
    assert metrics["noise"]["drop_rate"] == 0.5
