"""Efficiency of a network as the paper's Table 13 reports it, and more: parameters, MACs, file
sizes, training time per epoch, CPU latency per image at batch 1 and throughput at a larger batch,
for eager PyTorch (fp32), ONNX fp32 and ONNX int8 in onnxruntime.

Latency: ``warmup`` untimed runs, then the median of ``runs`` timed runs, with the thread count
fixed (and reported) for both PyTorch and onnxruntime.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .onnx import DEFAULT_INT8_WEIGHTS

RUNTIMES = ("eager", "onnx", "onnx-int8")


@dataclass
class ProfileSettings:
    threads: int = 1
    batch: int = 32
    runs: int = 30
    warmup: int = 5
    batch_runs: int = 5
    runtimes: tuple[str, ...] = RUNTIMES
    calib_images: int = 64
    int8_weights: str = DEFAULT_INT8_WEIGHTS  # see export.onnx.INT8_WEIGHTS


def time_ms(fn: Callable[[], Any], runs: int, warmup: int) -> dict[str, float]:
    """Median (and 10th/90th percentiles) of ``runs`` timed calls after ``warmup`` untimed ones, in ms."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, runs)):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    q = np.percentile(times, [10, 90])
    return {
        "median_ms": statistics.median(times),
        "p10_ms": float(q[0]),
        "p90_ms": float(q[1]),
        "runs": len(times),
    }


def count_macs(model: nn.Module, image_size: int) -> int:
    """Multiply-accumulates of one image (FLOPs / 2 by torch.utils.flop_counter: conv, linear, matmul)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.rand(1, 3, image_size, image_size))
    return int(counter.get_total_flops() // 2)


def safetensors_size(model: nn.Module) -> int:
    """Bytes of the model saved as fp32 safetensors (what ``semicompact train`` writes)."""
    from safetensors.torch import save

    return len(save({k: v.detach().contiguous() for k, v in model.state_dict().items()}))


def train_time_per_epoch(run_dir: Path | None) -> float | None:
    path = run_dir / "metrics.json" if run_dir else None
    if path is None or not path.is_file():
        return None
    value = json.loads(path.read_text(encoding="utf-8")).get("train_time_per_epoch_s")
    return float(value) if value is not None else None


def profile_model(
    model: nn.Module,
    card: Any,
    image_size: int,
    settings: ProfileSettings,
    *,
    file_size: int | None = None,
    run_dir: Path | None = None,
    calibration: list[np.ndarray] | None = None,
) -> dict[str, Any]:
    """One row of the table: sizes, MACs, latency and throughput per runtime."""
    from .onnx import export_onnx, quantize_onnx
    from .onnx_predict import make_session

    model = model.eval()
    torch.set_num_threads(settings.threads)
    s = image_size
    one, many = torch.rand(1, 3, s, s), torch.rand(settings.batch, 3, s, s)
    row: dict[str, Any] = {
        "model": card.model,
        "image_size": s,
        "threads": settings.threads,
        "params": sum(p.numel() for p in model.parameters()),
        "macs": count_macs(model, s),
        "size_bytes": {"safetensors_fp32": file_size or safetensors_size(model)},
        "train_time_per_epoch_s": train_time_per_epoch(run_dir),
        "runtimes": {},
    }
    if "eager" in settings.runtimes:
        with torch.inference_mode():
            lat = time_ms(lambda: model(one), settings.runs, settings.warmup)
            thr = time_ms(lambda: model(many), settings.batch_runs, 1)
        row["runtimes"]["eager"] = _result(lat, thr, settings.batch)
    onnx_runtimes = [r for r in settings.runtimes if r.startswith("onnx")]
    if onnx_runtimes:
        with tempfile.TemporaryDirectory() as work:
            sized = dataclasses.replace(card, image_size=s) if dataclasses.is_dataclass(card) else card
            fp32 = export_onnx(model, sized, Path(work) / "fp32.onnx")
            paths = {"onnx": fp32}
            if "onnx-int8" in onnx_runtimes:
                batches = calibration or [np.random.default_rng(0).random((8, 3, s, s), dtype=np.float32)]
                if calibration and calibration[0].shape[-1] != s:
                    batches = [_resize(b, s) for b in calibration]
                row["int8_calibration"] = "run images" if calibration else "random images (latency only)"
                row["int8_weights"] = settings.int8_weights
                paths["onnx-int8"] = quantize_onnx(
                    fp32, Path(work) / "int8.onnx", batches, weights=settings.int8_weights
                )
            for name in onnx_runtimes:
                session = make_session(paths[name], settings.threads)
                row["size_bytes"][f"{name}_file"] = paths[name].stat().st_size
                a, b = one.numpy(), many.numpy()
                lat = time_ms(
                    lambda a=a, session=session: session.run(None, {"images": a}),
                    settings.runs,
                    settings.warmup,
                )
                thr = time_ms(
                    lambda b=b, session=session: session.run(None, {"images": b}), settings.batch_runs, 1
                )
                row["runtimes"][name] = _result(lat, thr, settings.batch)
    eager = row["runtimes"].get("eager")
    for result in row["runtimes"].values():
        if eager:
            result["latency_ratio_vs_eager"] = result["latency_ms"] / eager["latency_ms"]
    return row


def _result(lat: dict[str, float], thr: dict[str, float], batch: int) -> dict[str, Any]:
    return {
        "latency_ms": lat["median_ms"],
        "latency_p10_ms": lat["p10_ms"],
        "latency_p90_ms": lat["p90_ms"],
        "latency_runs": lat["runs"],
        "throughput_img_s": batch * 1000 / thr["median_ms"],
        "throughput_batch": batch,
    }


def _resize(batch: np.ndarray, size: int) -> np.ndarray:
    t = torch.nn.functional.interpolate(
        torch.from_numpy(batch), size=(size, size), mode="bilinear", antialias=True
    )
    return t.clamp_(0, 1).numpy()


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Table 13's columns (size, train time/epoch, inference time per image) plus params, MACs, ONNX."""
    head = (
        "| network | px | params (M) | MACs (G) | size fp32 (MB) | size int8 ONNX (MB) | train s/epoch | "
        "eager fp32 ms | ONNX fp32 ms | ONNX int8 ms | int8/eager | eager img/s | ONNX int8 img/s |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        rt, sizes = r["runtimes"], r["size_bytes"]

        def ms(name: str, rt: dict[str, Any] = rt) -> str:
            return f"{rt[name]['latency_ms']:.1f}" if name in rt else "-"

        def ips(name: str, rt: dict[str, Any] = rt) -> str:
            return f"{rt[name]['throughput_img_s']:.0f}" if name in rt else "-"

        int8_mb = sizes.get("onnx-int8_file")
        ratio = rt.get("onnx-int8", {}).get("latency_ratio_vs_eager")
        train = r.get("train_time_per_epoch_s")
        lines.append(
            f"| {r['model']} | {r['image_size']} | {r['params'] / 1e6:.2f} | {r['macs'] / 1e9:.3f} | "
            f"{sizes['safetensors_fp32'] / 1e6:.1f} | {f'{int8_mb / 1e6:.1f}' if int8_mb else '-'} | "
            f"{f'{train:.0f}' if train is not None else '-'} | "
            f"{ms('eager')} | {ms('onnx')} | {ms('onnx-int8')} | "
            f"{f'{ratio:.2f}' if ratio else '-'} | {ips('eager')} | {ips('onnx-int8')} |"
        )
    return head + "\n".join(lines) + "\n"
