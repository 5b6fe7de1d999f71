"""The main job end to end on the embedded synthetic cell dataset (no download, a few CPU minutes)."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .data.synthetic import make_synthetic_cells
from .io import write_text
from .training import TrainConfig, fit

#: (role, model) pairs trained by the demo: a larger teacher and a compact student.
DEMO_MODELS = (("teacher", "resnet18"), ("student", "mobilenetv2_100"))


def run_demo(out: Path, epochs: int = 12, seed: int = 0, console: Console | None = None) -> dict[str, dict]:
    """Generate the data, split it with the paper's protocol, train teacher and student, report."""
    console = console or Console()
    out = Path(out)
    start = time.perf_counter()
    data = out / "data"
    if not (data / "train").is_dir():
        console.print(f"generating the synthetic cell dataset in {data} ...")
        make_synthetic_cells(data, size=32, seed=seed)
    results: dict[str, dict] = {}
    for role, model in DEMO_MODELS:
        run = out / "runs" / f"{role}-{model}"
        console.print(f"training the {role} ({model}) ...")
        config = TrainConfig(
            data=str(data),
            out=str(run),
            model=model,
            small_input=True,
            image_size=32,
            n_labelled=75,
            batch_size=32,
            epochs=epochs,
            patience=max(3, epochs // 3),
            lr=2e-3,
            vflip=True,
            seed=seed,
            tensorboard=False,
        )
        resume = (run / "config.json").is_file()
        results[role] = fit(config, resume=resume).metrics
    table = Table(title="semicompact demo: synthetic cells, 75 labelled images per class")
    for col in ("role", "model", "test macro-F1", "accuracy", "s/epoch", "run folder"):
        table.add_column(col)
    lines = ["# semicompact demo", "", "| role | model | test macro-F1 | accuracy | s/epoch |", "|---|---|---|---|---|"]
    for (role, model), summary in zip(DEMO_MODELS, results.values(), strict=True):
        test = summary["test"]
        per_epoch = summary.get("train_time_per_epoch_s") or 0.0
        table.add_row(role, model, f"{test['macro_f1']:.3f}", f"{test['accuracy']:.3f}", f"{per_epoch:.1f}", summary["run_dir"])
        lines.append(f"| {role} | {model} | {test['macro_f1']:.3f} | {test['accuracy']:.3f} | {per_epoch:.1f} |")
    write_text(out / "summary.md", "\n".join(lines) + "\n")
    console.print(table)
    console.print(f"done in {time.perf_counter() - start:.0f} s; outputs in {out.resolve()} (summary.md, runs/*/)")
    return results
