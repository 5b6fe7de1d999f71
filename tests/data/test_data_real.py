"""The paper's split on real MedMNIST data from ../shared (skipped when it is not there)."""

from __future__ import annotations

import pytest
from _data_helpers import shared_dir

from semicompact.data.datamodule import SemiCompactDataModule
from semicompact.data.sources import open_source
from semicompact.data.split import make_split

BREAST = shared_dir() / "data" / "medmnist" / "breastmnist.npz"


@pytest.mark.skipif(not BREAST.is_file(), reason=f"real data not found: {BREAST} (set SEMICOMPACT_SHARED)")
def test_breastmnist_paper_split() -> None:
    src = open_source(BREAST, class_names=["malignant", "benign"])
    assert src.kind == "npz" and len(src.classes) == 2
    m = make_split(src, n_labelled=75, seed=0, val="official")  # the official val split, as the paper
    assert m.counts()["labelled"] == {"malignant": 75, "benign": 75}
    assert len(m.val) == len(src.items["valid"]) and len(m.test) == len(src.items["test"])
    assert len(m.unlabelled) == len(src.items["train"]) - 150
    assert all(r.startswith("val:") for r, _ in m.val) and all(r.startswith("test:") for r, _ in m.test)
    dm = SemiCompactDataModule(src, m, image_size=32, batch_size=16)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 3, 32, 32) and set(y.tolist()) <= {0, 1}
