"""Target-aware ONNX int8: quantize each candidate scheme of the target CPU, measure, keep one.

On the CPU that runs the command (``--target auto`` or the target this CPU is), every candidate is
timed against the fp32 file at batch 1, interleaved, and its top-1 agreement with the fp32 file is
measured on ``agreement_batches`` (``export`` passes images the model was not trained on, the
run's unlabelled pool, when it has one) or else on the calibration images; the fastest candidate
whose agreement reaches the gate is kept. Training images overstate agreement: on a BloodMNIST
MobileNetV2, plain ``int8`` agreed on 97.7 % of its calibration (training) images but 90.2 % of
unlabelled ones and 92.7 % of test ones.
For another target nothing can be timed here, so the first candidate (the one the target's kernels
make fastest, ``targets.TARGETS``) that passes is kept. The choice, every candidate's numbers and
the reason go into the file's metadata (``int8_choice``) and into ``export.json``.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .metadata import INPUT_NAME
from .targets import SCHEMES, check_scheme, resolve_target


def _logits(session: Any, batches: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([session.run(None, {INPUT_NAME: np.ascontiguousarray(b)})[0] for b in batches])


def choose_int8(
    fp32_path: str | Path,
    out_path: str | Path,
    batches: list[np.ndarray],
    *,
    target: str = "auto",
    weights: str = "auto",
    per_channel: bool = True,
    calibrate_method: str = "minmax",
    min_agreement: float = 0.97,
    threads: int = 1,
    runs: int = 15,
    warmup: int = 2,
    option: str = "--target",
    agreement_batches: list[np.ndarray] | None = None,
    agreement_source: str = "held-out images",
    accept: Callable[[Path], str | None] | None = None,
) -> dict[str, Any]:
    """Write the chosen int8 file to ``out_path``; returns the choice (target, scheme, why, candidates).

    ``accept(file)`` (``export``: the export gate on the check images) returns None to keep a
    candidate or the reason it fails; a failing pick gives way to the next passing candidate (in
    the same order: fastest first), so that a pick that just passed on the pool but not on the
    check images costs some speed instead of the whole export.
    """
    from .onnx import quantize_onnx, set_metadata, staged_file
    from .onnx_predict import make_session
    from .timing import time_interleaved

    check_scheme(weights)
    spec, is_host, how = resolve_target(target, option)
    names = list(spec.candidates) if weights == "auto" else [weights]
    images = [np.asarray(b, dtype=np.float32) for b in batches if len(b)]
    judged = [np.asarray(b, dtype=np.float32) for b in agreement_batches or [] if len(b)] or images
    source = agreement_source if judged is not images else "calibration images"
    reference = _logits(make_session(fp32_path, threads), judged) if judged else None
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as work:
        files: dict[str, Path] = {}
        for name in names:
            files[name] = quantize_onnx(
                fp32_path,
                Path(work) / f"{name}.onnx",
                images,
                per_channel=per_channel,
                calibrate_method=calibrate_method,
                weights=name,
            )
            row: dict[str, Any] = {"scheme": name, "description": SCHEMES[name].description}
            if reference is not None:
                logits = _logits(make_session(files[name], threads), judged)
                row["agreement"] = float((logits.argmax(1) == reference.argmax(1)).mean())
                row["passes"] = row["agreement"] >= min_agreement
            rows.append(row)
        timed = is_host and images and (len(names) > 1 or weights == "auto")
        if timed:
            x = images[0][:1]
            sessions = {"fp32": make_session(fp32_path, threads)}
            sessions.update({n: make_session(files[n], threads) for n in names})
            stats = time_interleaved(
                {k: (lambda s=s: s.run(None, {INPUT_NAME: x})) for k, s in sessions.items()}, runs, warmup
            )
            for row in rows:
                row["latency_ms"] = stats[row["scheme"]]["median_ms"]
                row["ratio_vs_onnx_fp32"] = row["latency_ms"] / stats["fp32"]["median_ms"]
        chosen, why = _pick(rows, names, weights, bool(timed), min_agreement)
        rejected: list[dict[str, str]] = []
        if accept is not None:
            for name in _fallbacks(rows, chosen, bool(timed)):
                reason = accept(files[name])
                if reason is None:
                    if rejected:
                        failed = ", ".join(r["scheme"] for r in rejected)
                        reasons = "; ".join(r["reason"] for r in rejected)
                        why = f"{why}; then {failed} failed the export check ({reasons}), so {name} was kept"
                    chosen = name
                    break
                rejected.append({"scheme": name, "reason": reason})
        choice = {
            "target": spec.name,
            "target_how": how,
            "target_why": spec.why,
            "scheme": chosen,
            "activations": SCHEMES[chosen].activations,
            "weights": SCHEMES[chosen].weights,
            "reduce_range": SCHEMES[chosen].reduce_range,
            "why": why,
            "min_agreement": min_agreement,
            "threads": threads,
            "calibration_images": sum(len(b) for b in images),
            "agreement_on": {"images": source, "n": sum(len(b) for b in judged)},
            "candidates": rows,
            "failed_export_check": rejected,
        }
        import onnx

        proto = onnx.load(str(files[chosen]))
        meta = {p.key: p.value for p in proto.metadata_props}
        meta.update(int8_target=spec.name, int8_choice=json.dumps(choice))
        set_metadata(proto, meta)
        with staged_file(out_path, ".onnx") as tmp:
            onnx.save(proto, str(tmp))
    return choice


def _fallbacks(rows: list[dict[str, Any]], chosen: str, timed: bool) -> list[str]:
    """The pick first, then the other candidates that passed the agreement gate, fastest first
    when they were timed (else in the target's order), then those that did not, most agreeing
    first: the agreement on the pool is a screen on a few hundred images, the export check decides
    (BloodMNIST MobileNetV2, uint8-early-float: 94.1 % on 512 pool images, 97.4 % on 3421 test)."""
    others = [r for r in rows if r["scheme"] != chosen]
    passing = [r for r in others if r.get("passes", True)]
    if timed:
        passing.sort(key=lambda r: r["latency_ms"])
    failing = sorted((r for r in others if not r.get("passes", True)), key=lambda r: -r.get("agreement", 0.0))
    return [chosen, *(r["scheme"] for r in passing + failing)]


def _pick(
    rows: list[dict[str, Any]], names: list[str], weights: str, timed: bool, min_agreement: float
) -> tuple[str, str]:
    """The kept scheme and one sentence saying why."""
    if weights != "auto":
        return weights, f"given by --int8-weights {weights}"
    passing = [r for r in rows if r.get("passes", True)]
    if not passing:
        best = max(rows, key=lambda r: r.get("agreement", 0.0))
        return best["scheme"], (
            f"no candidate reached {100 * min_agreement:.1f}% agreement; "
            f"{best['scheme']} agreed most ({100 * best['agreement']:.1f}%)"
        )
    if timed:
        best = min(passing, key=lambda r: r["latency_ms"])
        others = ", ".join(
            f"{r['scheme']} {r['latency_ms']:.2f} ms"
            + ("" if r.get("passes", True) else " (failed agreement)")
            for r in rows
            if r is not best
        )
        return best["scheme"], (
            f"fastest on this CPU among those passing the agreement gate: {best['latency_ms']:.2f} ms "
            f"({best['ratio_vs_onnx_fp32']:.2f}x onnxruntime fp32)" + (f"; {others}" if others else "")
        )
    best = passing[0]
    skipped = [r["scheme"] for r in rows[: rows.index(best)]]
    return best["scheme"], (
        "the target's fastest kernel type (not timed: another CPU)"
        + (f"; {', '.join(skipped)} failed the agreement gate" if skipped else "")
        if len(names) > 1
        else "the target's only safe type"
    )
