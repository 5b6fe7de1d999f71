"""Predict with an exported ONNX model using numpy, Pillow and onnxruntime only (no PyTorch).

This is the deployment path on an edge box: ``semicompact predict model.onnx images/`` must not
import torch (a test checks). Images are decoded by the same reader as training
(``semicompact/data/images.py``, loaded directly because the ``semicompact.data`` package imports
torch) and squash-resized with Pillow's antialiased bilinear filter, as in training.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ..errors import DataError, ImageReadError, ModelError
from .metadata import INPUT_NAME, OUTPUT_NAME, card_from_metadata


def _image_reader() -> ModuleType:
    """``semicompact.data.images`` without running ``semicompact/data/__init__.py`` (torch-free)."""
    name = "semicompact.data.images"
    if name in sys.modules:
        return sys.modules[name]
    cached = sys.modules.get("_semicompact_images")
    if cached is not None:
        return cached
    path = Path(__file__).resolve().parents[1] / "data" / "images.py"
    spec = importlib.util.spec_from_file_location("_semicompact_images", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["_semicompact_images"] = module
    spec.loader.exec_module(module)
    return module


def make_session(path: str | Path, threads: int | None = None, spin: bool = True) -> Any:
    """An onnxruntime CPU session; ``threads`` sets intra-op threads (None: onnxruntime's default).

    ``spin=False`` stops idle worker threads from spinning after a run, so that they do not take the
    CPU from whatever is timed next (profiling interleaves runtimes)."""
    import onnxruntime as ort

    p = Path(path)
    if not p.is_file():
        raise ModelError(f"ONNX model '{p}' not found")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types (Fail, InvalidGraph...)
        first = (str(error).strip().splitlines() or [""])[0][:300]
        raise ModelError(f"'{p}' is not a valid ONNX model ({first}); it may be truncated") from None


class OnnxClassifier:
    """An exported model and its metadata: ``predict(uint8 images)`` -> probabilities."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        self.path = Path(path)
        self.session = make_session(self.path, threads)
        meta = self.session.get_modelmeta().custom_metadata_map
        if "semicompact" not in meta:
            raise ModelError(
                f"'{self.path}' has no semicompact metadata; export it with `semicompact export`"
            )
        self.card = card_from_metadata(meta)
        self.classes: list[str] = list(self.card["classes"])
        self.image_size = int(self.card["image_size"])

    def preprocess(self, img: Any) -> np.ndarray:
        """RGB PIL image -> uint8 (3, S, S), squash-resized with antialiasing (as in training)."""
        from PIL import Image

        s = self.image_size
        if img.size != (s, s):
            img = img.resize((s, s), Image.Resampling.BILINEAR)
        return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Softmax probabilities (N, C) for uint8 (N, 3, S, S) images."""
        x = images.astype(np.float32) / np.float32(255.0)
        (logits,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: x})
        logits = logits.astype(np.float64)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


def prediction_cells(row: list[float], classes: list[str]) -> list[str]:
    """Same cells as the PyTorch path: predicted class, its confidence, every probability."""
    pred = max(range(len(row)), key=row.__getitem__)
    return [classes[pred], f"{row[pred]:.6f}", *[f"{p:.6f}" for p in row]]


def expand_image_paths(inputs: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files as given, folders searched recursively for images (sorted)."""
    extensions = _image_reader().IMAGE_EXTENSIONS
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in extensions)
            if not found:
                raise DataError(f"folder '{p}' contains no images ({', '.join(sorted(extensions))})")
            paths.extend(found)
        elif p.is_file():
            paths.append(p)
        else:
            raise DataError(f"'{p}' does not exist; give image files or folders of images")
    if not paths:
        raise DataError("no images given; pass image files or folders")
    return paths


def predict_files_onnx(
    model_path: str | Path,
    inputs: Iterable[str | os.PathLike[str]],
    out: str | Path,
    batch_size: int = 64,
    threads: int | None = None,
) -> tuple[int, list[tuple[str, str]]]:
    """Classify image files with an ONNX model; write the CSV atomically; (rows, [(file, reason)])."""
    from ..io import atomic_open

    model = OnnxClassifier(model_path, threads)
    load_image = _image_reader().load_for_model  # the same minimum size as training
    paths = expand_image_paths(inputs)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["image", "prediction", "confidence", *[f"p_{c}" for c in model.classes]])
    failed: list[tuple[str, str]] = []
    rows = 0
    for start in range(0, len(paths), batch_size):
        chunk, arrays = [], []
        for path in paths[start : start + batch_size]:
            try:
                arrays.append(model.preprocess(load_image(path)))
                chunk.append(path)
            except ImageReadError as error:
                failed.append((str(path), error.reason))
        if not arrays:
            continue
        probs = model.predict(np.stack(arrays))
        for path, row in zip(chunk, probs.tolist(), strict=True):
            writer.writerow([str(path), *prediction_cells(row, model.classes)])
            rows += 1
    if rows == 0:
        raise DataError(
            f"none of the {len(paths)} image(s) could be read; first problem: {failed[0][0]}: {failed[0][1]}"
        )
    with atomic_open(out, "w") as fh:
        fh.write(buffer.getvalue())
    return rows, failed
