"""``semicompact export``: ONNX fp32, ONNX int8 and TorchScript files, each checked on real images.

Everything is written into a temporary sibling of the output folder and renamed into place only
after every export passed its check, so a failure leaves no half-written output. The check is a
gate: a file whose top-1 agreement or macro-F1 on the check images falls below the thresholds fails
the export with one line (``ExportCheckError``) unless ``allow_disagreement``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from ..io import write_json
from ..progress import StageLines
from .check import (
    DEFAULT_MAX_F1_DROP,
    DEFAULT_MIN_AGREEMENT,
    ExportCheckError,
    compare_predictions,
    gate_failures,
)
from .onnx import DEFAULT_INT8_WEIGHTS, check_int8_weights

FORMATS = {"onnx": "model_fp32.onnx", "onnx-int8": "model_int8.onnx", "torchscript": "model.ts"}


def parse_formats(text: str) -> list[str]:
    formats = [f.strip().lower() for f in text.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ConfigError(f"--format {text!r}: use one or more of {', '.join(FORMATS)} (comma separated)")
    return list(dict.fromkeys(formats))


def check_batches(
    datamodule: Any, card: Any, images: list[Path] | None, n: int, seed: int = 0
) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """Real (uint8 images, labels) to check exports on: given files (no labels), else the data's
    test (or validation) images with their labels."""
    if images:
        from ..data.images import load_image
        from ..data.transforms import to_uint8_tensor
        from ..evaluate.predict import expand_image_paths

        paths = expand_image_paths(images)[:n]
        tensors = [to_uint8_tensor(load_image(p), card.image_size) for p in paths]
        return [(torch.stack(tensors[i : i + 64]), None) for i in range(0, len(tensors), 64)]
    if datamodule is None:
        raise ConfigError(
            "exports are checked on real images: give a run folder, --data, or --check-images FOLDER"
        )
    from ..compress.run import test_entries

    entries = test_entries(datamodule, n, seed) or [e for e in datamodule.manifest.val][:n]
    if not entries:
        raise ConfigError(
            "the data has no test or validation images to check the export on; use --check-images"
        )
    return [(x, y) for x, y in datamodule.loader_for(entries)]


def export_model(
    source: str | Path,
    out: str | Path,
    formats: list[str],
    *,
    data: str | Path | None = None,
    split: str | Path | None = None,
    check_images: list[Path] | None = None,
    max_check: int = 256,
    calibration: str = "train",
    calib_images: int = 256,
    per_channel: bool = True,
    int8_weights: str = DEFAULT_INT8_WEIGHTS,
    target: str = "auto",
    min_agreement: float = DEFAULT_MIN_AGREEMENT,
    max_f1_drop: float = DEFAULT_MAX_F1_DROP,
    allow_disagreement: bool = False,
    threads: int = 1,
    opset: int = 17,
    overwrite: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """Export the model in ``source`` to each format into ``out``; returns {format: {file, size, check}}.

    ``target`` (``auto``: this CPU) decides the int8 types (``export/int8.py``); every file must
    reach ``min_agreement`` top-1 agreement and lose at most ``max_f1_drop`` macro-F1 on the check
    images, else nothing is written (unless ``allow_disagreement``: written, and marked).
    """
    from ..artifacts import load_model
    from ..compress.quant_common import calibration_batches, held_out_batches, numpy_batches
    from ..compress.run import load_data, resolve_source, staged_output
    from .int8 import choose_int8
    from .onnx import OrtModule, export_onnx
    from .targets import resolve_target
    from .torchscript import export_torchscript, load_torchscript

    if opset < 13:
        raise ConfigError(f"--opset {opset}: use 13 or newer (per-channel int8 needs 13)")
    check_int8_weights(int8_weights)
    resolve_target(target)  # a bad --target fails before any work
    if not 0 <= min_agreement <= 1:
        raise ConfigError(f"--min-agreement {min_agreement}: use a fraction between 0 and 1, e.g. 0.97")
    if max_f1_drop < 0:
        raise ConfigError(f"--max-f1-drop {100 * max_f1_drop:g}: use 0 or more points")
    model_file, run_dir = resolve_source(source)
    model, card = load_model(model_file)
    datamodule = load_data(run_dir, card, data, split, None, seed)
    batches = check_batches(datamodule, card, check_images, max_check, seed)
    calib = held_out = None
    if "onnx-int8" in formats:
        calib = numpy_batches(
            calibration_batches(datamodule, "--format onnx-int8", calibration, calib_images)
        )
        held_out = held_out_batches(datamodule, "--format onnx-int8")
    results: dict[str, Any] = {}
    choice: dict[str, Any] | None = None
    out_path = Path(out)
    lines = StageLines("export", len(formats))
    with staged_output(out_path, overwrite) as tmp:
        for fmt in formats:
            path = tmp / FORMATS[fmt]
            if fmt == "torchscript":
                export_torchscript(model, card, path)
                candidate, _ = load_torchscript(path)
            else:
                fp32 = tmp / FORMATS["onnx"]
                if not fp32.is_file():
                    export_onnx(model, card, fp32, opset=opset)
                if fmt == "onnx-int8":

                    def gate(file: Path) -> str | None:
                        check = compare_predictions(model, OrtModule(file), batches, list(card.classes))
                        failures = gate_failures(check, min_agreement, max_f1_drop)
                        return "; ".join(failures) if failures else None

                    choice = choose_int8(
                        fp32,
                        path,
                        calib or [],
                        target=target,
                        weights=int8_weights,
                        per_channel=per_channel,
                        min_agreement=min_agreement,
                        threads=threads,
                        agreement_batches=held_out,
                        agreement_source="the run's unlabelled pool",
                        accept=gate,
                    )
                candidate = OrtModule(path)
            check = compare_predictions(model, candidate, batches, list(card.classes))
            check.update(format=fmt, file=path.name, size_bytes=path.stat().st_size, source=str(model_file))
            if fmt == "onnx-int8" and choice is not None:
                check.update(
                    calibration=calibration,
                    calibration_images=sum(len(b) for b in calib or []),
                    int8_weights=choice["scheme"],
                    target=choice["target"],
                    int8_choice=choice,
                )
            failures = gate_failures(check, min_agreement, max_f1_drop)
            check["gate"] = {
                "min_agreement": min_agreement,
                "max_f1_drop": max_f1_drop,
                "passed": not failures,
                "failures": failures,
                "allowed_by_user": bool(failures) and allow_disagreement,
            }
            if failures and not allow_disagreement:
                where = "test" if batches and batches[0][1] is not None else "check"
                raise ExportCheckError(
                    f"{path.name} fails the export check on {check['n']} {where} images: "
                    f"{'; '.join(failures)}; nothing was written (try another --target or --int8-weights, "
                    "more --calib-images, or --allow-disagreement to write it anyway)"
                )
            write_json(tmp / f"{path.name}.check.json", check)
            results[fmt] = check
            lines.advance(f"{fmt} written and checked")
        if "onnx" not in formats and (tmp / FORMATS["onnx"]).is_file():
            (tmp / FORMATS["onnx"]).unlink()  # only the intermediate of the int8 file
        summary = {"source": str(model_file), "model": card.model, "exports": results}
        if choice is not None:
            summary["int8"] = choice
        write_json(tmp / "export.json", summary)
    for check in results.values():
        check["path"] = str(out_path / check["file"])
    return results
