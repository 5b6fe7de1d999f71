"""The synthetic cells: deterministic files, no brightness shortcut, learnable by a tiny CNN."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from semicompact.data.sources import open_source
from semicompact.data.synthetic import CLASSES, make_synthetic_cells, render_cells
from semicompact.errors import DataError


def test_files_layout_and_determinism(tmp_path: Path) -> None:
    a = make_synthetic_cells(tmp_path / "a", n_per_class_train=3, n_test=2, n_unlabelled=5, seed=7)
    b = make_synthetic_cells(tmp_path / "b", n_per_class_train=3, n_test=2, n_unlabelled=5, seed=7)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    src = open_source(a)
    assert src.classes == list(CLASSES) and len(src.classes) == 4
    assert [len(src.items[k]) for k in ("train", "test", "unlabelled")] == [12, 8, 5]
    assert src.load(src.items["train"][0]).size == (64, 64)
    # the same request reuses the folder; a different one refuses to overwrite it
    assert make_synthetic_cells(a, n_per_class_train=3, n_test=2, n_unlabelled=5, seed=7) == a
    with pytest.raises(DataError, match="already exists and does not hold this synthetic dataset"):
        make_synthetic_cells(a, n_per_class_train=4, n_test=2, n_unlabelled=5, seed=7)
    c = render_cells([0, 1, 2, 3], seed=8)
    assert not np.array_equal(c, render_cells([0, 1, 2, 3], seed=7))


def _data(n_per_class: int, seed: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    labels = np.arange(n_per_class * len(CLASSES)) % len(CLASSES)
    imgs = torch.from_numpy(render_cells(labels, 64, seed=seed)).permute(0, 3, 1, 2).float() / 255
    imgs = F.interpolate(imgs, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return imgs, torch.from_numpy(labels)


def _fit_logreg(x: torch.Tensor, y: torch.Tensor, xt: torch.Tensor) -> torch.Tensor:
    mu, sd = x.mean(0), x.std(0)
    x, xt = (x - mu) / sd, (xt - mu) / sd
    lin = nn.Linear(x.shape[1], len(CLASSES))
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=200)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(lin(x), y)
        loss.backward()
        return loss

    opt.step(closure)
    return lin(xt).argmax(1)


def test_mean_intensity_is_uninformative_but_a_cnn_learns() -> None:
    torch.manual_seed(0)
    x, y = _data(150, seed=11)
    xt, yt = _data(60, seed=12)
    # 1) per-image mean intensity (with its square, for a threshold band) is near chance
    feats = torch.stack([x.mean((1, 2, 3)), x.mean((1, 2, 3)) ** 2], 1)
    feats_t = torch.stack([xt.mean((1, 2, 3)), xt.mean((1, 2, 3)) ** 2], 1)
    acc_mean = (_fit_logreg(feats, y, feats_t) == yt).float().mean().item()
    assert acc_mean < 0.40, acc_mean
    # 2) a tiny CNN sees shape, count and texture
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, len(CLASSES)),
    )  # fmt: skip
    epochs, batch = 12, 32
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    steps = epochs * -(-len(y) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=5e-3, total_steps=steps)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(len(y), generator=gen).split(batch):
            opt.zero_grad()
            F.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
            sched.step()
    net.eval()
    with torch.no_grad():
        acc_cnn = (net(xt).argmax(1) == yt).float().mean().item()
    assert acc_cnn > 0.70, (acc_cnn, acc_mean)
