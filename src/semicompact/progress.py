"""Plain progress lines with an ETA for long commands (evaluate, compress, export, profile).

Lines, not a redrawn bar, so that a log file (nohup, CI, a cluster job) shows them too; flushed at
once. No heavy import here: the CLI uses this before PyTorch is loaded.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TextIO, TypeVar

T = TypeVar("T")


def format_duration(seconds: float) -> str:
    """``H:MM:SS`` (the ETA format of the benchmark grid too)."""
    seconds = max(0, round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def say(text: str, stream: TextIO | None = None) -> None:
    print(text, file=stream or sys.stderr, flush=True)


class StageLines:
    """``label: k/n what | elapsed | ETA`` after each of ``total`` stages (formats, models...)."""

    def __init__(self, label: str, total: int, stream: TextIO | None = None) -> None:
        self.label, self.total, self.stream = label, total, stream
        self.done = 0
        self._start = time.perf_counter()

    def advance(self, what: str) -> None:
        self.done += 1
        elapsed = time.perf_counter() - self._start
        left = elapsed / self.done * max(0, self.total - self.done)
        say(
            f"{self.label}: {self.done}/{self.total} {what} | {format_duration(elapsed)} elapsed"
            f" | ETA {format_duration(left)}",
            self.stream,
        )


def iter_progress(
    items: Iterable[T], total: int, label: str, every_s: float = 10.0, stream: TextIO | None = None
) -> Iterator[T]:
    """Yield ``items``; every ``every_s`` seconds (and at the end, if a line was printed) say
    ``label: k/total | elapsed | ETA``, so that a long loop shows signs of life in a log."""
    start = last = time.perf_counter()
    printed = False
    k = 0
    for k, item in enumerate(items, 1):
        yield item
        now = time.perf_counter()
        if now - last >= every_s or (printed and k == total):
            left = (now - start) / k * max(0, total - k)
            say(
                f"{label}: {k}/{total} | {format_duration(now - start)} elapsed"
                f" | ETA {format_duration(left)}",
                stream,
            )
            last, printed = now, True
