"""``qat``: quantization-aware fine-tuning (torchao PT2E ``prepare_qat_pt2e``), then int8 convert.

Fake-quantization of weights (int8, per channel) and activations (uint8) is inserted into the
exported training graph, BN is folded into the convolutions the way the int8 model will compute
it, and the network is fine-tuned on the run's training data (with distillation from the float
model when ``--kd-alpha`` > 0). The observers calibrate themselves during fine-tuning.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

from .base import CompressedModel, CompressionContext, Compressor, register_compressor
from .quant_common import (
    ExportedModule,
    drop_unused_attributes,
    export_graph,
    guard_zero_bn_gamma,
    no_inplace,
    quiet_torchao,
    save_pt2,
    x86_quantizer,
)


@register_compressor("qat")
class QuantizationAwareTraining(Compressor):
    options: ClassVar[dict[str, Any]] = {
        "epochs": 0,  # 0: use --finetune-epochs (at least 1)
        "lr": 0.0,  # 0: use --finetune-lr
    }

    def compress(self, ctx: CompressionContext) -> CompressedModel:
        quiet_torchao()
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e

        from ..errors import ConfigError

        ctx.require_data("qat", "to fine-tune with fake quantization")
        epochs = int(self.config["epochs"]) or max(1, ctx.finetune_epochs)
        lr = float(self.config["lr"]) or ctx.finetune_lr
        if epochs < 1 or lr <= 0:
            raise ConfigError(f"--method qat: epochs ({epochs}) and lr ({lr}) must be positive")
        model = no_inplace(copy.deepcopy(ctx.model))
        nudged = guard_zero_bn_gamma(model)
        prepared = prepare_qat_pt2e(
            export_graph(model.train(), ctx.card.image_size), x86_quantizer(is_qat=True)
        )
        wrapper = ExportedModule(prepared)
        ctx.finetune(wrapper, epochs=epochs, lr=lr)
        wrapper.eval()
        quantized = drop_unused_attributes(convert_pt2e(prepared))
        path = save_pt2(
            quantized,
            ctx.card,
            ctx.out_dir / "model_int8.pt2",
            precision="int8",
            quantization="torchao PT2E QAT",
        )
        notes = {
            "backend": "torchao PT2E X86InductorQuantizer (QAT)",
            "epochs": epochs,
            "lr": lr,
            "kd_alpha": ctx.kd_alpha,
            "zero_bn_gammas_nudged": nudged,
        }
        return CompressedModel(ExportedModule(quantized), [path], path.stat().st_size, notes)
