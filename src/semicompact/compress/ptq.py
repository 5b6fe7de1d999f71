"""``ptq``: post-training static int8 quantization, calibrated on the run's own images.

``backend=pt2e`` (default): torchao PT2E with the X86 inductor quantizer (per-channel int8 weights,
uint8 activations); the result is a ``.pt2`` exported program with int8 weights.
``backend=onnx``: the float model exported to ONNX and quantized by onnxruntime ``quantize_static``
(QDQ, per-channel weights) with the int8 types chosen for ``target`` (``export/int8.py``: on this
CPU, the fastest candidate whose agreement passes); the result is a ``.onnx`` file that runs int8
kernels in onnxruntime.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..export.onnx import DEFAULT_INT8_WEIGHTS, check_int8_weights
from .base import CompressedModel, CompressionContext, Compressor, register_compressor
from .quant_common import (
    ExportedModule,
    calibration_batches,
    drop_unused_attributes,
    export_graph,
    held_out_batches,
    no_inplace,
    numpy_batches,
    quiet_torchao,
    save_pt2,
    x86_quantizer,
)

BACKENDS = ("pt2e", "onnx")


@register_compressor("ptq")
class PostTrainingQuantization(Compressor):
    options: ClassVar[dict[str, Any]] = {
        "backend": "pt2e",
        "calibration": "train",  # train, unlabelled or both
        "calib_images": 256,
        "per_channel": True,  # onnx backend (pt2e is always per-channel)
        "calibrate_method": "minmax",  # onnx backend: minmax, entropy or percentile
        "int8_weights": DEFAULT_INT8_WEIGHTS,  # onnx: auto (from target) or a scheme of export.targets
        "target": "auto",  # onnx backend: the CPU the file is for (export.targets)
        "min_agreement": 0.97,  # onnx: candidate agreement (unlabelled pool, else calibration)
    }

    def compress(self, ctx: CompressionContext) -> CompressedModel:
        from ..errors import ConfigError

        backend = self.config["backend"]
        if backend not in BACKENDS:
            raise ConfigError(f"--option backend={backend}: use one of {', '.join(BACKENDS)}")
        from ..export.targets import resolve_target

        weights = str(self.config["int8_weights"])
        check_int8_weights(weights, f"--option int8_weights={weights}")
        resolve_target(str(self.config["target"]), "--option target=")
        batches = calibration_batches(
            ctx.require_data("ptq", "to calibrate the int8 ranges"),
            "ptq",
            self.config["calibration"],
            int(self.config["calib_images"]),
        )
        n = sum(b.shape[0] for b in batches)
        if backend == "onnx":
            return self._onnx(ctx, batches, n)
        return self._pt2e(ctx, batches, n)

    def _pt2e(self, ctx: CompressionContext, batches: list[torch.Tensor], n: int) -> CompressedModel:
        quiet_torchao()
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        model = no_inplace(copy.deepcopy(ctx.model)).eval()
        prepared = prepare_pt2e(export_graph(model, ctx.card.image_size), x86_quantizer())
        with torch.no_grad():
            for x in batches:
                prepared(x)
        quantized = drop_unused_attributes(convert_pt2e(prepared))
        path = save_pt2(
            quantized,
            ctx.card,
            ctx.out_dir / "model_int8.pt2",
            precision="int8",
            quantization="torchao PT2E x86",
        )
        notes = {
            "backend": "torchao PT2E X86InductorQuantizer",
            "calibration_images": n,
            "note": "eager runs reference int8 ops (slow): use torch.compile or the ONNX int8 export",
        }
        return CompressedModel(ExportedModule(quantized), [path], path.stat().st_size, notes)

    def _onnx(self, ctx: CompressionContext, batches: list[torch.Tensor], n: int) -> CompressedModel:
        from ..export.int8 import choose_int8
        from ..export.onnx import OrtModule, export_onnx

        out = ctx.out_dir / "model_int8.onnx"
        with tempfile.TemporaryDirectory() as work:
            fp32 = export_onnx(ctx.model, ctx.card, Path(work) / "model_fp32.onnx")
            choice = choose_int8(
                fp32,
                out,
                numpy_batches(batches),
                target=str(self.config["target"]),
                weights=str(self.config["int8_weights"]),
                per_channel=bool(self.config["per_channel"]),
                calibrate_method=str(self.config["calibrate_method"]),
                min_agreement=float(self.config["min_agreement"]),
                option="--option target=",
                agreement_batches=held_out_batches(ctx.datamodule, "ptq"),
                agreement_source="the run's unlabelled pool",
            )
        notes = {
            "backend": "onnxruntime quantize_static QDQ",
            "calibration_images": n,
            "per_channel": bool(self.config["per_channel"]),
            "int8_weights": choice["scheme"],
            "target": choice["target"],
            "int8_choice": choice,
        }
        return CompressedModel(OrtModule(out), [out], out.stat().st_size, notes)
