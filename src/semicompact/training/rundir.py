"""The run folder's life cycle: when it holds a run, when a failed start may be reused, resumption.

A run *has started* once training wrote a checkpoint or the run finished (``metrics.json``); only
then is the folder protected. Everything a run needs (data, split, model, weights, image size,
accelerator, a method's teachers) is checked before the first file is written, and a folder that
holds only the files of a start that failed later (no checkpoint, no metrics) is cleared and
reused, so that the same command with the mistake fixed simply works.

On ``--resume`` the stored options are used; options typed on the command line that differ from
them are refused with the list of differences, except the few in :data:`RESUME_SAFE`, which only
change how the run is shown or fed, never what it learns.
"""

from __future__ import annotations

import fcntl
import json
import pickle
import shutil
import zipfile
from pathlib import Path
from typing import Any

from ..errors import ConfigError, SemicompactError
from .config import TrainConfig

#: options a resumed run takes from the command line instead of its stored configuration
RESUME_SAFE = ("progress", "tensorboard", "num_workers")
#: the files a start writes before training begins (and that a reused failed start must not leak)
START_FILES = (
    "config.json",
    "split.json",
    "method.json",
    "train_entries.json",
    "pseudo_labels.pt",
    "pseudo_labels.csv",
    "pseudo_summary.json",
    "skipped_images.tsv",
    "schedule.json",
)
_PATH_OPTIONS = ("data", "unlabelled", "split", "weights")


_HELD: dict[str, Any] = {}  # run folder -> the open lock file this process holds


def claim(run_dir: Path) -> None:
    """Lock the run folder for this process before anything in it is written or cleared.

    A run has no checkpoint until its first validation, so without the lock a second command on
    the same folder would take a run in progress for a failed start and clear it. The lock is an
    ``fcntl`` lock on ``.lock``: the system drops it when the process ends, even after ``kill -9``.
    """
    key = str(run_dir.resolve())
    if key in _HELD:
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = open(run_dir / ".lock", "a+")  # noqa: SIM115 (held open while the run lives)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ConfigError(
            f"output folder '{run_dir}' is in use by another running semicompact command; "
            "wait for it to finish or choose another --out"
        ) from None
    _HELD[key] = handle


def release(run_dir: Path) -> None:
    """Give the folder's lock back (the run is finished)."""
    handle = _HELD.pop(str(run_dir.resolve()), None)
    if handle is not None:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def release_under(folder: Path) -> None:
    """Give back every run-folder lock this process holds in ``folder`` (a failed run never reaches
    ``release``; a long-lived process such as ``bench`` would otherwise keep the folder locked and
    a second bench process retrying that run would be refused)."""
    root = str(folder.resolve())
    for key in [k for k in _HELD if k == root or k.startswith(root + "/")]:
        release(Path(key))


def run_started(run_dir: Path) -> bool:
    """True once training wrote a checkpoint or the run finished (also inside self-training rounds)."""
    patterns = ("metrics.json", "checkpoints/*.ckpt", "rounds/*/metrics.json", "rounds/*/checkpoints/*.ckpt")
    return any(next(iter(run_dir.glob(p)), None) is not None for p in patterns)


def check_reusable(run_dir: Path) -> bool:
    """Refuse a folder holding a run (or another program's config.json); True for a failed start."""
    if run_started(run_dir):
        raise ConfigError(
            f"output folder '{run_dir}' already holds a run; "
            "pass --resume to continue it or choose another --out"
        )
    for name in ("config.json", "method.json"):
        if (run_dir / name).exists() and not _ours(run_dir / name):
            raise ConfigError(
                f"output folder '{run_dir}' has a {name} that is not a semicompact run's; "
                "choose another --out"
            )
    return any((run_dir / name).exists() for name in START_FILES) or (run_dir / "rounds").is_dir()


def _ours(path: Path) -> bool:
    """True for a config.json or method.json that semicompact wrote (never remove anyone else's)."""
    try:
        if path.name == "method.json":
            stored = json.loads(path.read_text(encoding="utf-8"))
            TrainConfig.from_dict(stored["train"])
            return isinstance(stored["method"], str)
        TrainConfig.load(path)
        return True
    except (SemicompactError, OSError, ValueError, KeyError, TypeError):
        return False


def clear_failed_start(run_dir: Path) -> bool:
    """Remove what a failed start left (never a checkpoint: there is none); True if anything was removed."""
    if not check_reusable(run_dir):
        return False
    for name in START_FILES:
        (run_dir / name).unlink(missing_ok=True)
    if (run_dir / "rounds").is_dir():
        shutil.rmtree(run_dir / "rounds")
    return True


def with_resume_safe(stored: TrainConfig, given: TrainConfig) -> TrainConfig:
    """The stored configuration with the :data:`RESUME_SAFE` options of ``given``, and its ``out``:
    a run folder moved or copied elsewhere (off a cluster) is resumed where it is now."""
    for name in (*RESUME_SAFE, "out"):
        setattr(stored, name, getattr(given, name))
    return stored


def check_accelerator(accelerator: str, devices: int) -> None:
    """Refuse an accelerator this machine lacks (or too few of its devices) before anything is written."""
    from lightning.pytorch.accelerators import AcceleratorRegistry

    name = accelerator.lower()
    if name == "auto":
        return
    known = sorted(AcceleratorRegistry.available_accelerators())
    if name != "gpu" and name not in known:
        raise ConfigError(
            f"--accelerator '{accelerator}' is unknown; use auto, gpu or one of {', '.join(known)}"
        )
    candidates = ["cuda", "mps"] if name == "gpu" else [name]
    usable = [c for c in candidates if c in known and AcceleratorRegistry[c]["accelerator"].is_available()]
    if not usable:
        what = "GPU" if name in ("gpu", "cuda", "mps") else name.upper()
        raise ConfigError(
            f"--accelerator {accelerator}: this machine has no usable {what} (PyTorch sees none); "
            "use --accelerator auto or cpu"
        )
    if usable[0] != "cpu":
        count = int(AcceleratorRegistry[usable[0]]["accelerator"].auto_device_count())
        if devices > count:
            raise ConfigError(
                f"--devices {devices}: only {count} {usable[0]} device(s) on this machine; "
                f"use --devices {count} or fewer"
            )


def check_checkpoint(path: Path) -> None:
    """A checkpoint to resume from must load safely (weights only); otherwise say how to go on."""
    import torch

    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return
    except pickle.UnpicklingError:
        why = "it holds objects a safe, weights-only load refuses"
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, zipfile.BadZipFile):
        why = "it is truncated or corrupt"
    best = path.parent / "best.ckpt"
    alternative = ""
    if best.is_file() and best != path:
        try:
            torch.load(best, map_location="cpu", weights_only=True, mmap=True)
            alternative = f"to continue from the best epoch instead, copy '{best}' over it; "
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, KeyError):
            pass
    raise ConfigError(
        f"--resume: the checkpoint '{path}' cannot be read ({why}) and is never loaded unsafely; "
        f"{alternative}to start the run again from scratch, delete '{path.parent}' and run the same "
        "command with --resume"
    )


# ------------------------------------------------------------------------------ resume differences
def stored_run(run_dir: Path) -> tuple[Path, str, dict[str, Any], dict[str, Any]] | None:
    """(file, method, train options, method options) of the run in ``run_dir``; None if there is none."""
    method_file, config_file = run_dir / "method.json", run_dir / "config.json"
    if method_file.is_file():
        try:
            stored = json.loads(method_file.read_text(encoding="utf-8"))
            train = TrainConfig.from_dict(stored["train"]).to_dict()
            return method_file, str(stored["method"]), train, dict(stored.get("options") or {})
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ConfigError(
                f"--resume: '{method_file}' is not a semicompact run description; start a new --out"
            ) from None
    if config_file.is_file():
        return config_file, "supervised", TrainConfig.load(config_file).to_dict(), {}
    return None


def _same(name: str, old: Any, new: Any) -> bool:
    if name in _PATH_OPTIONS and old is not None and new is not None:
        return Path(str(old)).expanduser().resolve() == Path(str(new)).expanduser().resolve()
    if isinstance(old, list) != isinstance(new, list):  # "a" and ["a"] are one option value
        old, new = (old if isinstance(old, list) else [old]), (new if isinstance(new, list) else [new])
    return bool(old == new)


def _show(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "(none)"
    return "(none)" if value is None else str(value)


def resume_method(
    run_dir: Path, given: dict[str, Any], method: str | None = None, options: dict[str, Any] | None = None
) -> tuple[str, dict[str, Any] | None]:
    """Check a ``--resume`` command against the stored run; returns (method, train options to pass).

    ``given`` holds only the options typed on the command line (or in --config), ``method`` is
    None unless --method was typed, ``options`` the typed --option values. Differences outside
    :data:`RESUME_SAFE` are refused, all listed in one message; the method defaults to the stored
    one, and the train options returned are the stored ones plus the typed safe ones (None when
    the folder holds no run: the method then says so).
    """
    stored = stored_run(run_dir)
    if stored is None:  # the method itself says that there is nothing to resume
        return method or "supervised", None
    where, stored_method, train, stored_options = stored
    differences = []
    if method is not None and method != stored_method:
        differences.append(f"--method {stored_method} -> {method}")
    for name, value in given.items():
        if name in RESUME_SAFE or name == "out" or name not in train:
            continue
        if not _same(name, train[name], value):
            shown = "DATA" if name == "data" else f"--{name.replace('_', '-')}"
            differences.append(f"{shown} {_show(train[name])} -> {_show(value)}")
    for name, value in (options or {}).items():
        if not _same(name, stored_options.get(name), value):
            differences.append(f"--option {name} {_show(stored_options.get(name))} -> {_show(value)}")
    if differences:
        raise ConfigError(
            f"--resume: options differ from the stored run in '{where}': {'; '.join(differences)}. "
            "Drop them to continue with the stored options, or start a new --out"
        )
    safe = {name: given[name] for name in RESUME_SAFE if name in given}
    return stored_method, {**train, **safe}
