"""Size, parameters and single-image CPU latency of a run's model: the paper's Table 13 columns.

A quick measurement (median of a few batch-1 forward passes on one thread) that makes every
benchmark run comparable; ``semicompact profile`` gives the fuller picture (MACs, ONNX runtimes).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any


def measure_efficiency(run_dir: str | Path, repeats: int = 10, warmup: int = 3) -> dict[str, Any]:
    import torch

    from ..artifacts import load_model

    path = Path(run_dir) / "best.safetensors"
    model, card = load_model(path)
    model = model.eval()
    x = torch.rand(1, 3, card.image_size, card.image_size)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # comparable between runs, and polite to the grid's other work
    try:
        times = []
        with torch.inference_mode():
            for i in range(warmup + repeats):
                t0 = time.perf_counter()
                model(x)
                if i >= warmup:
                    times.append((time.perf_counter() - t0) * 1000.0)
    finally:
        torch.set_num_threads(threads)
    return {
        "size_mb": path.stat().st_size / 1e6,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "latency_ms": statistics.median(times),
        "latency_threads": 1,
        "image_size": card.image_size,
    }
