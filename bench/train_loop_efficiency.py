"""Training-loop efficiency: images/s of the full Lightning loop over images/s of the bare model.

Full loop = reading images from the dataset, batching, on-device kornia augmentation, the Lightning
training step with logging. Bare = forward + backward + optimiser step on a random tensor of the
same shape, same batch size, same process, same thread count. Ratio 1.0 means the loop adds no cost.

Usage (from the repository root):
    .venv/bin/python bench/train_loop_efficiency.py --data ../shared/data/medmnist/bloodmnist.npz \
        --out bench/results/train_loop_efficiency.md
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import lightning as L
import torch

from semicompact.data import SemiCompactDataModule, make_split, open_source
from semicompact.io import write_text
from semicompact.models import create_model
from semicompact.training import ClassifierModule
from semicompact.training.callbacks import EpochTimer

CASES = (
    ("resnet18", 28, True),
    ("resnet18", 64, False),
    ("mobilenetv2_100", 28, True),
    ("mobilenetv2_100", 64, False),
)


def bare_rate(name: str, size: int, small: bool, k: int, batch: int, steps: int) -> float:
    torch.manual_seed(0)
    model = create_model(name, num_classes=k, small_input=small).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.rand(batch, 3, size, size)
    y = torch.randint(0, k, (batch,))
    loss_fn = torch.nn.CrossEntropyLoss()
    for i in range(steps + 3):
        if i == 3:
            start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()
    return steps * batch / (time.perf_counter() - start)


def loop_rate(name: str, size: int, small: bool, source, manifest, batch: int, steps: int) -> float:
    L.seed_everything(0, verbose=False)
    k = len(manifest.classes)
    model = create_model(name, num_classes=k, small_input=small)
    module = ClassifierModule(model, manifest.classes, head_epochs=0, epochs=2)
    dm = SemiCompactDataModule(source, manifest, image_size=size, batch_size=batch)
    timer = EpochTimer()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        limit_train_batches=steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[timer],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=dm)
    return steps * batch / timer.times[-1]  # second epoch: warm caches, no first-call overheads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    source = open_source(args.data)
    # all of train labelled so that the loop never runs out of batches
    manifest = make_split(source, n_labelled=10**6, seed=0)
    rows = []
    for name, size, small in CASES:
        bare = bare_rate(name, size, small, len(manifest.classes), args.batch, args.steps)
        full = loop_rate(name, size, small, source, manifest, args.batch, args.steps)
        rows.append((name, size, small, bare, full, full / bare))
        print(
            f"{name:16s} {size:3d}px small_input={small!s:5s} bare {bare:8.1f} img/s  "
            f"loop {full:8.1f} img/s  ratio {full / bare:.3f}",
            flush=True,
        )
    lines = [
        "# Training-loop efficiency",
        "",
        f"Command: `.venv/bin/python {' '.join(sys.argv)}`",
        "",
        f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, batch {args.batch}, {args.steps} measured steps (second epoch).",
        "",
        "| model | size (px) | small input | bare model (img/s) | full loop (img/s) | ratio (goal >= 0.85) |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {n} | {s} | {sm} | {b:.1f} | {f:.1f} | {r:.3f} |" for n, s, sm, b, f, r in rows]
    text = "\n".join(lines) + "\n"
    if args.out:
        write_text(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
