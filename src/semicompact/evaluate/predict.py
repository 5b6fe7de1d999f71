"""Batched inference: never image by image."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..errors import DataError

# torch-free, shared with the ONNX prediction path (which must not import torch)
from ..export.onnx_predict import expand_image_paths, prediction_cells


def inference_device() -> str:
    """The device for evaluation and prediction: the GPU when there is one."""
    return "cuda" if torch.cuda.is_available() else "cpu"


@torch.inference_mode()
def predict_loader(
    model: torch.nn.Module, loader: DataLoader, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities and labels for every image the loader yields (uint8 batches)."""
    model = model.to(device).eval()
    probs, labels = [], []
    for batch in loader:
        x, y = batch[0], batch[1]
        if x.shape[0] == 0:
            continue
        x = x.to(device, non_blocking=True).float().div_(255.0)
        probs.append(torch.softmax(model(x).float(), dim=1).cpu())
        labels.append(y.cpu())
    if not probs:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long)
    return torch.cat(probs), torch.cat(labels)


def predict_files(
    model_path: str | Path, inputs: Iterable[str | Path], out: str | Path, batch_size: int = 64
) -> tuple[int, list[tuple[str, str]]]:
    """Classify image files in batches; write a CSV; return (rows written, [(file, reason) skipped])."""
    import csv
    import io

    from ..artifacts import load_model
    from ..data.images import load_for_model
    from ..data.transforms import to_uint8_tensor
    from ..errors import ImageReadError
    from ..io import atomic_open

    model, card = load_model(model_path)
    paths = expand_image_paths(inputs)
    device = inference_device()
    model = model.set_channels_last().to(device)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["image", "prediction", "confidence", *[f"p_{c}" for c in card.classes]])
    failed: list[tuple[str, str]] = []
    rows = 0
    for start in range(0, len(paths), batch_size):
        chunk, tensors = [], []
        for path in paths[start : start + batch_size]:
            try:
                tensors.append(to_uint8_tensor(load_for_model(path), card.image_size))
                chunk.append(path)
            except ImageReadError as error:
                failed.append((str(path), error.reason))
        if not tensors:
            continue
        x = torch.stack(tensors).to(device).float().div_(255.0)
        with torch.inference_mode():
            probs = torch.softmax(model(x).float(), dim=1).cpu()
        for path, row in zip(chunk, probs.tolist(), strict=True):
            writer.writerow([str(path), *prediction_cells(row, card.classes)])
            rows += 1
    if rows == 0:
        raise DataError(
            f"none of the {len(paths)} image(s) could be read; first problem: {failed[0][0]}: {failed[0][1]}"
        )
    with atomic_open(out, "w") as fh:
        fh.write(buffer.getvalue())
    return rows, failed
