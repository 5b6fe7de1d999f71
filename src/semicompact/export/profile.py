"""Efficiency of a network as the paper's Table 13 reports it, and more: parameters, MACs, file
sizes, training time per epoch, CPU latency per image at batch 1 and throughput at a larger batch,
for eager PyTorch (fp32), ONNX fp32 and ONNX int8 in onnxruntime (and, on request, torchao's PT2E
int8 graph compiled by inductor).

Latency: ``warmup`` untimed rounds, then the median of ``runs`` rounds in which every runtime runs
once, interleaved (``timing.time_interleaved``), with the thread count fixed (and reported) for all
runtimes. The headline is int8 / onnxruntime fp32: int8 that is not faster than the fp32 file is
said so (``remarks``).
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

RUNTIMES = ("eager", "onnx", "onnx-int8", "torchao-int8")
DEFAULT_RUNTIMES = ("eager", "onnx", "onnx-int8")


@dataclass
class ProfileSettings:
    threads: int = 1
    batch: int = 32
    runs: int = 30
    warmup: int = 5
    batch_runs: int = 5
    runtimes: tuple[str, ...] = DEFAULT_RUNTIMES
    calib_images: int = 64
    int8_weights: str = DEFAULT_INT8_WEIGHTS  # "auto" (from the target) or a scheme of export.targets
    target: str = "auto"


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
    from .int8 import choose_int8
    from .onnx import export_onnx
    from .onnx_predict import make_session
    from .timing import time_interleaved

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
    fns: dict[str, Callable[[], Any]] = {}
    batch_fns: dict[str, Callable[[], Any]] = {}
    if "eager" in settings.runtimes:
        fns["eager"] = lambda: model(one)
        batch_fns["eager"] = lambda: model(many)
    if "torchao-int8" in settings.runtimes:
        compiled, error = _torchao_int8(model, s, calibration)
        if compiled is None:
            row["torchao_int8_error"] = error
        else:
            fns["torchao-int8"] = lambda: compiled(one)
            batch_fns["torchao-int8"] = lambda: compiled(many)
    onnx_runtimes = [r for r in settings.runtimes if r.startswith("onnx")]
    with tempfile.TemporaryDirectory() as work:
        if onnx_runtimes:
            sized = dataclasses.replace(card, image_size=s) if dataclasses.is_dataclass(card) else card
            fp32 = export_onnx(model, sized, Path(work) / "fp32.onnx")
            paths = {"onnx": fp32}
            if "onnx-int8" in onnx_runtimes:
                batches = calibration or [np.random.default_rng(0).random((8, 3, s, s), dtype=np.float32)]
                if calibration and calibration[0].shape[-1] != s:
                    batches = [_resize(b, s) for b in calibration]
                row["int8_calibration"] = "run images" if calibration else "random images (latency only)"
                paths["onnx-int8"] = Path(work) / "int8.onnx"
                choice = choose_int8(
                    fp32,
                    paths["onnx-int8"],
                    batches,
                    target=settings.target,
                    weights=settings.int8_weights,
                    # random images say nothing about accuracy: choose by speed alone
                    min_agreement=0.97 if calibration else 0.0,
                    threads=settings.threads,
                    runs=max(5, settings.runs // 3),
                    warmup=1,
                )
                row["int8_weights"] = choice["scheme"]
                row["int8_target"] = choice["target"]
                row["int8_choice"] = choice
            a, b = one.numpy(), many.numpy()
            for name in onnx_runtimes:
                session = make_session(paths[name], settings.threads, spin=settings.threads == 1)
                row["size_bytes"][f"{name}_file"] = paths[name].stat().st_size
                fns[name] = lambda a=a, session=session: session.run(None, {"images": a})
                batch_fns[name] = lambda b=b, session=session: session.run(None, {"images": b})
        with torch.inference_mode():
            lat = time_interleaved(fns, settings.runs, settings.warmup)
            thr = time_interleaved(batch_fns, settings.batch_runs, 1)
    order = [r for r in RUNTIMES if r in fns]
    row["runtimes"] = {name: _result(lat[name], thr[name], settings.batch) for name in order}
    rt = row["runtimes"]
    for result in rt.values():
        if "eager" in rt:
            result["latency_ratio_vs_eager"] = result["latency_ms"] / rt["eager"]["latency_ms"]
        if "onnx" in rt:
            result["latency_ratio_vs_onnx_fp32"] = result["latency_ms"] / rt["onnx"]["latency_ms"]
    row["remarks"] = remarks(row)
    return row


def remarks(row: dict[str, Any]) -> list[str]:
    """Plain sentences about results a reader could misread (int8 no faster than fp32)."""
    out = []
    rt = row["runtimes"]
    for name in ("onnx-int8", "torchao-int8"):
        ratio = rt.get(name, {}).get("latency_ratio_vs_onnx_fp32")
        if ratio is not None and ratio >= 0.9:
            types = f" (int8 types {row.get('int8_weights')} for {row.get('int8_target')})"
            out.append(
                f"{row['model']} {row['image_size']} px: {name} is {ratio:.2f}x onnxruntime fp32, "
                f"not faster" + (types if name == "onnx-int8" else "")
            )
    if row.get("torchao_int8_error"):
        out.append(f"{row['model']}: torchao int8 did not run: {row['torchao_int8_error']}")
    return out


def _torchao_int8(
    model: nn.Module, size: int, calibration: list[np.ndarray] | None
) -> tuple[Callable[[torch.Tensor], torch.Tensor] | None, str]:
    """torchao PT2E int8 (X86InductorQuantizer) compiled by inductor, or (None, why it cannot run)."""
    import copy

    try:
        from ..compress.quant_common import export_graph, no_inplace, quiet_torchao, x86_quantizer

        quiet_torchao()
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        prepared = prepare_pt2e(export_graph(no_inplace(copy.deepcopy(model)).eval(), size), x86_quantizer())
        batches = calibration or [np.random.default_rng(0).random((8, 3, size, size), dtype=np.float32)]
        with torch.no_grad():
            for b in batches:
                prepared(torch.from_numpy(_resize(b, size) if b.shape[-1] != size else b))
        compiled = torch.compile(convert_pt2e(prepared))
        with torch.no_grad():
            compiled(torch.rand(1, 3, size, size))  # compile now, not inside the timing
        return compiled, ""
    except Exception as error:  # no compiler, unsupported op...: the column says why instead
        first = (str(error).strip().splitlines() or [""])[0][:200]
        return None, f"{type(error).__name__}: {first}"


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
        torch.from_numpy(np.asarray(batch)), size=(size, size), mode="bilinear", antialias=True
    )
    return t.clamp_(0, 1).numpy()


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Table 13's columns (size, train time/epoch, inference time per image) plus params, MACs and the
    three runtimes side by side; the headline ratio is ONNX int8 / ONNX fp32."""
    head = (
        "| network | px | params (M) | MACs (G) | size fp32 (MB) | size int8 ONNX (MB) | train s/epoch | "
        "eager fp32 ms | ONNX fp32 ms | ONNX int8 ms | **int8 / ONNX fp32** | int8 / eager | "
        "torchao int8 ms | int8 types | eager img/s | ONNX int8 img/s |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        rt, sizes = r["runtimes"], r["size_bytes"]

        def ms(name: str, rt: dict[str, Any] = rt) -> str:
            return f"{rt[name]['latency_ms']:.1f}" if name in rt else "-"

        def ips(name: str, rt: dict[str, Any] = rt) -> str:
            return f"{rt[name]['throughput_img_s']:.0f}" if name in rt else "-"

        def ratio(key: str, rt: dict[str, Any] = rt) -> str:
            value = rt.get("onnx-int8", {}).get(key)
            return f"{value:.2f}" if value else "-"

        int8_mb = sizes.get("onnx-int8_file")
        train = r.get("train_time_per_epoch_s")
        types = f"{r['int8_weights']} ({r['int8_target']})" if r.get("int8_weights") else "-"
        lines.append(
            f"| {r['model']} | {r['image_size']} | {r['params'] / 1e6:.2f} | {r['macs'] / 1e9:.3f} | "
            f"{sizes['safetensors_fp32'] / 1e6:.1f} | {f'{int8_mb / 1e6:.1f}' if int8_mb else '-'} | "
            f"{f'{train:.0f}' if train is not None else '-'} | "
            f"{ms('eager')} | {ms('onnx')} | {ms('onnx-int8')} | "
            f"**{ratio('latency_ratio_vs_onnx_fp32')}** | {ratio('latency_ratio_vs_eager')} | "
            f"{ms('torchao-int8')} | {types} | {ips('eager')} | {ips('onnx-int8')} |"
        )
    return head + "\n".join(lines) + "\n"
