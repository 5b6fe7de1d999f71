"""Optional per-run steps after training: the recipe's ``compress:`` list.

Each step writes ``<run>/compress/<name>/metrics.json`` (float vs compressed macro-F1, sizes) through
:func:`semicompact.compress.run.run_compression`; a finished step is skipped on a re-run. A failing
step is recorded in ``<run>/compress/<name>.error.json`` and does not fail the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..io import write_json
from .recipe import StepEntry

KEYWORDS = ("finetune_epochs", "finetune_lr", "kd_alpha", "kd_temperature", "seed", "max_test", "batch_size")


def run_compress_steps(run_dir: Path, steps: list[StepEntry]) -> None:
    from ..compress.run import run_compression

    for step in steps:
        out = run_dir / "compress" / step.name
        error_file = run_dir / "compress" / f"{step.name}.error.json"
        if (out / "metrics.json").is_file():
            continue
        keywords: dict[str, Any] = {k: v for k, v in step.options.items() if k in KEYWORDS}
        options = {k: v for k, v in step.options.items() if k not in KEYWORDS}
        try:
            run_compression(step.name, run_dir, out, options, overwrite=True, **keywords)
        except Exception as err:  # recorded, the grid goes on
            write_json(error_file, {"step": step.name, "error_type": type(err).__name__, "error": str(err)})
        else:
            error_file.unlink(missing_ok=True)
