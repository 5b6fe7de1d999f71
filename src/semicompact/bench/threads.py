"""CPU threads per benchmark process: cores shared out among the bench processes of one machine.

PyTorch takes every core by default. Two ``semicompact bench`` processes (two shards, or two
recipes) on a 2-core machine then run 2 x 2 threads on 2 cores, and each step waits on the other
process's threads: measured 10x slower than one thread each. So each process takes
``cores // processes`` threads (at least 1), counting the bench processes running on this machine
again before every run, so that the first process gives up its extra thread when a second starts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ThreadPlan:
    threads: int  # intra-op threads this process uses
    cores: int  # cores this process may run on
    jobs: int  # bench processes sharing them (this one included)
    chosen: str  # "--threads", "--jobs" or "counted"

    @property
    def oversubscribed(self) -> bool:
        return self.threads * self.jobs > self.cores

    def describe(self) -> str:
        why = {
            "--threads": "set by --threads",
            "--jobs": f"{self.cores} core(s) / --jobs {self.jobs}",
            "counted": f"{self.cores} core(s) / {self.jobs} bench process(es) running on this machine",
        }[self.chosen]
        return f"{self.threads} torch thread(s) per run ({why})"

    def warning(self) -> str | None:
        if not self.oversubscribed:
            return None
        return (
            f"{self.jobs} bench process(es) x {self.threads} thread(s) > {self.cores} core(s): "
            "oversubscribed, every run slows down; give each process --threads "
            f"{max(1, self.cores // self.jobs)}"
        )


def available_cores() -> int:
    """Cores this process may use (its CPU affinity, e.g. a cluster job's allocation)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _is_bench_command(argv: list[str]) -> bool:
    for i, arg in enumerate(argv):
        name = Path(arg).name
        if name in ("semicompact", "semicompact.cli.main") or arg == "semicompact":
            rest = [a for a in argv[i + 1 :] if not a.startswith("-")]
            return bool(rest) and rest[0] == "bench"
    return False


def count_bench_processes(proc: Path = Path("/proc")) -> int:
    """``semicompact bench`` processes running on this machine, this one included (Linux; else 1)."""
    me = os.getpid()
    count = 0
    found_me = False
    try:
        entries = list(proc.iterdir())
    except OSError:
        return 1
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if _is_bench_command([a for a in argv if a]):
            count += 1
            found_me = found_me or int(entry.name) == me
    return count + (0 if found_me else 1)


def plan_threads(threads: int | None = None, jobs: int | None = None, cores: int | None = None) -> ThreadPlan:
    """Threads for this process: ``threads``, else the cores divided by ``jobs`` or the counted processes."""
    cores = cores or available_cores()
    if threads:
        return ThreadPlan(threads, cores, jobs or count_bench_processes(), "--threads")
    chosen = "--jobs" if jobs else "counted"
    jobs = jobs or count_bench_processes()
    return ThreadPlan(max(1, cores // jobs), cores, jobs, chosen)
