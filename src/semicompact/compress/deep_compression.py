"""Deep Compression (Han, Mao & Dally, ICLR 2016): prune, share weights by k-means, Huffman-code.

1. Magnitude pruning: the smallest ``sparsity`` fraction of every conv/linear weight (or, with
   ``global_pruning``, of all of them under one threshold) becomes zero and stays zero while the
   network is fine-tuned (``prune_epochs``); ``prune_steps > 1`` gets there gradually.
2. Weight sharing: the remaining weights of a layer are clustered into ``2**bits`` centroids
   (``conv_bits``, ``fc_bits``; linear initialisation as in the paper). Fine-tuning (``share_epochs``)
   then trains the centroids: the gradient of each centroid is the sum of the gradients of the weights
   that share it (autograd of the gather ``centroids[index]`` does exactly that scatter-add).
3. Huffman coding of the centroid indices and of the sparse positions, stored as relative indices
   (gaps) with ``conv_pos_bits`` / ``fc_pos_bits``; a gap too long for its width is split with filler
   symbols (symbol 0 = "advance by the maximum gap"), which plays the paper's "filler zero" role
   without storing a weight.

Everything else (biases, BatchNorm, the normalisation buffers) is stored in float32 safetensors bytes
inside the same file. File layout: ``MAGIC | u64 payload length | sha256(payload) | payload``, payload
= ``u32 header length | JSON header | sections``. The checksum makes a truncated or edited file fail
with a clear :class:`ModelError`; nothing is unpickled.
"""

from __future__ import annotations

import copy
import hashlib
import json
import struct
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils import prune as torch_prune

from ..errors import ConfigError, ModelError
from ..io import write_bytes
from . import huffman
from .base import CompressedModel, CompressionContext, Compressor, register_compressor
from .prune import epochs_per_step, head_modules, magnitude_masks

MAGIC = b"SCDCMP1\n"
_PREFIX = struct.Struct("<8sQ32s")
FILE_NAME = "deep_compressed.scdc"


@register_compressor("deep_compression")
class DeepCompression(Compressor):
    """Pruning + trained quantisation (k-means weight sharing) + Huffman coding, in one file."""

    options: ClassVar[dict[str, Any]] = {
        "sparsity": 0.9,  # fraction of each conv/linear weight tensor set to zero
        "conv_bits": 8,  # centroid index bits for convolutions (paper: 8)
        "fc_bits": 5,  # ... and for fully connected layers (paper: 5)
        "conv_pos_bits": 8,  # relative-position (gap) bits for convolutions (paper: 8)
        "fc_pos_bits": 5,  # ... and for fully connected layers (paper: 5)
        "prune_epochs": None,  # fine-tuning epochs after pruning (None: --finetune-epochs)
        "prune_steps": 1,  # reach `sparsity` in this many steps (cubic schedule), fine-tuning between
        "global_pruning": False,  # one magnitude threshold over all layers instead of `sparsity` per layer
        "share_epochs": None,  # centroid fine-tuning epochs (None: --finetune-epochs)
        "kmeans_iters": 30,
    }

    def compress(self, ctx: CompressionContext) -> CompressedModel:
        cfg = _check_options(self.config)
        model = copy.deepcopy(ctx.model).cpu().eval()
        layers = _weight_layers(model)
        if not layers:
            raise ModelError("--method deep_compression: the model has no conv or linear layer to compress")
        prune_epochs = ctx.finetune_epochs if cfg["prune_epochs"] is None else cfg["prune_epochs"]
        share_epochs = ctx.finetune_epochs if cfg["share_epochs"] is None else cfg["share_epochs"]

        # 1. magnitude pruning with fixed masks while fine-tuning; with prune_steps > 1 the sparsity
        # grows as s * (1 - (1 - t/T)^3) (Zhu & Gupta 2017): big cuts early, while the network can
        # still recover, small ones at the end. Fine-tuning runs in eval mode: the weights approximate
        # the originals, so the BatchNorm statistics stay valid, and a few steps of batch statistics
        # would only make them drift (measured).
        steps = cfg["prune_steps"]
        per_step = epochs_per_step(prune_epochs, steps)
        for step in range(1, steps + 1):
            target = cfg["sparsity"] * (1.0 - (1.0 - step / steps) ** 3)
            for module, mask in _pruning_masks(model, layers, target, cfg["global_pruning"]):
                torch_prune.custom_from_mask(module, "weight", mask)
            if per_step[step - 1] > 0:
                ctx.finetune(model, epochs=per_step[step - 1])
            if step < steps:  # fold the mask in; the next step's magnitudes rank the zeros first
                for _, module in layers:
                    torch_prune.remove(module, "weight")
        masks = {}
        for name, module in layers:
            masks[name] = module.weight_mask.detach().bool().clone()
            torch_prune.remove(module, "weight")

        # 2. k-means weight sharing, then centroid fine-tuning
        for name, module in layers:
            bits = cfg["fc_bits"] if isinstance(module, nn.Linear) else cfg["conv_bits"]
            values = module.weight.detach()[masks[name]].double().numpy()
            centroids, index = kmeans_1d(values, 2**bits, cfg["kmeans_iters"])
            shared = SharedWeight(centroids, index, masks[name], bits)
            parametrize.register_parametrization(module, "weight", shared, unsafe=True)
            module.parametrizations.weight.original.requires_grad_(False)
        if share_epochs > 0:
            ctx.finetune(model, epochs=share_epochs)
        model.eval()

        tables = {}
        for name, module in layers:
            shared = module.parametrizations.weight[0]
            tables[name] = shared
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        for _, module in layers:
            module.weight.requires_grad_(True)

        # 3. encode
        is_fc = {name: isinstance(m, nn.Linear) for name, m in layers}
        payload, layer_info = encode_model(model, ctx.card, tables, is_fc, cfg)
        path = Path(ctx.out_dir) / FILE_NAME
        write_bytes(path, payload)
        size = path.stat().st_size
        fp32 = _fp32_size(ctx.model, ctx.card)
        n_weights = sum(int(m.weight.numel()) for _, m in layers)
        n_kept = sum(int(masks[n].sum()) for n, _ in layers)
        notes = {
            "fp32_bytes": fp32,
            "ratio_vs_fp32": fp32 / size,
            "weight_sparsity": 1.0 - n_kept / n_weights,
            "compressed_layers": len(layers),
            "bits_per_kept_weight": 8
            * sum(i["index_bytes"] + i["position_bytes"] for i in layer_info)
            / max(1, n_kept),
            "layers": layer_info,
        }
        return CompressedModel(module=model, files=[path], size_bytes=size, notes=notes)


def _check_options(config: dict[str, Any]) -> dict[str, Any]:
    cfg = dict(config)
    s = cfg["sparsity"]
    if isinstance(s, bool) or not isinstance(s, int | float) or not 0.0 <= float(s) < 1.0:
        raise ConfigError(f"--method deep_compression: option sparsity={s!r} must be in [0, 1), e.g. 0.9")
    cfg["sparsity"] = float(s)
    for key in ("conv_bits", "fc_bits", "conv_pos_bits", "fc_pos_bits"):
        v = cfg[key]
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 16:
            raise ConfigError(f"--method deep_compression: option {key}={v!r} must be an integer in 1..16")
    for key in ("prune_epochs", "share_epochs"):
        v = cfg[key]
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise ConfigError(f"--method deep_compression: option {key}={v!r} must be an integer >= 0")
    v = cfg["prune_steps"]
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ConfigError(f"--method deep_compression: option prune_steps={v!r} must be an integer >= 1")
    if not isinstance(cfg["global_pruning"], bool):
        raise ConfigError(
            f"--method deep_compression: option global_pruning={cfg['global_pruning']!r} "
            "must be true or false"
        )
    v = cfg["kmeans_iters"]
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ConfigError(f"--method deep_compression: option kmeans_iters={v!r} must be an integer >= 1")
    return cfg


def _pruning_masks(
    model: nn.Module, layers: list[tuple[str, nn.Module]], sparsity: float, global_scope: bool
) -> list[tuple[nn.Module, torch.Tensor]]:
    """Magnitude masks per layer, or under one threshold for the body. The head is always pruned on
    its own: its weights start small, and one global threshold would cut the classifier entirely."""
    modules = [m for _, m in layers]
    if global_scope:
        head = head_modules(model)
        groups = [[m for m in modules if m not in head], [m for m in modules if m in head]]
    else:
        groups = [modules]
    pairs = []
    for group in groups:
        if group:
            masks = magnitude_masks([m.weight.detach() for m in group], sparsity, global_scope)
            pairs += list(zip(group, masks, strict=True))
    return pairs


def _weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every conv and linear layer (state-dict prefix, module), the head included as in the paper."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def kmeans_1d(values: np.ndarray, k: int, iters: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means on scalars with linear initialisation (the paper's best choice).

    In one dimension clusters are intervals of the sorted values: each iteration finds the k-1
    boundaries by ``searchsorted`` and the cluster sums from a cumulative sum, O(k log n) instead of
    scipy's O(n k) distance matrix. Returns ``(centroids float32, index int64)``.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        return np.zeros(1, dtype=np.float32), np.zeros(0, dtype=np.int64)
    k = max(1, min(k, values.size))
    if k == 1:
        return np.array([values.mean()], dtype=np.float32), np.zeros(values.size, dtype=np.int64)
    ordered = np.sort(values)
    cumsum = np.concatenate([[0.0], np.cumsum(ordered)])
    centroids = np.linspace(ordered[0], ordered[-1], k)
    for _ in range(iters):
        bounds = np.concatenate(
            [[0], np.searchsorted(ordered, (centroids[1:] + centroids[:-1]) / 2), [values.size]]
        )
        counts = np.diff(bounds)
        sums = cumsum[bounds[1:]] - cumsum[bounds[:-1]]
        new = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)  # empty clusters stay put
        done = np.allclose(new, centroids, rtol=0, atol=1e-12)
        centroids = np.sort(new)
        if done:
            break
    index = np.searchsorted((centroids[1:] + centroids[:-1]) / 2, values)
    return centroids.astype(np.float32), index.astype(np.int64)


class SharedWeight(nn.Module):
    """Parametrisation ``weight = scatter(centroids[index])`` at the kept positions, zero elsewhere."""

    def __init__(self, centroids: np.ndarray, index: np.ndarray, mask: torch.Tensor, bits: int) -> None:
        super().__init__()
        self.bits = bits
        self.centroids = nn.Parameter(torch.from_numpy(np.asarray(centroids, dtype=np.float32)).clone())
        self.register_buffer("index", torch.from_numpy(np.asarray(index, dtype=np.int64)).clone())
        self.register_buffer("positions", torch.nonzero(mask.reshape(-1)).squeeze(1))
        self.shape = tuple(mask.shape)

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        flat = torch.zeros(original.numel(), dtype=self.centroids.dtype, device=self.centroids.device)
        flat = flat.index_put((self.positions,), self.centroids[self.index])
        return flat.view(self.shape)


# ------------------------------------------------------------------------------------ file format


def gaps_to_symbols(positions: np.ndarray, pos_bits: int) -> np.ndarray:
    """Sorted flat positions -> gap symbols in ``[0, 2**pos_bits)``; 0 is a filler (advance by max)."""
    cap = (1 << pos_bits) - 1
    gaps = np.diff(np.concatenate([[-1], np.asarray(positions, dtype=np.int64)]))
    fillers = (gaps - 1) // cap
    rest = gaps - fillers * cap
    out = np.zeros(int((fillers + 1).sum()), dtype=np.int64)
    out[np.cumsum(fillers + 1) - 1] = rest
    return out


def symbols_to_positions(symbols: np.ndarray, pos_bits: int) -> np.ndarray:
    cap = (1 << pos_bits) - 1
    symbols = np.asarray(symbols, dtype=np.int64)
    advance = np.where(symbols == 0, cap, symbols)
    return (np.cumsum(advance) - 1)[symbols != 0]


def encode_model(
    model: nn.Module,
    card: Any,
    tables: dict[str, SharedWeight],
    is_fc: dict[str, bool],
    cfg: dict[str, Any],
) -> tuple[bytes, list[dict[str, Any]]]:
    """The whole compressed file as bytes, and per-layer size statistics."""
    sections: list[bytes] = []
    layers = []
    shared_keys = set()
    for name, shared in tables.items():
        pos_bits = cfg["fc_pos_bits"] if is_fc[name] else cfg["conv_pos_bits"]
        centroids = shared.centroids.detach().float().numpy().astype("<f4").tobytes()
        index = huffman.pack(shared.index.numpy(), 2**shared.bits)
        gap_symbols = gaps_to_symbols(shared.positions.numpy(), pos_bits)
        positions = huffman.pack(gap_symbols, 2**pos_bits)
        sections += [centroids, index, positions]
        key = f"{name}.weight"
        shared_keys.add(key)
        layers.append(
            {
                "key": key,
                "shape": list(shared.shape),
                "bits": shared.bits,
                "pos_bits": pos_bits,
                "kept": int(shared.index.numel()),
                "centroid_bytes": len(centroids),
                "index_bytes": len(index),
                "position_bytes": len(positions),
            }
        )
    rest = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k not in shared_keys}
    rest_bytes = st_save(rest)
    sections.append(rest_bytes)
    header = {
        "format": "semicompact-deep-compression",
        "version": 1,
        "card": asdict(card),
        "layers": layers,
        "rest_bytes": len(rest_bytes),
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    payload = struct.pack("<I", len(head)) + head + b"".join(sections)
    digest = hashlib.sha256(payload).digest()
    return _PREFIX.pack(MAGIC, len(payload), digest) + payload, layers


def load_deep_compressed(path: str | Path) -> tuple[nn.Module, Any]:
    """Rebuild the float model (a Classifier) and its ModelCard from a Deep Compression file."""
    from ..artifacts import ModelCard
    from ..models import create_model

    p = Path(path)
    if not p.is_file():
        raise ModelError(f"compressed model file '{p}' not found")
    data = p.read_bytes()
    bad = f"'{p}' is not a valid Deep Compression file"
    if len(data) < _PREFIX.size:
        raise ModelError(f"{bad}: it is truncated ({len(data)} bytes); write it again")
    magic, length, digest = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise ModelError(
            f"{bad}: wrong magic bytes (written by `semicompact compress --method deep_compression`?)"
        )
    payload = memoryview(data)[_PREFIX.size :]
    if len(payload) != length:
        raise ModelError(f"{bad}: it has {len(payload)} payload bytes, its header says {length} (truncated)")
    if hashlib.sha256(payload).digest() != digest:
        raise ModelError(f"{bad}: checksum mismatch, the file is corrupted; write it again")
    try:
        (head_len,) = struct.unpack_from("<I", payload)
        header = json.loads(bytes(payload[4 : 4 + head_len]))
        card = ModelCard(**header["card"])
        pos = 4 + head_len
        weights = {}
        for layer in header["layers"]:
            shape = tuple(layer["shape"])
            end = pos + layer["centroid_bytes"]
            centroids = np.frombuffer(payload[pos:end], dtype="<f4")
            index, pos = huffman.unpack(payload, end)
            gap_symbols, pos = huffman.unpack(payload, pos)
            positions = symbols_to_positions(gap_symbols, layer["pos_bits"])
            flat = np.zeros(int(np.prod(shape)), dtype=np.float32)
            flat[positions] = centroids[index]
            weights[layer["key"]] = torch.from_numpy(flat.reshape(shape))
        rest = st_load(bytes(payload[pos : pos + header["rest_bytes"]]))
    except (KeyError, TypeError, ValueError, IndexError, struct.error, SafetensorError) as err:
        raise ModelError(f"{bad}: its content is inconsistent ({err})") from None
    model = create_model(card.model, num_classes=len(card.classes), small_input=card.small_input)
    try:
        model.load_state_dict({**rest, **weights}, strict=True)
    except RuntimeError as err:
        raise ModelError(f"{bad}: weights do not fit {card.model}: {str(err).splitlines()[0]}") from None
    return model.eval(), card


def _fp32_size(model: nn.Module, card: Any) -> int:
    """Bytes of the float32 safetensors file that ``save_model`` writes for ``model``."""
    tensors = {
        k: v.detach().cpu().float().contiguous() if v.is_floating_point() else v.detach().cpu()
        for k, v in model.state_dict().items()
    }
    return len(st_save(tensors, metadata=card.to_metadata()))
