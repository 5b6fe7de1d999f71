"""Low-rank factorisation: truncated SVD for linear (and 1x1 conv) layers, Tucker-2 for convolutions.

A linear layer ``W (out x in)`` becomes ``Linear(in, r) -> Linear(r, out)`` from the truncated SVD.
A k x k convolution becomes ``1x1 (in -> r_in) -> k x k (r_in -> r_out) -> 1x1 (r_out -> out)`` from a
Tucker-2 decomposition of its weight over the channel modes (tensorly ``partial_tucker``; Kim et al.
2016). Ranks come from the energy kept (the smallest rank whose squared singular values, of the
matrix or of each mode unfolding, reach ``energy`` of the total) or from ``ratio`` of the full rank.
A layer is replaced only if that saves at least ``min_saving`` of its parameters; depthwise/grouped
convolutions and the classifier head are never factorised. Fine-tuning then recovers accuracy.

The file is safetensors plus, in the metadata, the list of factorised layers and their ranks;
:func:`load_lowrank` rebuilds the same structure before loading the tensors (nothing is unpickled).
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors.torch import save as st_save
from torch import nn

from ..errors import ConfigError, ModelError
from ..io import write_bytes
from .base import CompressedModel, CompressionContext, Compressor, register_compressor
from .prune import count_macs_params, read_safetensors

STRUCTURE_KEY = "semicompact_lowrank"


@register_compressor("lowrank")
class LowRank(Compressor):
    """Truncated SVD (linear) and Tucker-2 (conv) factorisation, then fine-tuning."""

    options: ClassVar[dict[str, Any]] = {
        "energy": 0.9,  # fraction of squared singular values kept (ignored when ratio is set)
        "ratio": None,  # rank = ceil(ratio * full rank), in (0, 1]
        "layers": "all",  # all | conv | linear
        "min_saving": 0.1,  # factorise a layer only if it saves at least this fraction of its params
        "tucker_iters": 2,  # HOOI iterations of partial_tucker (0: plain truncated HOSVD)
    }

    def compress(self, ctx: CompressionContext) -> CompressedModel:
        cfg = _check_options(self.config)
        model = copy.deepcopy(ctx.model).cpu().eval()
        candidates = decomposable_layers(model, cfg["layers"])
        if not candidates:
            raise ModelError(
                f"--method lowrank: {getattr(model, 'name', 'the model')} has no layer to factorise "
                f"with option layers={cfg['layers']} (depthwise/grouped convs and the head are skipped); "
                "try layers=all"
            )
        size = int(getattr(ctx.card, "image_size", 0) or 224)
        example = torch.rand(1, 3, size, size)
        before = count_macs_params(model, example)
        plan = []
        for name, layer in candidates:
            ranks = choose_ranks(layer, cfg["energy"], cfg["ratio"])
            if factorised_params(layer, ranks) > (1.0 - cfg["min_saving"]) * _params(layer):
                continue
            model.set_submodule(name, factorise(layer, ranks, cfg["tucker_iters"]))
            plan.append({"name": name, "ranks": list(ranks)})
        if not plan:
            what = f"ratio={cfg['ratio']}" if cfg["ratio"] is not None else f"energy={cfg['energy']}"
            raise ModelError(
                f"--method lowrank: no layer saves {cfg['min_saving']:.0%} of its params at option {what}; "
                "lower energy (e.g. 0.8) or set ratio=0.25"
            )
        if ctx.finetune_epochs > 0:  # eval mode: BatchNorm statistics stay valid for the approximation
            ctx.finetune(model)
        model.eval()
        after = count_macs_params(model, example)
        path = Path(ctx.out_dir) / "lowrank.safetensors"
        save_lowrank(path, model, ctx.card, plan)
        notes = {
            "params_before": before[1],
            "params_after": after[1],
            "macs_before": before[0],
            "macs_after": after[0],
            "factorised_layers": len(plan),
            "candidate_layers": len(candidates),
            "ranks": {p["name"]: p["ranks"] for p in plan},
        }
        return CompressedModel(module=model, files=[path], size_bytes=path.stat().st_size, notes=notes)


def _check_options(config: dict[str, Any]) -> dict[str, Any]:
    cfg = dict(config)
    e = cfg["energy"]
    if isinstance(e, bool) or not isinstance(e, int | float) or not 0.0 < float(e) <= 1.0:
        raise ConfigError(f"--method lowrank: option energy={e!r} must be in (0, 1], e.g. 0.9")
    cfg["energy"] = float(e)
    r = cfg["ratio"]
    if r is not None and (isinstance(r, bool) or not isinstance(r, int | float) or not 0.0 < float(r) <= 1.0):
        raise ConfigError(f"--method lowrank: option ratio={r!r} must be in (0, 1], e.g. 0.25")
    cfg["ratio"] = None if r is None else float(r)
    if cfg["layers"] not in ("all", "conv", "linear"):
        raise ConfigError(f"--method lowrank: option layers={cfg['layers']!r} must be all, conv or linear")
    s = cfg["min_saving"]
    if isinstance(s, bool) or not isinstance(s, int | float) or not 0.0 <= float(s) < 1.0:
        raise ConfigError(f"--method lowrank: option min_saving={s!r} must be in [0, 1)")
    cfg["min_saving"] = float(s)
    it = cfg["tucker_iters"]
    if isinstance(it, bool) or not isinstance(it, int) or it < 0:
        raise ConfigError(f"--method lowrank: option tucker_iters={it!r} must be an integer >= 0")
    return cfg


def decomposable_layers(model: nn.Module, which: str = "all") -> list[tuple[str, nn.Module]]:
    """Plain linear layers and ungrouped convolutions, outside the classifier head."""
    head = getattr(model, "head", None)
    skip = set(head.modules()) if isinstance(head, nn.Module) else set()
    out = []
    for name, m in model.named_modules():
        if m in skip:
            continue
        linear = isinstance(m, nn.Linear) and which in ("all", "linear")
        conv = isinstance(m, nn.Conv2d) and which in ("all", "conv") and m.groups == 1
        if (linear or conv) and min(m.weight.shape[:2]) > 1:
            out.append((name, m))
    return out


def _is_tucker(layer: nn.Module) -> bool:
    return isinstance(layer, nn.Conv2d) and tuple(layer.kernel_size) != (1, 1)


def _params(layer: nn.Module) -> int:
    return sum(p.numel() for p in layer.parameters())


def energy_rank(singular_values: torch.Tensor, energy: float) -> int:
    """Smallest r whose first r squared singular values hold ``energy`` of their sum."""
    power = singular_values.double() ** 2
    total = float(power.sum())
    if total <= 0:
        return 1
    cumulative = torch.cumsum(power, 0) / total
    return min(
        len(power), int(torch.searchsorted(cumulative, torch.tensor(energy - 1e-12, dtype=torch.float64))) + 1
    )


def choose_ranks(layer: nn.Module, energy: float, ratio: float | None) -> tuple[int, ...]:
    """``(r,)`` for an SVD layer or ``(r_out, r_in)`` for a Tucker-2 convolution."""
    w = layer.weight.detach().double()
    unfoldings = _unfoldings(w) if _is_tucker(layer) else [w.reshape(w.shape[0], -1)]
    ranks = []
    for u in unfoldings:
        full = min(u.shape)
        if ratio is not None:
            ranks.append(max(1, math.ceil(ratio * full)))
        else:
            ranks.append(energy_rank(_gram_eigen(u)[0].sqrt(), energy))
    return tuple(ranks) if _is_tucker(layer) else (min(ranks[0], min(w.shape[0], w[0].numel())),)


def factorised_params(layer: nn.Module, ranks: tuple[int, ...]) -> int:
    bias = 0 if layer.bias is None else layer.bias.numel()
    w = layer.weight
    if _is_tucker(layer):
        r_out, r_in = ranks
        k = w[0, 0].numel()
        return w.shape[1] * r_in + r_in * r_out * k + r_out * w.shape[0] + bias
    (r,) = ranks
    return r * (w[0].numel() + w.shape[0]) + bias


def build_factorised(layer: nn.Module, ranks: tuple[int, ...]) -> nn.Sequential:
    """The replacement structure (uninitialised weights) for ``layer`` at ``ranks``."""
    has_bias = layer.bias is not None
    if isinstance(layer, nn.Linear):
        (r,) = ranks
        return nn.Sequential(
            nn.Linear(layer.in_features, r, bias=False), nn.Linear(r, layer.out_features, has_bias)
        )
    c = layer
    if not _is_tucker(c):
        (r,) = ranks
        return nn.Sequential(
            nn.Conv2d(
                c.in_channels,
                r,
                1,
                stride=c.stride,
                padding=c.padding,
                bias=False,
                padding_mode=c.padding_mode,
            ),
            nn.Conv2d(r, c.out_channels, 1, bias=has_bias),
        )
    r_out, r_in = ranks
    return nn.Sequential(
        nn.Conv2d(c.in_channels, r_in, 1, bias=False),
        nn.Conv2d(
            r_in,
            r_out,
            c.kernel_size,
            stride=c.stride,
            padding=c.padding,
            dilation=c.dilation,
            bias=False,
            padding_mode=c.padding_mode,
        ),
        nn.Conv2d(r_out, c.out_channels, 1, bias=has_bias),
    )


def factorise(layer: nn.Module, ranks: tuple[int, ...], tucker_iters: int = 5) -> nn.Sequential:
    """``layer`` replaced by its factorisation at ``ranks`` (weights from SVD / Tucker-2)."""
    seq = build_factorised(layer, ranks)
    w = layer.weight.detach().double()
    with torch.no_grad():
        if _is_tucker(layer):
            core, (u_out, u_in) = _tucker2(w, ranks, tucker_iters)
            seq[0].weight.copy_(u_in.T.reshape(*seq[0].weight.shape))
            seq[1].weight.copy_(core)
            seq[2].weight.copy_(u_out.reshape(*seq[2].weight.shape))
        else:
            (r,) = ranks
            u, s, vh = torch.linalg.svd(w.reshape(w.shape[0], -1), full_matrices=False)
            seq[0].weight.copy_((s[:r, None] * vh[:r]).reshape(seq[0].weight.shape))
            seq[1].weight.copy_(u[:, :r].reshape(seq[1].weight.shape))
        if layer.bias is not None:
            seq[-1].bias.copy_(layer.bias.detach())
    return seq


def _tucker2(w: torch.Tensor, ranks: tuple[int, ...], iters: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Tucker-2 over the output/input channel modes: truncated HOSVD, refined by ``iters`` HOOI sweeps
    of tensorly's ``partial_tucker`` (numpy backend, no global backend switch).

    The HOSVD start comes from the eigenvectors of each unfolding's small Gram matrix: tensorly's own
    'svd' initialisation computes the full SVD of the wide unfoldings, minutes per layer on one core.
    """
    factors = [_top_vectors(u, r) for u, r in zip(_unfoldings(w), ranks, strict=True)]
    core = torch.einsum("oikl,or,is->rskl", w, factors[0], factors[1])
    if iters > 0:
        import tensorly as tl
        from tensorly.decomposition import partial_tucker

        with tl.backend_context("numpy"):
            (core_np, factors_np), _ = partial_tucker(
                w.numpy(),
                rank=list(ranks),
                modes=[0, 1],
                n_iter_max=iters,
                init=(core.numpy(), [f.numpy() for f in factors]),
                random_state=0,
            )
        core, factors = (
            torch.from_numpy(np.asarray(core_np)),
            [torch.from_numpy(np.asarray(f)) for f in factors_np],
        )
    return core, factors


def _unfoldings(w: torch.Tensor) -> list[torch.Tensor]:
    """Mode-0 (output channels) and mode-1 (input channels) unfoldings of a conv weight."""
    return [w.reshape(w.shape[0], -1), w.transpose(0, 1).reshape(w.shape[1], -1)]


def _gram_eigen(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (descending, = squared singular values) and eigenvectors of ``u @ u.T``."""
    values, vectors = torch.linalg.eigh(u @ u.T)
    return values.flip(0).clamp_min(0), vectors.flip(1)


def _top_vectors(u: torch.Tensor, r: int) -> torch.Tensor:
    return _gram_eigen(u)[1][:, :r].contiguous()


# ------------------------------------------------------------------------------------------- files


def save_lowrank(path: str | Path, model: nn.Module, card: Any, plan: list[dict[str, Any]]) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = card.to_metadata()
    meta[STRUCTURE_KEY] = json.dumps({"layers": plan})
    write_bytes(path, st_save(tensors, metadata=meta))


def load_lowrank(path: str | Path) -> tuple[nn.Module, Any]:
    """Rebuild a factorised Classifier from :func:`save_lowrank`'s file."""
    from ..artifacts import ModelCard
    from ..models import create_model

    p = Path(path)
    tensors, meta = read_safetensors(p)
    card = ModelCard.from_metadata(meta, p)
    try:
        plan = json.loads(meta[STRUCTURE_KEY])["layers"]
    except (KeyError, TypeError, json.JSONDecodeError):
        raise ModelError(
            f"'{p}' has no low-rank structure metadata; it was not written by --method lowrank"
        ) from None
    model = create_model(card.model, num_classes=len(card.classes), small_input=card.small_input)
    try:
        for item in plan:
            layer = model.get_submodule(item["name"])
            model.set_submodule(item["name"], build_factorised(layer, tuple(item["ranks"])))
        model.load_state_dict(tensors, strict=True)
    except (AttributeError, RuntimeError, KeyError, TypeError, ValueError) as err:
        raise ModelError(f"weights in '{p}' do not fit {card.model}: {str(err).splitlines()[0]}") from None
    return model.eval(), card
