"""``semicompact export``: ONNX fp32, ONNX int8 and TorchScript files, each checked on real images.

Everything is written into a temporary sibling of the output folder and renamed into place only
after every export passed its check run, so a failure leaves no half-written output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from ..io import write_json
from .check import compare_predictions
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
) -> list[torch.Tensor]:
    """Real uint8 images to check exports on: given files, else the data's test (or val) images."""
    if images:
        from ..data.images import load_image
        from ..data.transforms import to_uint8_tensor
        from ..evaluate.predict import expand_image_paths

        paths = expand_image_paths(images)[:n]
        tensors = [to_uint8_tensor(load_image(p), card.image_size) for p in paths]
        return [torch.stack(tensors[i : i + 64]) for i in range(0, len(tensors), 64)]
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
    return [x for x, _ in datamodule.loader_for(entries)]


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
    opset: int = 17,
    overwrite: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """Export the model in ``source`` to each format into ``out``; returns {format: {file, size, check}}."""
    from ..artifacts import load_model
    from ..compress.quant_common import calibration_batches, numpy_batches
    from ..compress.run import load_data, resolve_source, staged_output
    from .onnx import OrtModule, export_onnx, quantize_onnx
    from .torchscript import export_torchscript, load_torchscript

    if opset < 13:
        raise ConfigError(f"--opset {opset}: use 13 or newer (per-channel int8 needs 13)")
    check_int8_weights(int8_weights)
    model_file, run_dir = resolve_source(source)
    model, card = load_model(model_file)
    datamodule = load_data(run_dir, card, data, split, None, seed)
    batches = check_batches(datamodule, card, check_images, max_check, seed)
    calib = None
    if "onnx-int8" in formats:
        calib = numpy_batches(
            calibration_batches(datamodule, "--format onnx-int8", calibration, calib_images)
        )
    results: dict[str, Any] = {}
    out_path = Path(out)
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
                    quantize_onnx(fp32, path, calib or [], per_channel=per_channel, weights=int8_weights)
                candidate = OrtModule(path)
            check = compare_predictions(model, candidate, batches)
            check.update(format=fmt, file=path.name, size_bytes=path.stat().st_size, source=str(model_file))
            if fmt == "onnx-int8":
                check.update(
                    calibration=calibration,
                    calibration_images=sum(len(b) for b in calib or []),
                    int8_weights=int8_weights,
                )
            write_json(tmp / f"{path.name}.check.json", check)
            results[fmt] = check
        if "onnx" not in formats and (tmp / FORMATS["onnx"]).is_file():
            (tmp / FORMATS["onnx"]).unlink()  # only the intermediate of the int8 file
        write_json(tmp / "export.json", {"source": str(model_file), "model": card.model, "exports": results})
    for check in results.values():
        check["path"] = str(out_path / check["file"])
    return results
