"""ssl_kd: a FixMatch teacher on the same split and budget, cached, charged, distilled into the student;
and data distillation choosing its test-time views on the validation images (``transforms: auto``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from _shared import clone_teacher_record, method_config, run_cli

from semicompact.data.tta import build_tta
from semicompact.errors import ConfigError, SemicompactError
from semicompact.methods import run_method
from semicompact.methods.views import choose_views, view_predictions
from semicompact.training import TrainConfig

STEPS = 6
BATCH = 8
BUDGET = dict(n_labelled=10, max_steps=STEPS, head_steps=2, early_stopping=False, batch_size=BATCH)
OPTIONS = {"teacher_options": {"mu": 1}, "max_unlabelled": 32}


def _config(data: Path, out: Path, **kw) -> TrainConfig:
    return method_config(data, out, **{**BUDGET, **kw})


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ssl_teachers")


@pytest.fixture(scope="module")
def first(cells_dir: Path, cache: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("ssl_kd") / "a"
    return run_method("ssl_kd", _config(cells_dir, out), {**OPTIONS, "teacher_cache": str(cache)})


def _teacher_runs(cache: Path) -> list[Path]:
    return sorted(d for d in cache.iterdir() if d.is_dir())


def test_the_teacher_is_trained_by_fixmatch_on_the_same_split_and_budget(first, cache: Path) -> None:
    (teacher,) = _teacher_runs(cache)
    assert teacher.name.startswith("fixmatch-mobilenetv2_100-")
    method = json.loads((teacher / "method.json").read_text())
    assert method["method"] == "fixmatch" and method["options"]["mu"] == 1
    assert method["options"]["max_unlabelled"] == 32  # the student's pool
    t_metrics = json.loads((teacher / "metrics.json").read_text())
    assert t_metrics["cost"]["optimizer_steps"] == STEPS  # the student's budget
    assert t_metrics["cost"]["unlabelled_images_seen"] == STEPS * 2 * BATCH  # FixMatch: weak + strong
    assert json.loads((teacher / "split.json").read_text()) == json.loads(
        (first.run_dir / "split.json").read_text()
    )
    assert first.metrics["teacher"]["run_dir"] == str(teacher)
    assert first.metrics["teacher"]["test_macro_f1"] == t_metrics["test"]["macro_f1"]


def test_the_student_is_charged_the_teachers_steps_and_time(first, cache: Path) -> None:
    (teacher,) = _teacher_runs(cache)
    t_cost = json.loads((teacher / "metrics.json").read_text())["cost"]
    cost = first.metrics["cost"]
    assert cost["optimizer_steps"] == STEPS
    assert cost["teacher_runs"] == 1
    assert cost["teacher_steps"] == t_cost["total_steps"] == STEPS
    assert cost["teacher_wall_time_s"] == t_cost["wall_time_s"] > 0
    assert cost["total_steps"] == 2 * STEPS
    # KD: the teacher sees every labelled and every (weak-view) unlabelled image the student sees
    assert cost["labelled_images_seen"] == STEPS * BATCH
    assert cost["unlabelled_images_seen"] == STEPS * BATCH  # mu 1
    assert cost["teacher_inference_images_seen"] == 2 * STEPS * BATCH


def test_a_second_run_reuses_the_cached_teacher(
    first, cells_dir: Path, cache: Path, tmp_path: Path, capsys
) -> None:
    (teacher,) = _teacher_runs(cache)
    stamp = (teacher / "metrics.json").stat().st_mtime_ns
    capsys.readouterr()
    code, _, err = run_cli(
        capsys,
        "ssl", str(cells_dir), "--method", "ssl_kd", "--out", str(tmp_path / "cli"),
        "--model", "mobilenetv2_100", "--small-input", "--pretrained", "--image-size", "32",
        "--n-labelled", "10", "--max-steps", str(STEPS), "--head-steps", "2", "--no-early-stopping",
        "--batch-size", str(BATCH), "--epochs", "2", "--head-epochs", "1",
        "--no-progress", "--no-tensorboard",
        "--option", f"teacher_cache={cache}", "--option", "teacher_options={mu: 1}",
        "--option", "max_unlabelled=32", "--option", "temperature=2",
    )  # fmt: skip
    assert code == 0, err
    assert "reusing" in err and "training in" not in err
    assert _teacher_runs(cache) == [teacher]
    assert (teacher / "metrics.json").stat().st_mtime_ns == stamp  # not retrained
    metrics = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert metrics["method"] == "ssl_kd" and metrics["options"]["temperature"] == 2
    assert metrics["cost"]["teacher_steps"] == STEPS
    assert metrics["teacher"]["run_dir"] == str(teacher)


def test_a_cached_ssl_teacher_without_its_weights_is_trained_again(
    first, cells_dir: Path, cache: Path, tmp_path: Path, capsys
) -> None:
    (teacher,) = [t for t in _teacher_runs(cache) if t.name.startswith("fixmatch-")]
    clone = clone_teacher_record(teacher, tmp_path / "clone")
    capsys.readouterr()
    run_method("ssl_kd", _config(cells_dir, tmp_path / "s"), {**OPTIONS, "teacher_cache": str(clone.parent)})
    err = " ".join(capsys.readouterr().err.split())
    assert "has its record but not its weights; training it again" in err
    assert (clone / "best.safetensors").is_file()


def test_another_teacher_method_gets_its_own_cache_entry(
    first, cells_dir: Path, cache: Path, tmp_path: Path
) -> None:
    result = run_method(
        "ssl_kd",
        _config(cells_dir, tmp_path / "sup"),
        {"teacher_method": "supervised", "teacher_cache": str(cache), "max_unlabelled": 32, "alpha": 1.0},
    )
    names = [d.name.split("-")[0] for d in _teacher_runs(cache)]
    assert sorted(names) == ["fixmatch", "supervised"]
    assert result.metrics["teacher"]["method"] == "supervised"
    assert result.metrics["cost"]["teacher_steps"] == STEPS


def test_an_interrupted_teacher_is_resumed_not_restarted(
    first, cells_dir: Path, cache: Path, tmp_path: Path
) -> None:
    """A teacher folder with its checkpoint but no metrics.json (killed while evaluating) is
    resumed from the checkpoint: no step is taken twice."""
    (teacher,) = [d for d in _teacher_runs(cache) if d.name.startswith("fixmatch-")]
    before = json.loads((teacher / "metrics.json").read_text())["cost"]
    (teacher / "metrics.json").unlink()
    result = run_method(
        "ssl_kd", _config(cells_dir, tmp_path / "b"), {**OPTIONS, "teacher_cache": str(cache)}
    )
    assert result.metrics["teacher"]["run_dir"] == str(teacher)
    after = json.loads((teacher / "metrics.json").read_text())["cost"]
    assert after["optimizer_steps"] == before["optimizer_steps"] == STEPS
    assert after["unlabelled_images_seen"] == before["unlabelled_images_seen"]  # no step repeated
    assert result.metrics["cost"]["teacher_steps"] == STEPS
    assert (teacher / "logs" / "resume-1").is_dir()


def test_supervised_teachers_join_the_ensemble_and_are_shared_with_kd(
    first, cells_dir: Path, cache: Path, tmp_path: Path
) -> None:
    """``supervised_teachers``: the cached FixMatch teacher is reused, one supervised teacher is
    trained (once) and charged, and ``kd`` with the same network finds it in the cache."""
    (fixmatch,) = [d for d in _teacher_runs(cache) if d.name.startswith("fixmatch-")]
    own = tmp_path / "teachers"
    shutil.copytree(fixmatch, own / fixmatch.name)
    options = {**OPTIONS, "teacher_cache": str(own), "supervised_teachers": ["mobilenetv2_100"]}
    result = run_method("ssl_kd", _config(cells_dir, tmp_path / "e"), options)
    runs = _teacher_runs(own)
    (supervised,) = [d for d in runs if d.name.startswith("mobilenetv2_100-")]
    assert len(runs) == 2
    assert result.metrics["supervised_teachers"] == [str(supervised)]
    cost = result.metrics["cost"]
    assert cost["teacher_runs"] == 2 and cost["teacher_steps"] == 2 * STEPS
    # the soft targets come from both teachers on every labelled and unlabelled image
    assert cost["teacher_inference_images_seen"] == 2 * 2 * STEPS * BATCH
    kd = run_method(
        "kd",
        _config(cells_dir, tmp_path / "kd"),
        {"teachers": ["mobilenetv2_100"], "teacher_cache": str(own), "max_unlabelled": 32},
    )
    assert _teacher_runs(own) == runs  # the same cached supervised teacher, not a second one
    assert kd.metrics["cost"]["teacher_steps"] == STEPS


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"supervised_teachers": ["resnet5o"]}, "unknown model 'resnet5o'; did you mean resnet50"),
        ({"teacher_method": "fixmach"}, "unknown --method 'fixmach'; available:"),
        (
            {"teacher_method": "ssl_kd"},
            "--method ssl_kd: option teacher_method cannot be ssl_kd itself; use a semi-supervised "
            "method such as fixmatch or mixmatch",
        ),
        (
            {"teacher_options": {"treshold": 0.9}},
            "--method ssl_kd: teacher_options: --method fixmatch: unknown option(s) treshold; valid:",
        ),
        ({"teacher_options": "mu=2"}, "--method ssl_kd: option teacher_options must be a mapping"),
        ({"teacher": "resnet5o"}, "unknown model 'resnet5o'; did you mean resnet50"),
        ({"unlabelled_view": "strong"}, "option unlabelled_view must be one of weak, none, got 'strong'"),
        ({"teacher_weights": "/nope.pth"}, "teacher_weights file '/nope.pth' does not exist"),
    ],
)
def test_bad_options_fail_before_the_run_folder(cells_dir: Path, tmp_path: Path, options, message) -> None:
    with pytest.raises(SemicompactError) as info:  # ConfigError, or ModelError for the network name
        run_method("ssl_kd", _config(cells_dir, tmp_path / "x"), options)
    assert message in str(info.value)
    assert not (tmp_path / "x").exists()


class TopHeavy(torch.nn.Module):
    """Class 0 when the top half is brighter than the bottom half, else class 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.shape[2] // 2
        d = x[:, :, :h].mean(dim=(1, 2, 3)) - x[:, :, h:].mean(dim=(1, 2, 3))
        return torch.stack([d, -d], dim=1) * 10


def test_auto_views_drop_a_view_that_changes_the_label() -> None:
    x = torch.zeros(6, 3, 16, 16)
    x[:3, :, :8] = 0.9  # bright top: class 0
    x[3:, :, 8:] = 0.9  # bright bottom: class 1
    x[:, :, :, :4] += 0.05  # and a left-right asymmetry the classes do not depend on
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    candidates = build_tta(["hflip", "vflip", "gamma", "blur"])
    preds, targets = view_predictions(TopHeavy(), [(x, y)], candidates)
    assert preds.shape == (5, 6)
    kept, record = choose_views([preds], targets, candidates)
    assert [t.name for t in kept] == ["hflip", "gamma", "blur"]
    assert record["identity_accuracy"] == 1.0 and record["val_images"] == 6
    assert record["chosen"] == ["hflip", "gamma", "blur"]
    vflip = record["views"][1]
    assert vflip == {"view": "vflip", "accuracy": 0.0, "agreement": 0.0, "kept": False}
    with pytest.raises(ConfigError, match="scores the views on the labelled validation images"):
        choose_views([preds[:, :0]], targets[:0], candidates)


def test_data_distillation_chooses_its_views_on_validation(cells_dir: Path, tmp_path: Path) -> None:
    result = run_method(
        "data_distillation",
        _config(cells_dir, tmp_path / "dd", invariances="hflip"),
        {
            "teachers": "mobilenetv2_100",
            "teacher_cache": str(tmp_path / "teachers"),
            "transforms": "auto",
            "max_unlabelled": 16,
            "inference_batch_size": 16,
            "confidence": 0.0,
        },
    )
    summary = json.loads((result.run_dir / "pseudo_summary.json").read_text())
    choice = summary["view_selection"]
    # vflip and hvflip are not declared: never candidates; the other eight are scored
    assert [v["view"] for v in choice["views"]] == [
        "hflip", "blur", "gamma", "gaussian_blur", "median_blur", "bilateral", "equalize", "filter2d"
    ]  # fmt: skip
    assert choice["val_images"] == 8
    assert choice["chosen"] == [
        v["view"] for v in choice["views"] if v["accuracy"] >= choice["identity_accuracy"]
    ]
    assert summary["transforms"] == choice["chosen"] == result.metrics["pseudo_labels"]["transforms"]
    assert result.metrics["pseudo_labels"]["view_selection"] == choice
    views = len(choice["chosen"]) or 1
    assert result.metrics["cost"]["teacher_inference_images_seen"] == 16 * views + 8 * 9


def test_a_teacher_weights_file_reaches_the_teacher_config() -> None:
    """teacher_weights used to crash with a TypeError (weights given twice to dataclasses.replace)."""
    from semicompact.methods.teachers import teacher_config

    student = TrainConfig(data="d", weights="student.pth")
    config = teacher_config(student, "resnet18", Path("split.json"), weights="t.pth", pretrained=False)
    assert (config.model, config.weights, config.pretrained) == ("resnet18", "t.pth", False)
    assert teacher_config(student, "resnet18", Path("split.json")).weights is None


def test_ssl_kd_teacher_from_a_local_weights_file(cells_dir: Path, tmp_path: Path) -> None:
    from _shared import require_shared

    weights = require_shared("weights", "mobilenet_v2-b0353104.pth")
    result = run_method(
        "ssl_kd",
        _config(cells_dir, tmp_path / "w", pretrained=False, max_steps=4),
        {**OPTIONS, "teacher_weights": str(weights), "teacher_cache": str(tmp_path / "t")},
    )
    teacher = Path(result.metrics["teacher"]["run_dir"])
    config = json.loads((teacher / "config.json").read_text())
    assert (config["model"], config["weights"], config["pretrained"]) == (
        "mobilenetv2_100",
        str(weights),
        False,
    )
    assert result.metrics["cost"]["teacher_steps"] == 4
