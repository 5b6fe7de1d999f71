"""Several bench jobs on one machine: threads per process, a shared bench.json, outputs under runs/."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from typer.testing import CliRunner

from semicompact.bench.threads import ThreadPlan, count_bench_processes, plan_threads
from semicompact.io import write_json
from semicompact.methods.base import _METHODS, Method, register_method
from semicompact.training.config import TrainConfig
from semicompact.training.run import RunResult


class InstantMethod(Method):
    options: ClassVar[dict[str, Any]] = {}

    def run(self, train: TrainConfig, resume: bool = False) -> RunResult:
        out = Path(train.out)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", train.to_dict())
        metrics = {"test": {"f1": 0.5, "macro_f1": 0.5, "accuracy": 0.5}}
        write_json(out / "metrics.json", metrics)
        return RunResult(out, metrics)


if "instant_jobs" not in _METHODS:
    register_method("instant_jobs")(InstantMethod)


def test_threads_share_the_cores_among_processes() -> None:
    assert plan_threads(cores=2, jobs=1).threads == 2
    two = plan_threads(cores=2, jobs=2)
    assert (two.threads, two.oversubscribed, two.warning()) == (1, False, None)
    assert two.describe() == "1 torch thread(s) per run (2 core(s) / --jobs 2)"
    assert plan_threads(cores=8, jobs=3).threads == 2
    assert plan_threads(cores=2, jobs=5).threads == 1  # never 0
    forced = plan_threads(threads=2, cores=2, jobs=2)
    assert forced.oversubscribed
    assert forced.warning() == (
        "2 bench process(es) x 2 thread(s) > 2 core(s): oversubscribed, every run slows down; "
        "give each process --threads 1"
    )


def test_bench_processes_are_counted_from_proc(tmp_path: Path) -> None:
    def proc(pid: int, *argv: str) -> None:
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "cmdline").write_bytes("\0".join(argv).encode() + b"\0")

    proc(11, "/x/.venv/bin/python", "/x/.venv/bin/semicompact", "bench", "r.yaml", "--shard", "0/2")
    proc(12, "/usr/bin/python3", "-m", "semicompact.cli.main", "bench", "r.yaml")
    proc(13, "/x/.venv/bin/semicompact", "train", "data", "--out", "bench")  # not a bench job
    proc(14, "/usr/bin/vim", "bench.yaml")
    (tmp_path / "self").mkdir()
    # two bench jobs found, plus this process (not among them)
    assert count_bench_processes(tmp_path) == 3
    assert plan_threads(cores=2, jobs=3) == ThreadPlan(1, 2, 3, "--jobs")


_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from semicompact.bench.grid import write_bench_file

    class Spec:
        def __init__(self, id): self.id = id

    class Recipe:
        def __init__(self, ids): self.ids = ids
        def runs(self): return [Spec(i) for i in self.ids]
        def to_dict(self): return {"name": "r"}

    out, tag = Path(sys.argv[1]), sys.argv[2]
    for k in range(60):
        write_bench_file(out, Recipe([f"{tag}-{k}"]))
    """
)


def test_two_processes_updating_bench_json_keep_every_id(tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    out = tmp_path / "bench"
    procs = [subprocess.Popen([sys.executable, str(script), str(out), tag]) for tag in ("a", "b")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    ids = json.loads((out / "bench.json").read_text())["runs"]
    assert sorted(ids) == sorted(f"{t}-{k}" for t in ("a", "b") for k in range(60))
    assert json.loads((out / "bench.json").read_text())["n_runs"] == 120


def test_bench_without_out_writes_under_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from semicompact.cli.main import app

    (tmp_path / "data").mkdir()
    recipe = tmp_path / "recipes" / "mini.yaml"
    recipe.parent.mkdir()
    recipe.write_text(
        yaml.safe_dump(
            {
                "name": "mini",
                "datasets": [{"name": "d", "path": "../data"}],
                "models": ["resnet18"],
                "methods": ["instant_jobs"],
                "seeds": [0],
                "epochs": 1,
                "profile": False,
            }
        )
    )
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["bench", str(recipe), "--no-report", "--jobs", "2"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "runs" / "bench" / "mini" / "bench.json").is_file()
    assert not (tmp_path / "bench").exists() and not (tmp_path / "recipes" / "mini").exists()
    assert "torch thread(s) per run" in result.output and "/ --jobs 2)" in result.output
