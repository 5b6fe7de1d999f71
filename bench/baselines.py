"""Supervised baselines on real data with the paper's protocol (75 labelled images per class).

MedMNIST: official val and test splits; MobileNetV2 from the ImageNet weights in ../shared/weights
(inputs upsampled to 64 px, two-stage transfer learning) and a small-input ResNet-18 from scratch
at 28 px. HAM10000 (image folder, official ISIC 2018 test set) with MobileNetV2 at 128 px.
These are the numbers every semi-supervised method must beat.

Usage (from the repository root):
    .venv/bin/python bench/baselines.py --shared ../shared --out bench/results/baselines
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from semicompact.io import write_json, write_text
from semicompact.training import TrainConfig, fit

MEDMNIST = ("bloodmnist", "pneumoniamnist", "breastmnist", "retinamnist")


def cases(shared: Path, epochs: int) -> list[tuple[str, str, dict]]:
    """(dataset, label, options) of every baseline run."""
    weights = str(shared / "weights" / "mobilenet_v2-b0353104.pth")
    out = []
    for name in MEDMNIST:
        data = str(shared / "data" / "medmnist" / f"{name}.npz")
        out.append(
            (
                name,
                "mobilenetv2_100 (ImageNet, 64 px)",
                dict(data=data, model="mobilenetv2_100", weights=weights, image_size=64, epochs=epochs),
            )
        )
        out.append(
            (
                name,
                "resnet18 small-input (scratch, 28 px)",
                dict(data=data, model="resnet18", small_input=True, image_size=28, epochs=epochs),
            )
        )
    out.append(
        (
            "ham10000",
            "mobilenetv2_100 (ImageNet, 128 px)",
            dict(
                data=str(shared / "data" / "ham10000"),
                model="mobilenetv2_100",
                weights=weights,
                image_size=128,
                epochs=epochs,
            ),
        )
    )
    return out


def _row(dataset: str, label: str, run: Path) -> dict:
    summary = json.loads((run / "metrics.json").read_text())
    config = json.loads((run / "config.json").read_text())
    test = summary["test"]
    return dict(
        dataset=dataset,
        model=label,
        macro_f1=test["macro_f1"],
        f1=test["f1"],
        accuracy=test["accuracy"],
        epochs=summary["epochs_trained"],
        max_epochs=summary["head_epochs"] + config["epochs"],
        s_per_epoch=summary["train_time_per_epoch_s"],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/baselines"))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default=None, help="run only datasets whose name contains this")
    args = parser.parse_args()
    rows = []
    for dataset, label, options in cases(args.shared, args.epochs):
        if args.only and args.only not in dataset:
            continue
        run = args.out / "runs" / f"{dataset}-{options['model']}-{options['image_size']}-s{args.seed}"
        if not (run / "metrics.json").is_file():  # finished runs are kept; unfinished ones resume
            config = TrainConfig(
                out=str(run),
                n_labelled=75,
                batch_size=32,
                patience=8,
                lr=1e-3,
                seed=args.seed,
                progress=False,
                tensorboard=False,
                **options,
            )
            fit(config, resume=(run / "config.json").is_file())
        print(json.dumps(_row(dataset, label, run)), flush=True)
    # the tables list every finished run (also those of earlier invocations, e.g. with --only)
    for dataset, label, options in cases(args.shared, args.epochs):
        run = args.out / "runs" / f"{dataset}-{options['model']}-{options['image_size']}-s{args.seed}"
        if (run / "metrics.json").is_file():
            rows.append(_row(dataset, label, run))
    write_json(args.out / "baselines.json", rows)
    lines = [
        "# Supervised baselines (paper protocol: 75 labelled images per class)",
        "",
        f"Command: `.venv/bin/python {' '.join(sys.argv)}` (seed {args.seed}; epochs include the two"
        " head-only epochs of the pretrained models; early stopping on validation macro-F1, patience 8)."
        " s/epoch is wall time of a training epoch on the 2-core machine, measured while other jobs ran:"
        " a rough cost, not a speed comparison (bench/results/train_loop_efficiency.md is).",
        "",
        "| dataset | model | test macro-F1 | test F1 (paper) | accuracy | epochs run / max | s/epoch |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['dataset']} | {r['model']} | {r['macro_f1']:.4f} | {r['f1']:.4f} | {r['accuracy']:.4f} | "
        f"{r['epochs']} / {r['max_epochs']} | {r['s_per_epoch']:.1f} |"
        for r in rows
    ]
    write_text(args.out / "baselines.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
