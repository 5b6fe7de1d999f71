"""The paper's split: sizes, determinism, no overlap, manifest round trip and fingerprint check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _data_helpers import save_png, write_npz

from semicompact.data.sources import open_source
from semicompact.data.split import SplitManifest, make_split
from semicompact.errors import DataError


@pytest.fixture
def three_classes(make_folder) -> Path:
    return make_folder({"train": {"big": 120, "mid": 100, "small": 40}}, unlabelled=6)


def _refs(rows: list[list]) -> set[str]:
    return {r for r, _ in rows}


def test_split_sizes_and_no_overlap(three_classes: Path) -> None:
    src = open_source(three_classes)
    m = make_split(src, n_labelled=75, seed=0, val="official")
    counts = m.counts()
    assert counts["test"] == {"big": 30, "mid": 25, "small": 10}  # 25% per class
    assert counts["val"] == {"big": 9, "mid": 8, "small": 3}  # 10% of the rest
    assert counts["labelled"] == {"big": 75, "mid": 67, "small": 27}
    assert counts["unlabelled"] == {"big": 6, "mid": 0, "small": 0, "unknown": 6}
    assert any("class 'mid' has only 67" in n for n in m.notes)
    assert any("class 'small' has only 27" in n for n in m.notes)
    subsets = [_refs(getattr(m, k)) for k in ("labelled", "unlabelled", "val", "test")]
    for i in range(4):
        for j in range(i + 1, 4):
            assert not subsets[i] & subsets[j]
    every = {it.ref for items in src.items.values() for it in items}
    assert set().union(*subsets) == every
    truth = {it.ref: it.label for it in src.items["train"]}
    assert all(truth[r] == lab for r, lab in m.unlabelled if lab is not None)  # true labels kept


def test_split_deterministic(three_classes: Path) -> None:
    src = open_source(three_classes)
    a, b = make_split(src, seed=3), make_split(src, seed=3)
    assert a.to_dict() == b.to_dict()
    c = make_split(src, seed=4)
    assert a.labelled != c.labelled and a.test == c.test  # the test split is fixed across seeds
    # more labels: the same test and val sets, a superset of labelled images
    a, d = make_split(src, seed=3, val="official"), make_split(src, n_labelled=90, seed=3, val="official")
    assert d.test == a.test and d.val == a.val and _refs(a.labelled) <= _refs(d.labelled)


def test_split_uses_own_valid_and_test(make_folder) -> None:
    root = make_folder({"train": {"a": 10, "b": 10}, "valid": {"a": 2, "b": 2}, "test": {"a": 3, "b": 3}})
    m = make_split(open_source(root), n_labelled=4, val="official")
    assert len(m.test) == 6 and all(r.startswith("test/") for r, _ in m.test)
    assert len(m.val) == 4 and all(r.startswith("valid/") for r, _ in m.val)
    assert len(m.labelled) == 8 and len(m.unlabelled) == 12


def test_split_npz_official_splits(tmp_path: Path) -> None:
    src = open_source(write_npz(tmp_path / "m.npz", n=(60, 9, 12), k=3))
    m = make_split(src, n_labelled=5, val="official")
    assert len(m.labelled) == 15 and len(m.unlabelled) == 45 and len(m.val) == 9 and len(m.test) == 12
    assert all(r.startswith("val:") for r, _ in m.val)
    assert m.val_source == "official"


def test_validation_comes_out_of_the_label_budget_by_default(three_classes: Path) -> None:
    """75 labels per class are 60 for training and 15 for validation; no other label is used."""
    src = open_source(three_classes)
    m = make_split(src, n_labelled=75, seed=0)
    counts = m.counts()
    assert m.val_source == "labelled" and m.val_share == 0.2
    assert counts["val"] == {"big": 15, "mid": 15, "small": 6}  # 20 % of 75, 75 and 30 labels
    assert counts["labelled"] == {"big": 60, "mid": 60, "small": 24}
    assert counts["test"] == {"big": 30, "mid": 25, "small": 10}
    # nothing is carved out of train for validation: the rest is unlabelled
    assert counts["unlabelled"] == {"big": 15, "mid": 0, "small": 0, "unknown": 6}
    assert not _refs(m.val) & _refs(m.labelled)
    official = make_split(src, n_labelled=75, seed=0, val="official")
    labels_used = len(official.labelled) + len(official.val)
    assert len(m.labelled) + len(m.val) == 75 + 75 + 30 < labels_used + 15  # official: 169 + 20
    with pytest.raises(
        DataError, match=r"--val is 'both': use labelled \(inside the label budget\) or official"
    ):
        make_split(src, val="both")


def test_own_validation_split_is_not_used_inside_the_budget(make_folder) -> None:
    """A source's own validation split would hold labels beyond the budget: it is left out."""
    root = make_folder({"train": {"a": 10, "b": 10}, "valid": {"a": 2, "b": 2}, "test": {"a": 3, "b": 3}})
    own = make_split(open_source(root), n_labelled=5)
    assert not any(r.startswith("valid/") for r, _ in own.val + own.labelled + own.unlabelled)
    assert own.counts()["val"] == {"a": 1, "b": 1} and own.counts()["labelled"] == {"a": 4, "b": 4}
    assert any("validation split is not used" in n for n in own.notes)


def test_manifest_round_trip_and_fingerprint(three_classes: Path, tmp_path: Path) -> None:
    src = open_source(three_classes)
    m = make_split(src, seed=1)
    m.save(tmp_path / "split.json")
    raw = json.loads((tmp_path / "split.json").read_text())
    assert raw["format"] == "semicompact-split/1" and raw["labelled"][0][0] == m.labelled[0][0]
    loaded = SplitManifest.load(tmp_path / "split.json", source=src)
    assert loaded == m
    save_png(three_classes / "train" / "big" / "extra.png", 77)
    changed = open_source(three_classes)
    with pytest.raises(
        DataError, match=r"the data in .* changed since the split was made; re-run semicompact split"
    ):
        SplitManifest.load(tmp_path / "split.json", source=changed)


def test_manifest_load_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"split file '.*none\.json' does not exist"):
        SplitManifest.load(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match=r"split file '.*bad\.json' is not a valid semicompact split"):
        SplitManifest.load(tmp_path / "bad.json")


def test_bad_split_options(three_classes: Path) -> None:
    src = open_source(three_classes)
    with pytest.raises(DataError, match="--n-labelled"):
        make_split(src, n_labelled=0)
    with pytest.raises(DataError, match="--test-fraction"):
        make_split(src, test_fraction=1.5)
