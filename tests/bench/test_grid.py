"""The grid: skip finished runs, resume unfinished ones, record failures and go on, shards, CLI.

A fake method (registered here, instant, deterministic) stands in for training; the real training
path is exercised by test_grid_kill.py.
"""

from __future__ import annotations

import fcntl
import json
from pathlib import Path
from typing import Any, ClassVar

import lightning
import pytest
import timm
import torch
import yaml
from rich.console import Console
from typer.testing import CliRunner

from semicompact.bench.grid import RESULT, RUN_LOCK, run_grid
from semicompact.bench.recipe import load_recipe
from semicompact.errors import DataError
from semicompact.io import write_json
from semicompact.methods.base import _METHODS, Method, register_method
from semicompact.report.collect import collect
from semicompact.training.config import TrainConfig
from semicompact.training.run import RunResult
from semicompact.training.rundir import claim

CALLS: list[tuple[str, bool]] = []


class FakeMethod(Method):
    """Writes config.json then metrics.json; the score depends on seed and model only."""

    options: ClassVar[dict[str, Any]] = {"fail_seed": -1, "bonus": 0.0, "claim": False}

    def run(self, train: TrainConfig, resume: bool = False) -> RunResult:
        out = Path(train.out)
        CALLS.append((out.name, resume))
        out.mkdir(parents=True, exist_ok=True)
        if self.config["claim"]:
            claim(out)  # as a real run does; only a finished run releases it
        write_json(out / "config.json", train.to_dict())
        if train.seed == self.config["fail_seed"]:
            raise DataError(f"seed {train.seed} is cursed")
        score = 0.5 + 0.1 * train.seed + 0.05 * len(train.model) % 3 + self.config["bonus"]
        metrics = {"test": {"f1": score, "macro_f1": score, "accuracy": score}, "train_time_per_epoch_s": 0.1}
        write_json(out / "metrics.json", metrics)
        return RunResult(out, metrics)


if "fake_bench" not in _METHODS:
    register_method("fake_bench")(FakeMethod)


def recipe_file(tmp_path: Path, **changes: Any) -> Path:
    (tmp_path / "data").mkdir(exist_ok=True)
    raw = {
        "name": "fake",
        "datasets": [{"name": "d", "path": "data"}],
        "models": ["resnet18", "mobilenetv2_100"],
        "methods": ["fake_bench", {"name": "fake_bench", "label": "fake_plus", "options": {"bonus": 0.1}}],
        "seeds": [0, 1],
        "epochs": 1,
        "profile": False,
        **changes,
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def quiet() -> Console:
    return Console(file=open("/dev/null", "w"), width=200)


def test_runs_skips_and_resumes(tmp_path: Path) -> None:
    recipe = load_recipe(recipe_file(tmp_path))
    out = tmp_path / "out"
    CALLS.clear()
    # jobs=1: the thread count must not follow other bench processes that run on this machine meanwhile
    summary = run_grid(recipe, out, console=quiet(), jobs=1)
    assert (summary.total, summary.done, summary.skipped, summary.failed) == (8, 8, 0, [])
    assert len(CALLS) == 8 and not any(resume for _, resume in CALLS)
    result = json.loads((out / "runs" / "d__resnet18__fake_plus__s1" / RESULT).read_text())
    assert result["status"] == "done" and result["f1"] == pytest.approx(0.5 + 0.1 + 0.05 * 8 % 3 + 0.1)
    assert json.loads((out / "bench.json").read_text())["n_runs"] == 8
    # what the numbers depend on besides the recipe: the runs of a study must share one environment
    env = result["environment"]
    assert env["packages"]["torch"] == torch.__version__.split("+")[0]
    # the thread count of the run (read at each run: the grid sets it from the cores and jobs)
    assert env["packages"]["timm"] == timm.__version__ and env["torch_threads"] == torch.get_num_threads()
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()

    CALLS.clear()
    again = run_grid(recipe, out, console=quiet())
    assert (again.done, again.skipped) == (0, 8) and CALLS == []

    # an unfinished run (config.json written, no result) is resumed, the others are left alone
    victim = out / "runs" / "d__mobilenetv2_100__fake_bench__s0"
    (victim / RESULT).unlink()
    (victim / "metrics.json").unlink()
    CALLS.clear()
    third = run_grid(recipe, out, console=quiet())
    assert (third.done, third.skipped) == (1, 7)
    assert [(victim.name, True)] == CALLS

    # trained but killed before the result file: not trained again
    (victim / RESULT).unlink()
    CALLS.clear()
    fourth = run_grid(recipe, out, console=quiet())
    assert (fourth.done, fourth.skipped, CALLS) == (1, 7, [])
    adopted = json.loads((victim / RESULT).read_text())
    # its wall time is unknown (the seconds of this pass would understate it in the cost tables)
    assert adopted["trained_earlier"] is True and adopted["elapsed_s"] is None
    assert result["trained_earlier"] is False and result["elapsed_s"] > 0


def test_failure_is_recorded_and_the_grid_goes_on(tmp_path: Path) -> None:
    path = recipe_file(tmp_path, methods=[{"name": "fake_bench", "options": {"fail_seed": 1}}])
    out = tmp_path / "out"
    summary = run_grid(load_recipe(path), out, console=quiet())
    assert summary.done == 2 and sorted(summary.failed) == [
        "d__mobilenetv2_100__fake_bench__s1",
        "d__resnet18__fake_bench__s1",
    ]
    record = json.loads((out / "runs" / "d__resnet18__fake_bench__s1" / RESULT).read_text())
    assert record["status"] == "failed" and record["error_type"] == "DataError"
    assert record["error"] == "seed 1 is cursed"
    assert record["environment"]["packages"]["lightning"] == lightning.__version__
    failures = json.loads((out / "failures-0of1.json").read_text())
    assert [f["id"] for f in failures] == summary.failed
    # a re-run retries the failed runs only (resuming their folders), unless told not to
    CALLS.clear()
    retry = run_grid(load_recipe(path), out, console=quiet())
    assert sorted(CALLS) == [(f, True) for f in sorted(summary.failed)] and retry.skipped == 2
    CALLS.clear()
    no_retry = run_grid(load_recipe(path), out, console=quiet(), retry_failed=False)
    assert CALLS == [] and len(no_retry.failed) == 2


def test_a_failed_run_leaves_its_folder_unlocked_for_another_bench_process(tmp_path: Path) -> None:
    """A failed run never reaches the run's own release; the grid gives its folder lock back, or a
    second bench process on the same folder (sharing its queue) could not retry it."""
    path = recipe_file(tmp_path, methods=[{"name": "fake_bench", "options": {"fail_seed": 1, "claim": True}}])
    out = tmp_path / "out"
    run_grid(load_recipe(path), out, console=quiet())
    with open(out / "runs" / "d__resnet18__fake_bench__s1" / ".lock", "a+") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError if still held


def test_recipe_slices_into_one_folder_add_up(tmp_path: Path) -> None:
    """One seed at a time into the same folder: bench.json (hence the report) lists every slice."""
    out = tmp_path / "out"
    run_grid(load_recipe(recipe_file(tmp_path, seeds=[0])), out, console=quiet())
    run_grid(load_recipe(recipe_file(tmp_path, seeds=[1])), out, console=quiet())
    bench = json.loads((out / "bench.json").read_text())
    assert bench["n_runs"] == 8 and bench["recipe"]["seeds"] == [1]
    assert sorted(r["seed"] for r in collect(out).done) == [0] * 4 + [1] * 4


def test_changed_recipe_never_reuses_a_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_grid(load_recipe(recipe_file(tmp_path, seeds=[0])), out, console=quiet())
    changed = load_recipe(recipe_file(tmp_path, seeds=[0], epochs=2))
    summary = run_grid(changed, out, console=quiet())
    assert summary.done == 0 and len(summary.failed) == 4
    record = json.loads((out / "runs" / "d__resnet18__fake_bench__s0" / RESULT).read_text())
    assert "made with other settings (the recipe changed)" in record["error"]


def test_shards_together_do_the_whole_grid(tmp_path: Path) -> None:
    recipe = load_recipe(recipe_file(tmp_path))
    out = tmp_path / "out"
    CALLS.clear()
    totals = [run_grid(recipe, out, shard=(i, 3), console=quiet()).done for i in range(3)]
    assert totals == [3, 3, 2]
    assert sorted(name for name, _ in CALLS) == sorted(r.id for r in recipe.runs())
    assert len({name for name, _ in CALLS}) == 8
    assert {p.name for p in out.glob("failures-*")} == {f"failures-{i}of3.json" for i in range(3)}


def test_processes_share_one_queue(tmp_path: Path) -> None:
    """A cell another bench process holds is left to it, not failed and not run twice; later it runs."""
    import fcntl

    recipe = load_recipe(recipe_file(tmp_path))
    out = tmp_path / "out"
    busy = "d__resnet18__fake_plus__s1"
    (out / "runs" / busy).mkdir(parents=True)
    with open(out / "runs" / busy / RUN_LOCK, "a+b") as other:  # another process's lock
        fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        CALLS.clear()
        summary = run_grid(recipe, out, console=quiet())
    assert summary.elsewhere == [busy] and summary.done == 7 and summary.failed == []
    assert busy not in {name for name, _ in CALLS} and not (out / "runs" / busy / RESULT).exists()
    CALLS.clear()
    again = run_grid(recipe, out, console=quiet())
    assert (again.done, again.skipped, again.elsewhere) == (1, 7, []) and [n for n, _ in CALLS] == [busy]


def test_cli_bench_dry_run_progress_and_report(tmp_path: Path) -> None:
    from semicompact.cli.main import app

    path = recipe_file(tmp_path, seeds=[0, 1, 2])
    out = tmp_path / "out"
    runner = CliRunner()
    dry = runner.invoke(app, ["bench", str(path), "--out", str(out), "--dry-run", "--shard", "1/2"])
    assert dry.exit_code == 0, dry.output
    assert "6 run(s) in shard 1/2 of 12" in dry.output and "to run" in dry.output
    first = runner.invoke(app, ["bench", str(path), "--out", str(out), "--shard", "0/2"])
    assert first.exit_code == 0, first.output
    assert "[6/6]" in first.output and "remaining 0, ETA 0:00:00" in first.output
    assert "remaining 5, ETA" in first.output
    assert "the grid is not complete yet" in first.output
    second = runner.invoke(app, ["bench", str(path), "--out", str(out), "--shard", "1/2"])
    assert second.exit_code == 0, second.output
    assert "report:" in second.output and (out / "report" / "report.html").is_file()


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from semicompact.cli.main import main

    path = recipe_file(tmp_path)
    for argv, message in (
        (["bench", str(path), "--shard", "2/2"], "--shard must look like I/N with 0 <= I < N (e.g. 0/4)"),
        (["bench", str(tmp_path / "none.yaml")], "recipe '"),
        (["report", str(tmp_path)], "is neither a benchmark folder (bench.json) nor a run folder"),
    ):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert "error:" in err and message in " ".join(err.split()) and "Traceback" not in err


def test_cost_estimate_grows_with_the_grid(tmp_path: Path) -> None:
    from semicompact.bench.cost import estimate

    out = tmp_path / "out"
    run_grid(load_recipe(recipe_file(tmp_path)), out, console=quiet())
    measured = sum(json.loads(p.read_text())["elapsed_s"] for p in out.glob(f"runs/*/{RESULT}"))
    same = estimate(load_recipe(recipe_file(tmp_path)), out, shards=2)
    assert same.runs == 8 and same.total_s == pytest.approx(measured)
    assert sum(same.per_shard_s) == pytest.approx(measured) and same.basis["model+method"] == 8
    bigger = estimate(load_recipe(recipe_file(tmp_path, seeds=[0, 1, 2, 3], epochs=3)), out)
    assert bigger.runs == 16 and bigger.total_s == pytest.approx(measured * 2 * 5 / 3)  # (3+2)/(1+2) epochs
    other = estimate(load_recipe(recipe_file(tmp_path, models=["resnet50"])), out)
    assert other.basis == {"model+method": 0, "method": 4, "all": 0}


def test_measure_efficiency(tmp_path: Path) -> None:
    from semicompact.artifacts import ModelCard, save_model
    from semicompact.bench.efficiency import measure_efficiency
    from semicompact.models import create_model

    model = create_model("resnet18", num_classes=3, small_input=True)
    card = ModelCard(
        model="resnet18",
        classes=["a", "b", "c"],
        image_size=32,
        small_input=True,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
    )
    save_model(tmp_path / "best.safetensors", model, card)
    result = measure_efficiency(tmp_path, repeats=3, warmup=1)
    assert result["size_mb"] == pytest.approx((tmp_path / "best.safetensors").stat().st_size / 1e6)
    assert result["params_m"] == pytest.approx(sum(p.numel() for p in model.parameters()) / 1e6)
    assert 11.0 < result["params_m"] < 11.4  # ResNet-18 with a 3-class head
    assert result["latency_ms"] > 0 and result["image_size"] == 32
