"""One compression job: load a trained model and its data, compress, evaluate both, write metrics.

The whole output folder is built in a temporary sibling and renamed into place at the end, so a
failed or interrupted job never leaves a half-written result behind.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..artifacts import ModelCard, load_model
from ..errors import ConfigError, DataError, ModelError, SemicompactError
from ..io import write_json
from ..progress import say
from .base import CompressionContext, get_compressor


def resolve_source(source: str | Path) -> tuple[Path, Path | None]:
    """(model file, run folder or None) for a run folder or a .safetensors file."""
    p = Path(source)
    if p.is_dir():
        model_file, run_dir = p / "best.safetensors", p
    else:
        model_file, run_dir = p, p.parent
    if not model_file.is_file():
        raise ModelError(f"model file '{model_file}' not found; give a run folder or a .safetensors model")
    is_run = (run_dir / "config.json").is_file() and (run_dir / "split.json").is_file()
    return model_file, run_dir if is_run else None


def load_data(
    run_dir: Path | None,
    card: ModelCard,
    data: str | Path | None = None,
    split: str | Path | None = None,
    batch_size: int | None = None,
    seed: int = 0,
) -> Any:
    """The data module to fine-tune, calibrate and test on: the run's own, or ``data`` (+ ``split``)."""
    if data is None and split is None and run_dir is not None:
        from ..training.run import load_run_data

        return load_run_data(run_dir, batch_size=batch_size)
    if data is None:
        return None
    from ..data import SemiCompactDataModule, SplitManifest, make_split, open_source

    if not Path(data).exists():
        raise DataError(f"--data '{data}' does not exist; give an image folder, a .npz or a CSV manifest")
    source = open_source(data)
    manifest = SplitManifest.load(split) if split else make_split(source, seed=seed)
    if list(manifest.classes) != list(card.classes):
        raise ConfigError(
            f"the model's classes {card.classes} differ from those of --data '{data}' {manifest.classes}; "
            "calibrate and fine-tune on data with the same classes"
        )
    return SemiCompactDataModule(
        source, manifest, image_size=card.image_size, batch_size=batch_size or 32, seed=seed
    )


def test_entries(datamodule: Any, max_test: int | None, seed: int = 0) -> list[Any]:
    """Labelled test entries, a fixed random subset of ``max_test`` when asked (same for every method)."""
    entries = [e for e in datamodule.manifest.test if e[1] is not None]
    if max_test is not None and 0 < max_test < len(entries):
        keep = sorted(random.Random(seed).sample(range(len(entries)), max_test))
        entries = [entries[i] for i in keep]
    return entries


@torch.inference_mode()
def predict_probs(module: nn.Module, loader: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities and labels on CPU (works for exported/quantized graph modules too)."""
    module.eval()  # a compressor may hand back a module still in training mode (BN batch statistics)
    probs, labels = [], []
    for x, y in loader:
        if x.shape[0] == 0:
            continue
        probs.append(torch.softmax(module(x.float().div_(255.0)).float(), dim=1))
        labels.append(y)
    if not probs:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long)
    return torch.cat(probs), torch.cat(labels)


def evaluate_module(module: nn.Module, loader: Any, classes: list[str]) -> dict[str, Any]:
    """macro-F1, accuracy, n and seconds of ``module`` on ``loader`` (no per-class detail)."""
    from ..evaluate.metrics import classification_metrics, collapse_check

    start = time.perf_counter()
    probs, targets = predict_probs(module, loader)
    seconds = time.perf_counter() - start
    if len(targets) == 0:
        return {"n": 0}
    m = classification_metrics(probs, targets, classes)
    keys = ("n", "macro_f1", "f1", "accuracy", "balanced_accuracy", "roc_auc")
    return {**{k: m[k] for k in keys}, "seconds": round(seconds, 3), "collapse": collapse_check(m)}


#: a compressed model this many points of macro-F1 below its float model gets a warning
LOSS_WARNING_POINTS = 5.0


def compression_warnings(metrics: dict[str, Any]) -> list[str]:
    """What the user must not miss about a compressed model: it collapsed, or it lost many points."""
    test = metrics.get("test") or {}
    found = []
    reason = (test.get("compressed") or {}).get("collapse")
    if reason:
        found.append(f"the compressed model collapsed: {reason}")
    change = metrics.get("macro_f1_change")
    if change is not None and 100 * change <= -LOSS_WARNING_POINTS:
        found.append(
            f"the compressed model is {-100 * change:.1f} points of macro-F1 below the float model; "
            "fine-tune it longer (--finetune-epochs, --kd-alpha) or compress less"
        )
    return found


@contextlib.contextmanager
def staged_output(out: Path, overwrite: bool):
    """Yield a temporary folder beside ``out``; move it to ``out`` only when the block succeeds."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ConfigError(
            f"--out '{out}' already exists and is not empty; choose another folder or --overwrite"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the result is an ordinary folder
    try:
        yield tmp
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def run_compression(
    method: str,
    source: str | Path,
    out: str | Path,
    options: dict[str, Any] | None = None,
    *,
    data: str | Path | None = None,
    split: str | Path | None = None,
    finetune_epochs: int = 0,
    finetune_lr: float = 1e-4,
    kd_alpha: float = 0.0,
    kd_temperature: float = 4.0,
    finetune_unlabelled: int = 0,
    seed: int = 0,
    max_test: int | None = None,
    batch_size: int | None = None,
    overwrite: bool = False,
    evaluate: bool = True,
    datamodule: Any = None,
) -> dict[str, Any]:
    """Compress the model in ``source`` (run folder or .safetensors) with ``method``; returns the metrics.

    ``out/metrics.json`` holds float vs compressed macro-F1 and accuracy on the test split, the sizes
    in bytes and their ratio, and the method's options; the compressor's own files sit beside it.
    ``datamodule`` replaces the run's own data (e.g. a benchmark's fixed subset).
    """
    if finetune_epochs < 0:
        raise ConfigError(f"--finetune-epochs must be 0 or more, got {finetune_epochs}")
    if not 0.0 <= kd_alpha <= 1.0:
        raise ConfigError(f"--kd-alpha must be between 0 and 1, got {kd_alpha}")
    if kd_temperature <= 0:
        raise ConfigError(f"--kd-temperature must be positive, got {kd_temperature}")
    if finetune_unlabelled and kd_alpha <= 0:
        raise ConfigError("--finetune-unlabelled needs a teacher to learn from: set --kd-alpha above 0")
    if finetune_unlabelled < -1:
        raise ConfigError(
            f"--finetune-unlabelled must be -1 (all), 0 (none) or a count, got {finetune_unlabelled}"
        )
    compressor = get_compressor(method, **(options or {}))  # bad method/options fail before any work
    model_file, run_dir = resolve_source(source)
    model, card = load_model(model_file)
    if datamodule is None:
        datamodule = load_data(run_dir, card, data, split, batch_size, seed)
    if finetune_epochs > 0 and datamodule is None:
        raise ConfigError("--finetune-epochs needs training images: give a run folder or --data")
    out_path = Path(out)
    torch.manual_seed(seed)
    with staged_output(out_path, overwrite) as tmp:
        ctx = CompressionContext(
            model=model,
            card=card,
            out_dir=tmp,
            datamodule=datamodule,
            teacher=copy.deepcopy(model).eval() if kd_alpha > 0 else None,
            seed=seed,
            finetune_epochs=finetune_epochs,
            finetune_lr=finetune_lr,
            kd_alpha=kd_alpha,
            kd_temperature=kd_temperature,
            finetune_unlabelled=finetune_unlabelled,
        )
        start = time.perf_counter()
        say(f"compress: {method} on {card.model} (fine-tuning {finetune_epochs} epoch(s)) ...")
        try:
            result = compressor.compress(ctx)
        except SemicompactError:
            raise
        except Exception as error:  # a library failure deep inside a method: one clear line, no traceback
            first = (str(error).strip().splitlines() or [""])[0][:300]
            raise ModelError(
                f"--method {method} failed on model {card.model}: {type(error).__name__}: {first}"
            ) from error
        seconds = time.perf_counter() - start
        float_size = model_file.stat().st_size
        metrics: dict[str, Any] = {
            "method": method,
            "options": compressor.config,
            "source": str(model_file),
            "model": card.model,
            "image_size": card.image_size,
            "finetune": {
                "epochs": finetune_epochs,
                "lr": finetune_lr,
                "kd_alpha": kd_alpha,
                "kd_temperature": kd_temperature,
                "unlabelled": finetune_unlabelled,
                "seed": seed,
            },
            "files": [_relative(f, tmp) for f in result.files],
            "size_bytes": {"float": float_size, "compressed": int(result.size_bytes)},
            "size_ratio": float_size / result.size_bytes if result.size_bytes else None,
            "compress_seconds": round(seconds, 2),
            "notes": result.notes,
        }
        if evaluate and datamodule is not None:
            entries = test_entries(datamodule, max_test, seed)
            if entries:
                say(f"compress: evaluating the float and compressed models on {len(entries)} test images")
                loader = datamodule.loader_for(entries)
                before = evaluate_module(model, loader, card.classes)
                after = evaluate_module(result.module, loader, card.classes)
                metrics["test"] = {"float": before, "compressed": after}
                metrics["macro_f1_change"] = after["macro_f1"] - before["macro_f1"]
                metrics["accuracy_change"] = after["accuracy"] - before["accuracy"]
                metrics["collapse"] = after["collapse"]
        metrics["warnings"] = compression_warnings(metrics)
        write_json(tmp / "metrics.json", metrics)
    metrics["out"] = str(out_path)
    metrics["module"] = result.module  # for library callers (not written)
    return metrics


def _relative(path: str | Path, root: Path) -> str:
    p = Path(path)
    with contextlib.suppress(ValueError):
        return str(p.resolve().relative_to(root.resolve()))
    return str(p)


def parse_options(pairs: list[str] | None, defaults: dict[str, Any]) -> dict[str, Any]:
    """``["ratio=0.5", "kind=structured"]`` -> typed values (by each option's default type)."""
    options: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"--option '{pair}' must look like key=value")
        options[key] = _coerce(key, text.strip(), defaults.get(key))
    return options


def _coerce(key: str, text: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            low = text.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
        if isinstance(default, str):
            return text
    except ValueError:
        raise ConfigError(
            f"--option {key}={text}: expected a {type(default).__name__} (default {default!r})"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text
