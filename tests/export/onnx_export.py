"""Export a small torch module to ONNX the way ``export_onnx`` does (dynamic batch, opset 17)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from semicompact.export.metadata import INPUT_NAME, OUTPUT_NAME


def export_to_onnx(net: nn.Module, path: Path, size: int) -> Path:
    """``net`` in eval mode to ``path`` with ``size`` x ``size`` inputs; returns ``path``."""
    with torch.no_grad():
        torch.onnx.export(
            net.eval(),
            (torch.rand(2, 3, size, size),),
            str(path),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=17,
        )
    return path
