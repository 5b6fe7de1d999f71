"""Latency measured the way a shared CPU allows: runtimes interleaved call by call, so a burst of
load from another process slows every runtime alike and the ratios between them stay honest."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def time_interleaved(
    fns: dict[str, Callable[[], Any]], runs: int, warmup: int
) -> dict[str, dict[str, float]]:
    """Median (and 10th/90th percentiles) in ms of each function, timed in round-robin order.

    Every round calls each function once (``warmup`` untimed rounds first); the order rotates
    between rounds so that no runtime always follows the same one.
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(max(1, runs)):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            start = time.perf_counter()
            fns[name]()
            times[name].append((time.perf_counter() - start) * 1000)
    out = {}
    for name, values in times.items():
        q = np.percentile(values, [10, 90])
        out[name] = {
            "median_ms": statistics.median(values),
            "p10_ms": float(q[0]),
            "p90_ms": float(q[1]),
            "runs": len(values),
        }
    return out
