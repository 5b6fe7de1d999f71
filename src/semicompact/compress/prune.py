"""Pruning: structured channel pruning (torch-pruning) or unstructured magnitude pruning.

``kind=structured`` removes whole channels with torch-pruning's dependency graph (residual additions,
depthwise convolutions and BatchNorm are pruned consistently), so the result is a smaller *dense*
network that needs fewer MACs and runs faster with any runtime. The classifier output layer is never
pruned. ``steps > 1`` prunes iteratively, fine-tuning after every step (the fine-tuning epochs are
shared out between the steps).

``kind=unstructured`` zeroes the smallest-magnitude weights of every conv/linear layer (per layer or
globally); the network keeps its shape, so only sparse storage (``--method deep_compression``) or a
sparse runtime turns the zeros into savings.

A structurally pruned network no longer fits ``create_model``'s shapes: the file stores the tensors in
safetensors plus, in the metadata, the new size attributes of every changed layer; :func:`load_pruned`
rebuilds the network from them (nothing is unpickled).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save
from torch import nn
from torch.nn.utils import prune as torch_prune

from ..errors import ConfigError, ModelError
from ..io import write_bytes
from .base import CompressedModel, CompressionContext, Compressor, register_compressor

IMPORTANCES = ("l1", "l2", "fpgm", "lamp", "bn", "taylor", "random")
# the layer attributes torch-pruning changes (conv, linear, norm layers, PReLU)
SHAPE_ATTRS = (
    "in_channels",
    "out_channels",
    "groups",
    "in_features",
    "out_features",
    "num_features",
    "num_channels",
    "num_groups",
    "normalized_shape",
    "num_parameters",
)
STRUCTURE_KEY = "semicompact_structure"


@register_compressor("prune")
class Prune(Compressor):
    """Channel (structured) or weight (unstructured) pruning, then fine-tuning."""

    options: ClassVar[dict[str, Any]] = {
        "kind": "structured",  # structured | unstructured
        "ratio": 0.5,  # fraction of channels (structured) or of weights (unstructured) removed
        "importance": "l1",  # structured criterion: l1 | l2 | fpgm | lamp | bn | taylor | random
        "steps": 1,  # iterative pruning: prune ratio/steps more, fine-tune, repeat
        "global_pruning": False,  # rank channels/weights across layers instead of per layer
        "round_to": 0,  # structured: keep channel counts multiples of this (0: off; 8 suits int8 kernels)
        "taylor_batches": 4,  # batches of gradients for the taylor criterion
    }

    def compress(self, ctx: CompressionContext) -> CompressedModel:
        cfg = _check_options(self.config)
        model = copy.deepcopy(ctx.model).cpu().eval()
        size = _image_size(ctx)
        example = torch.rand(1, 3, size, size)
        before = count_macs_params(model, example)
        if cfg["kind"] == "structured":
            self._structured(model, ctx, cfg, example)
        else:
            self._unstructured(model, ctx, cfg)
        model.eval()
        after = count_macs_params(model, example)
        path = Path(ctx.out_dir) / "pruned.safetensors"
        save_pruned(path, model, ctx.card, {"kind": cfg["kind"], "ratio": cfg["ratio"]})
        notes: dict[str, Any] = {
            "kind": cfg["kind"],
            "macs_before": before[0],
            "macs_after": after[0],
            "params_before": before[1],
            "params_after": after[1],
        }
        if cfg["kind"] == "unstructured":
            zeros, total = weight_sparsity(model, exclude=head_modules(model))
            notes.update(sparsity=zeros / total, zero_weights=zeros, nonzero_params=after[1] - zeros)
        return CompressedModel(module=model, files=[path], size_bytes=path.stat().st_size, notes=notes)

    # ---------------------------------------------------------------------------------- structured
    def _structured(
        self, model: nn.Module, ctx: CompressionContext, cfg: dict[str, Any], example: Any
    ) -> None:
        import torch_pruning as tp

        net = model.net
        steps = cfg["steps"]
        pruner = tp.pruner.MetaPruner(
            net,
            model.normalize(example),
            importance=_importance(cfg["importance"]),
            pruning_ratio=cfg["ratio"],
            iterative_steps=steps,
            global_pruning=cfg["global_pruning"],
            ignored_layers=[model.head],
            round_to=cfg["round_to"] or None,
        )
        per_step = epochs_per_step(ctx.finetune_epochs, steps)
        for step in range(steps):
            if cfg["importance"] == "taylor":
                _accumulate_gradients(model, ctx, cfg["taylor_batches"])
            pruner.step()
            model.zero_grad(set_to_none=True)
            if per_step[step] > 0:
                model.train()  # BatchNorm statistics follow the changed layers
                ctx.finetune(model, epochs=per_step[step])
        model.net.train(False)

    # -------------------------------------------------------------------------------- unstructured
    def _unstructured(self, model: nn.Module, ctx: CompressionContext, cfg: dict[str, Any]) -> None:
        head = head_modules(model)
        layers = [m for m in _prunable(model) if m not in head]
        if not layers:
            raise ModelError("--method prune kind=unstructured: the model has no conv/linear layer to prune")
        steps = cfg["steps"]
        per_step = epochs_per_step(ctx.finetune_epochs, steps)
        for step in range(steps):
            masks = magnitude_masks(
                [m.weight.detach() for m in layers], cfg["ratio"] * (step + 1) / steps, cfg["global_pruning"]
            )
            for module, mask in zip(layers, masks, strict=True):
                torch_prune.custom_from_mask(module, "weight", mask)
            if per_step[step] > 0:
                model.train()  # BatchNorm statistics follow the changed layers
                ctx.finetune(model, epochs=per_step[step])
            for module in layers:
                torch_prune.remove(module, "weight")


def _check_options(config: dict[str, Any]) -> dict[str, Any]:
    cfg = dict(config)
    if cfg["kind"] not in ("structured", "unstructured"):
        raise ConfigError(f"--method prune: option kind={cfg['kind']!r} must be structured or unstructured")
    r = cfg["ratio"]
    if isinstance(r, bool) or not isinstance(r, int | float) or not 0.0 < float(r) < 1.0:
        raise ConfigError(f"--method prune: option ratio={r!r} must be between 0 and 1 (exclusive), e.g. 0.5")
    cfg["ratio"] = float(r)
    if cfg["importance"] not in IMPORTANCES:
        raise ConfigError(
            f"--method prune: option importance={cfg['importance']!r} is unknown; use one of "
            + ", ".join(IMPORTANCES)
        )
    for key, low in (("steps", 1), ("round_to", 0), ("taylor_batches", 1)):
        v = cfg[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ConfigError(f"--method prune: option {key}={v!r} must be an integer >= {low}")
    if not isinstance(cfg["global_pruning"], bool):
        raise ConfigError(
            f"--method prune: option global_pruning={cfg['global_pruning']!r} must be true or false"
        )
    return cfg


def _image_size(ctx: CompressionContext) -> int:
    size = getattr(ctx.card, "image_size", None)
    return int(size) if size else 224


def epochs_per_step(total: int, steps: int) -> list[int]:
    """``total`` fine-tuning epochs shared out over ``steps`` (later steps get the remainder)."""
    base, extra = divmod(max(0, int(total)), steps)
    return [base + (1 if i >= steps - extra else 0) for i in range(steps)]


def _importance(name: str) -> Any:
    import torch_pruning as tp

    imp = tp.importance
    return {
        "l1": lambda: imp.MagnitudeImportance(p=1),
        "l2": lambda: imp.MagnitudeImportance(p=2),
        "fpgm": imp.FPGMImportance,
        "lamp": imp.LAMPImportance,
        "bn": imp.BNScaleImportance,
        "taylor": imp.TaylorImportance,
        "random": imp.RandomImportance,
    }[name]()


def _accumulate_gradients(model: nn.Module, ctx: CompressionContext, batches: int) -> None:
    """Loss gradients on a few training batches: the first-order Taylor criterion multiplies them with
    the weights. Eval mode: measuring must not move the BatchNorm statistics."""
    from torch.nn import functional as F

    dm = ctx.require_data("prune", "for importance=taylor (it needs gradients)")
    model.zero_grad(set_to_none=True)
    model.eval()
    for i, batch in enumerate(dm.train_dataloader()):
        if i >= batches:
            break
        x, y = dm.on_after_batch_transfer(batch, 0)[:2]
        F.cross_entropy(model(x), y).backward()


def _prunable(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def head_modules(model: nn.Module) -> set[nn.Module]:
    head = getattr(model, "head", None)
    return set(head.modules()) if isinstance(head, nn.Module) else set()


def magnitude_masks(weights: list[torch.Tensor], ratio: float, global_scope: bool) -> list[torch.Tensor]:
    """Masks that zero exactly ``round(ratio * n)`` smallest-magnitude entries (per tensor or overall)."""
    if global_scope:
        flat = torch.cat([w.abs().reshape(-1) for w in weights])
        keep = _keep_mask(flat, ratio)
        return [m.view_as(w) for m, w in zip(keep.split([w.numel() for w in weights]), weights, strict=True)]
    return [_keep_mask(w.abs().reshape(-1), ratio).view_as(w) for w in weights]


def _keep_mask(magnitude: torch.Tensor, ratio: float) -> torch.Tensor:
    n_zero = round(ratio * magnitude.numel())
    mask = torch.ones_like(magnitude)
    if n_zero:
        mask[torch.argsort(magnitude, stable=True)[:n_zero]] = 0.0
    return mask


def weight_sparsity(model: nn.Module, exclude: set[nn.Module] | None = None) -> tuple[int, int]:
    """``(zero weights, all weights)`` over the conv/linear weights not in ``exclude``."""
    zeros = total = 0
    for m in _prunable(model):
        if exclude and m in exclude:
            continue
        zeros += int((m.weight == 0).sum())
        total += m.weight.numel()
    return zeros, total


def count_macs_params(model: nn.Module, example: torch.Tensor) -> tuple[int, int]:
    """Multiply-accumulates of one forward pass and the parameter count (torch-pruning's counter)."""
    import torch_pruning as tp

    was_training = model.training
    model.eval()
    with torch.no_grad():
        macs, params = tp.utils.count_ops_and_params(model, example)
    model.train(was_training)
    return int(macs), int(params)


# ------------------------------------------------------------------------------------------- files


def layer_shapes(model: nn.Module) -> dict[str, dict[str, Any]]:
    """The size attributes of every layer that has them (JSON-able)."""
    out: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        attrs = {
            a: getattr(module, a) for a in SHAPE_ATTRS if isinstance(getattr(module, a, None), int | tuple)
        }
        if attrs:
            out[name] = {a: list(v) if isinstance(v, tuple) else v for a, v in attrs.items()}
    return out


def save_pruned(path: str | Path, model: nn.Module, card: Any, info: dict[str, Any] | None = None) -> None:
    """Tensors + card + the layer sizes, in one safetensors file (atomic write)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = card.to_metadata()
    meta[STRUCTURE_KEY] = json.dumps({"layers": layer_shapes(model), **(info or {})})
    write_bytes(path, st_save(tensors, metadata=meta))


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors, metadata)`` of a safetensors file, with a clear ModelError when it is unreadable."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"model file '{p}' not found")
    try:
        with safe_open(str(p), framework="pt") as fh:
            meta = fh.metadata() or {}
            tensors = {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelError(
            f"'{p}' is not a valid safetensors model file ({err}); it may be truncated"
        ) from None
    return tensors, meta


def load_pruned(path: str | Path) -> tuple[nn.Module, Any]:
    """Rebuild a (structurally) pruned Classifier from :func:`save_pruned`'s file."""
    from ..artifacts import ModelCard
    from ..models import create_model

    p = Path(path)
    tensors, meta = read_safetensors(p)
    card = ModelCard.from_metadata(meta, p)
    try:
        layers = json.loads(meta[STRUCTURE_KEY])["layers"]
    except (KeyError, TypeError, json.JSONDecodeError):
        raise ModelError(
            f"'{p}' has no pruned-structure metadata; load it with semicompact load_model"
        ) from None
    model = create_model(card.model, num_classes=len(card.classes), small_input=card.small_input)
    try:
        for name, attrs in layers.items():
            module = model.get_submodule(name)
            for attr, value in attrs.items():
                setattr(module, attr, tuple(value) if isinstance(value, list) else value)
        resize_like(model, tensors)
        model.load_state_dict(tensors, strict=True)
    except (AttributeError, RuntimeError, KeyError) as err:
        raise ModelError(f"weights in '{p}' do not fit {card.model}: {str(err).splitlines()[0]}") from None
    return model.eval(), card


def resize_like(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Give every parameter/buffer of ``model`` the shape (and dtype) of the matching saved tensor."""
    for key, saved in tensors.items():
        owner_name, _, attr = key.rpartition(".")
        owner = model.get_submodule(owner_name) if owner_name else model
        if attr in owner._parameters and owner._parameters[attr] is not None:
            old = owner._parameters[attr]
            if old.shape != saved.shape:
                owner._parameters[attr] = nn.Parameter(
                    torch.empty_like(saved), requires_grad=old.requires_grad
                )
        elif owner._buffers.get(attr) is not None and owner._buffers[attr].shape != saved.shape:
            owner._buffers[attr] = torch.empty_like(saved)
