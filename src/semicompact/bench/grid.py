"""Run a recipe's grid: skip finished runs, resume unfinished ones, record failures and go on.

Layout of a benchmark folder::

    OUT/bench.json                   the latest resolved recipe and the run ids of every pass so far
    OUT/runs/<id>/                   the method's run folder (config.json, metrics.json, ...)
    OUT/runs/<id>/bench_spec.json    what the grid asked for (a changed recipe never reuses a folder)
    OUT/runs/<id>/bench_result.json  status done/failed, wall time, error; written atomically last
    OUT/runs/<id>/efficiency.json    size, parameters and CPU latency of the trained model
    OUT/failures-<I>of<N>.json       the failures of one shard's last pass

A run counts as finished only when its ``bench_result.json`` says ``done``; anything else is started
again with ``resume=True`` when its folder holds a run, so ``kill -9`` at any moment loses at most
the epochs since the last checkpoint. Shards only ever write their own runs' folders.
"""

from __future__ import annotations

import contextlib
import json
import platform
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Console

from ..errors import ConfigError
from ..io import write_json
from ..training.rundir import release_under
from .environment import environment
from .recipe import Recipe, RunSpec, shard_runs
from .threads import ThreadPlan, plan_threads

RESULT = "bench_result.json"
SPEC = "bench_spec.json"
#: held while a bench process runs a cell, so that several processes can share one queue
RUN_LOCK = ".bench-run.lock"


@dataclass
class GridSummary:
    total: int  # runs in this shard
    skipped: int = 0
    done: int = 0
    failed: list[str] = field(default_factory=list)
    elsewhere: list[str] = field(default_factory=list)  # run by another process at the time
    elapsed_s: float = 0.0


def run_dir(out: Path, spec: RunSpec) -> Path:
    return out / "runs" / spec.id


def read_result(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / RESULT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_finished(folder: Path, spec: RunSpec) -> bool:
    result = read_result(folder)
    return bool(result and result.get("status") == "done" and result.get("fingerprint") == spec.fingerprint())


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _check_spec(folder: Path, spec: RunSpec) -> None:
    stored = folder / SPEC
    if stored.is_file():
        old = json.loads(stored.read_text(encoding="utf-8")).get("fingerprint")
        if old != spec.fingerprint():
            raise ConfigError(
                f"'{folder}' holds run {spec.id} made with other settings (the recipe changed); "
                "delete that folder to redo it, or give the changed entry another label"
            )


def execute(spec: RunSpec, folder: Path, recipe: Recipe) -> dict[str, Any]:
    """Run (or resume) one cell; returns its metrics. Raises on failure."""
    from ..methods import run_method
    from ..training.config import TrainConfig

    _check_spec(folder, spec)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / SPEC, spec.to_dict())
    train = TrainConfig.from_dict({**spec.train, "out": str(folder)})
    metrics = _read_json(folder / "metrics.json")
    if "test" not in metrics:  # metrics.json is a method's last write: present means trained
        # a method writes method.json (semi-supervised) or config.json (supervised) when it starts
        resume = (folder / "config.json").is_file() or (folder / "method.json").is_file()
        result = run_method(spec.method_name, train, spec.method_options, resume=resume)
        metrics = result.metrics or _read_json(folder / "metrics.json")
    if recipe.profile:
        from .efficiency import measure_efficiency

        try:
            efficiency = measure_efficiency(folder)
        except Exception as err:  # a measurement problem never fails a trained run
            efficiency = {"error": f"{type(err).__name__}: {err}"}
        write_json(folder / "efficiency.json", efficiency)
    if recipe.compress:
        from .steps import run_compress_steps

        run_compress_steps(folder, recipe.compress)
    return metrics


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _fmt(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def write_bench_file(out: Path, recipe: Recipe) -> None:
    """``bench.json``: the recipe of the latest pass and every run id any pass asked for.

    Recipes that slice one study (one seed, one model at a time) into the same folder add up, so the
    report covers all of them. Processes starting at once (two recipes, or shards, on one folder)
    take an exclusive lock, re-read the file under it and merge, so no run id is ever lost.
    """
    with _locked(out / ".bench.json.lock"):
        earlier = _read_json(out / "bench.json").get("runs")
        ids = list(earlier) if isinstance(earlier, list) else []
        known = set(ids)
        ids += [r.id for r in recipe.runs() if r.id not in known]
        write_json(out / "bench.json", {"recipe": recipe.to_dict(), "runs": ids, "n_runs": len(ids)})


def _try_lock(path: Path) -> Any:
    """The open file holding an exclusive lock on ``path``, or None when another process holds it.

    Closing the file (or the process ending, even by ``kill -9``) gives the lock back.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+b")  # noqa: SIM115 (held open while the run lives)
    try:
        import fcntl
    except ImportError:  # Windows: one process per folder is the user's business
        return handle
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (POSIX ``fcntl``; elsewhere no lock)."""
    try:
        import fcntl
    except ImportError:  # Windows: one process per folder is the user's business
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _set_threads(
    threads: int | None, jobs: int | None, previous: ThreadPlan | None, console: Console, label: str
) -> ThreadPlan:
    """Share the cores among the bench processes now running; say so when the share changes."""
    import torch

    plan = plan_threads(threads, jobs)
    if previous is None or (plan.threads, plan.jobs) != (previous.threads, previous.jobs):
        console.print(f"{label}{plan.describe()}", highlight=False, soft_wrap=True)
        if plan.warning():
            console.print(f"[yellow]warning: {plan.warning()}[/]", highlight=False, soft_wrap=True)
    torch.set_num_threads(plan.threads)
    return plan


def run_grid(
    recipe: Recipe,
    out: Path,
    shard: tuple[int, int] = (0, 1),
    console: Console | None = None,
    retry_failed: bool = True,
    threads: int | None = None,
    jobs: int | None = None,
) -> GridSummary:
    """Run this shard's part of the grid; a failing run is recorded and the grid goes on.

    Each run gets ``threads`` torch threads, by default the cores shared among ``jobs`` bench
    processes (counted on this machine before every run when not given; ``bench.threads``).
    """
    console = console or Console(stderr=True)
    out.mkdir(parents=True, exist_ok=True)
    write_bench_file(out, recipe)
    mine = shard_runs(recipe.runs(), shard)
    summary = GridSummary(total=len(mine))
    todo: list[RunSpec] = []
    earlier_times: list[float] = []
    for spec in mine:
        folder = run_dir(out, spec)
        result = read_result(folder)
        if is_finished(folder, spec):
            summary.skipped += 1
            earlier_times.append(float(result.get("elapsed_s") or 0.0))
        elif result and result.get("status") == "failed" and not retry_failed:
            summary.failed.append(spec.id)
        else:
            todo.append(spec)
    label = f"shard {shard[0]}/{shard[1]}: " if shard[1] > 1 else ""
    console.print(
        f"{label}{len(mine)} run(s): {summary.skipped} finished earlier, {len(todo)} to run"
        + (f", {len(summary.failed)} failed earlier (not retried)" if summary.failed else ""),
        soft_wrap=True,
    )
    start = time.perf_counter()
    times: list[float] = []
    failures: list[dict[str, Any]] = []
    plan: ThreadPlan | None = None
    for k, spec in enumerate(todo, 1):
        folder = run_dir(out, spec)
        hold = _try_lock(folder / RUN_LOCK)
        if hold is None or is_finished(folder, spec):
            # another bench process (a shard of the same folder, or the same shard run twice to
            # share one queue) is running it or has finished it since this pass listed it
            if hold is None:
                summary.elsewhere.append(spec.id)
            else:
                hold.close()
                summary.skipped += 1
            where = (
                "running in another bench process" if hold is None else "finished by another bench process"
            )
            console.print(
                f"{label}[{k}/{len(todo)}] {spec.id}: {where}, skipped", highlight=False, soft_wrap=True
            )
            continue
        try:
            plan = _set_threads(threads, jobs, plan, console, label)
            t0 = time.perf_counter()
            started = _now()
            # trained by an earlier pass that died before its result file (or a checkout that kept only
            # metrics.json): its wall time is unknown, and the seconds spent here would understate it
            trained_earlier = "test" in _read_json(folder / "metrics.json")
            try:
                metrics = execute(spec, folder, recipe)
            except KeyboardInterrupt:
                raise
            except Exception as err:
                elapsed = time.perf_counter() - t0
                record = {
                    "id": spec.id,
                    "status": "failed",
                    "fingerprint": spec.fingerprint(),
                    "error_type": type(err).__name__,
                    "error": str(err),
                    "traceback": traceback.format_exc()[-4000:],
                    "elapsed_s": elapsed,
                    "started": started,
                    "finished": _now(),
                    "host": platform.node(),
                    "environment": environment(),
                }
                folder.mkdir(parents=True, exist_ok=True)
                write_json(folder / RESULT, record)
                failures.append(record)
                summary.failed.append(spec.id)
                status = f"[red]failed[/] ({type(err).__name__}: {err})"
            else:
                elapsed = time.perf_counter() - t0
                test = metrics.get("test", {}) if isinstance(metrics, dict) else {}
                write_json(
                    folder / RESULT,
                    {
                        "id": spec.id,
                        "status": "done",
                        "fingerprint": spec.fingerprint(),
                        "elapsed_s": None if trained_earlier else elapsed,
                        "trained_earlier": trained_earlier,
                        "macro_f1": test.get("macro_f1"),
                        "f1": test.get("f1"),
                        "accuracy": test.get("accuracy"),
                        "started": started,
                        "finished": _now(),
                        "host": platform.node(),
                        "environment": environment(),
                    },
                )
                summary.done += 1
                score = test.get("macro_f1")
                status = "done" + (f", macro-F1 {score:.3f}" if isinstance(score, float) else "")
            if not trained_earlier:
                times.append(elapsed)
            remaining = len(todo) - k
            per_run = sum(times) / len(times) if times else 0.0
            console.print(
                f"{label}[{k}/{len(todo)}] {spec.id}: {status} in {elapsed:.1f} s | "
                f"done {summary.done + summary.skipped}/{len(mine)}, failed {len(summary.failed)}, "
                f"remaining {remaining}, ETA {_fmt(per_run * remaining)}",
                highlight=False,
                soft_wrap=True,
            )
        finally:
            release_under(folder)
            hold.close()
    summary.elapsed_s = time.perf_counter() - start
    write_json(out / f"failures-{shard[0]}of{shard[1]}.json", failures)
    return summary
