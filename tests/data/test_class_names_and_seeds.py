"""MedMNIST files show their official class names; old numbered splits still load; the test split
stays the same across seeds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _data_helpers import write_npz
from _shared import REPO, require_shared

from semicompact.data import make_split, open_source
from semicompact.data.medmnist import MEDMNIST_CLASSES, medmnist_class_names, medmnist_set
from semicompact.data.split import SplitManifest
from semicompact.errors import DataError

BLOOD = [
    "basophil",
    "eosinophil",
    "erythroblast",
    "immature granulocytes",
    "lymphocyte",
    "monocyte",
    "neutrophil",
    "platelet",
]


@pytest.mark.parametrize("name", ["bloodmnist.npz", "bloodmnist_64.npz", "BloodMNIST_224.npz"])
def test_medmnist_files_get_their_official_class_names(tmp_path: Path, name: str) -> None:
    source = open_source(write_npz(tmp_path / name, n=(16, 8, 8), k=8))
    assert source.classes == BLOOD
    assert make_split(source, n_labelled=1).classes == BLOOD


def test_the_other_sets_and_what_is_not_recognised(tmp_path: Path) -> None:
    breast = open_source(write_npz(tmp_path / "breastmnist.npz", k=2)).classes
    assert breast == ["malignant", "normal, benign"]
    assert open_source(write_npz(tmp_path / "pneumoniamnist_128.npz", k=2)).classes == ["normal", "pneumonia"]
    retina = open_source(write_npz(tmp_path / "retinamnist.npz", n=(20, 5, 5), k=5)).classes
    assert retina == ["grade 0", "grade 1", "grade 2", "grade 3", "grade 4"]
    assert medmnist_class_names("organsmnist.npz", 11)[9] == "pancreas"
    assert len(MEDMNIST_CLASSES["dermamnist"]) == 7 and medmnist_set("pathmnist_28.npz") == "pathmnist"
    # another name, another size suffix, a CSV, a label count that does not fit: numbered classes
    for name, k in (("blood.npz", 8), ("bloodmnist_100.npz", 8), ("bloodmnist.npz", 3)):
        assert open_source(write_npz(tmp_path / name, n=(9, 3, 3), k=k)).classes == [str(i) for i in range(k)]
    assert medmnist_set("bloodmnist.csv") is None


def test_user_class_names_win(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "pneumoniamnist.npz", k=2)
    assert open_source(path, class_names=["healthy", "sick"]).classes == ["healthy", "sick"]


def test_a_split_made_with_numbered_classes_still_loads(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "bloodmnist.npz", n=(16, 8, 8), k=8)
    source = open_source(path)
    old = make_split(source, n_labelled=1)
    old.classes = [str(i) for i in range(8)]  # as written before the names were known
    old.save(tmp_path / "split.json")
    SplitManifest.load(tmp_path / "split.json", source=source)  # no error
    other = make_split(source, n_labelled=1)
    other.classes = [str(i) for i in range(7)] + ["x"]
    with pytest.raises(DataError, match="differ from those of the split"):
        other.check_source(source)


def test_committed_bench_splits_still_load() -> None:
    """The committed manifests of bench/results (numbered classes) against the real files."""
    path = REPO / "bench/results/ssl_medmnist_64/runs/breastmnist__mobilenetv2_100__supervised__s1/split.json"
    manifest = SplitManifest.load(path)
    assert manifest.classes == ["0", "1"] and manifest.test_seed is None
    source = open_source(require_shared("data", "medmnist", "breastmnist.npz"))
    assert source.classes == ["malignant", "normal, benign"]
    manifest.check_source(source)


def test_the_test_split_is_the_same_for_every_seed(cells_dir: Path) -> None:
    source = open_source(cells_dir)
    source.items.pop("test")  # no test/ folder: the test split is drawn from train
    splits = [make_split(source, n_labelled=10, seed=seed) for seed in (0, 1, 2)]
    assert splits[0].test == splits[1].test == splits[2].test
    assert [s.test_seed for s in splits] == [0, 0, 0]
    assert splits[0].labelled != splits[1].labelled  # the seed still changes the labelled images
    assert "test: a stratified 25% of train (test seed 0)" in splits[1].notes
    asked = make_split(source, n_labelled=10, seed=1, test_seed=7)
    assert asked.test_seed == 7 and asked.test != splits[0].test
    legacy = make_split(source, n_labelled=10, seed=1, test_seed=None)  # the old behaviour
    assert legacy.test_seed == 1 and legacy.test != splits[0].test
    # seed 0 draws the test images it always drew: committed seed-0 splits are unchanged
    assert make_split(source, n_labelled=10, seed=0, test_seed=None).test == splits[0].test
    assert json.loads(json.dumps(asked.to_dict()))["test_seed"] == 7


def test_a_source_test_split_records_no_test_seed(cells_dir: Path) -> None:
    manifest = make_split(open_source(cells_dir), n_labelled=10, seed=3)
    assert manifest.test_seed is None and "test: the source's own test split" in manifest.notes


def test_split_command_takes_a_test_seed(cells_dir: Path, tmp_path: Path) -> None:
    import shutil

    from semicompact.cli.main import main

    data = tmp_path / "cells"
    shutil.copytree(cells_dir / "train", data / "train")  # no test/ folder: the test split is drawn
    tests = []
    for seed, test_seed in ((0, None), (5, None), (5, "3")):
        out = tmp_path / f"s{seed}-{test_seed}.json"
        argv = ["split", str(data), "--n-labelled", "10", "--seed", str(seed), "--out", str(out)]
        argv += ["--test-seed", test_seed] if test_seed else []
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 0
        manifest = SplitManifest.load(out)
        assert manifest.test_seed == (int(test_seed) if test_seed else 0)
        tests.append(manifest.test)
    assert tests[0] == tests[1] != tests[2]
