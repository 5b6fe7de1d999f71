"""The main job end to end on the embedded synthetic cell dataset (no download, a few CPU minutes).

Few labels, many unlabelled images: a compact student trained on the labelled images only, against
the same student trained by data distillation (that first student, with test-time transforms,
pseudo-labels the unlabelled pool: self-training); the better student is exported to ONNX int8 for
the edge and checked against the original. The student starts from ImageNet weights that come with
the install, so nothing is downloaded. An EfficientNet-Lite0 teacher was tried here: at the demo's
budget (20 labelled images per class, 24 optimiser steps) it stayed at chance level (validation
macro-F1 0.21) and selected no pseudo-label, so the demo keeps its own student as the teacher.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from .data.synthetic import make_synthetic_cells
from .io import write_text
from .models.weights import packaged_weights
from .training import TrainConfig

STUDENT = "mobilenetv2_100"
SIZE = 64
#: labelled images per class: few, so that the unlabelled pool has something to add
N_LABELLED = 25


def _config(data: Path, run: Path, epochs: int, seed: int) -> TrainConfig:
    return TrainConfig(
        data=str(data),
        out=str(run),
        model=STUDENT,
        pretrained=packaged_weights(STUDENT) is not None,
        image_size=SIZE,
        n_labelled=N_LABELLED,
        batch_size=32,
        epochs=epochs,
        patience=max(3, epochs // 3),
        lr=2e-3,
        progress=True,  # a bar on a terminal, one line per epoch in a log
        vflip=True,
        seed=seed,
        tensorboard=False,
    )


def run_demo(out: Path, epochs: int = 10, seed: int = 0, console: Console | None = None) -> dict[str, Any]:
    """Generate the data, split it with the paper's protocol, train, distil, export, report."""
    from .export.run import export_model
    from .methods import run_method

    console = console or Console()
    out = Path(out)
    start = time.perf_counter()
    data = out / "data"
    if not (data / "train").is_dir():
        console.print(f"generating the synthetic cell dataset in {data} ...")
        make_synthetic_cells(data, size=SIZE, seed=seed)
    runs = out / "runs"
    results: dict[str, Any] = {}
    for role, method, options in (
        ("student, labelled images only", "supervised", {}),
        (
            "student, data distillation",
            "data_distillation",
            {
                # the supervised student is the teacher (self-training, as in "noisy student"):
                # no extra network to train, and it is the most accurate model available here
                "teacher_runs": [str(runs / "supervised")],
                "transforms": ["hflip", "vflip", "hvflip", "gamma"],
                "max_unlabelled": 400,
            },
        ),
    ):
        run = runs / method
        extra = ", the first student as teacher, with test-time transforms" if method != "supervised" else ""
        console.print(f"training the {role} ({STUDENT}, {method}{extra}) ...")
        resume = (run / "config.json").is_file() or (run / "method.json").is_file()
        results[method] = run_method(method, _config(data, run, epochs, seed), options, resume=resume).metrics

    best = max(("supervised", "data_distillation"), key=lambda m: results[m]["test"]["macro_f1"])
    console.print(f"exporting the {best} student to ONNX int8 ...")
    # the demo always shows its export; a file below the export gate is kept and says so below
    exports = export_model(
        runs / best, out / "export", ["onnx", "onnx-int8"], overwrite=True, seed=seed, allow_disagreement=True
    )
    results["export"] = exports

    rows = [
        ("student, labelled only", STUDENT, results["supervised"]),
        ("student, data distillation", STUDENT, results["data_distillation"]),
    ]
    table = Table(title=f"semicompact demo: synthetic cells, {N_LABELLED} labelled images per class")
    for col in ("model", "network", "test macro-F1", "accuracy", "s/epoch"):
        table.add_column(col)
    lines = [
        "# semicompact demo",
        "",
        f"{N_LABELLED} labelled images per class, the rest of the training images unlabelled, {SIZE} px.",
        "",
        "| model | network | test macro-F1 | accuracy | s/epoch |",
        "|---|---|---|---|---|",
    ]
    for role, net, summary in rows:
        if not summary:
            continue
        test = summary["test"]
        cells = [role, net, f"{test['macro_f1']:.3f}", f"{test['accuracy']:.3f}"]
        cells.append(f"{summary.get('train_time_per_epoch_s') or 0.0:.1f}")
        table.add_row(*cells)
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Exported ({best} student), checked against the PyTorch model on test images:", ""]
    for fmt, check in exports.items():
        line = (
            f"- {fmt}: {check['size_bytes'] / 1e6:.2f} MB, top-1 agreement "
            f"{100 * check['top1_agreement']:.1f} %, max probability difference {check['max_prob_diff']:.4f}"
        )
        if check.get("gate", {}).get("failures"):
            line += f" (below the export gate: {'; '.join(check['gate']['failures'])})"
        lines.append(line)
        console.print(line)
    write_text(out / "summary.md", "\n".join(lines) + "\n")
    console.print(table)
    console.print(
        f"done in {time.perf_counter() - start:.0f} s; outputs in {out.resolve()} "
        "(summary.md, runs/*/, export/)"
    )
    return results
