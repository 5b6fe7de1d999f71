"""Source detection (folder, npz, csv), their errors, loading and fingerprints."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
from _data_helpers import save_png, write_npz

from semicompact.data.sources import Item, open_source
from semicompact.errors import DataError


def test_folder_layout(make_folder) -> None:
    root = make_folder(
        {"train": {"b": 3, "a": 2}, "val": {"a": 1, "b": 1}, "test": {"a": 1, "b": 2}}, unlabelled=3
    )
    src = open_source(root)
    assert src.kind == "folder" and src.classes == ["a", "b"]
    assert set(src.items) == {"train", "valid", "test", "unlabelled"}
    assert Item("train/a/img_000.png", 0) in src.items["train"]
    assert len(src.items["train"]) == 5 and len(src.items["valid"]) == 2 and len(src.items["test"]) == 3
    assert {it.label for it in src.items["unlabelled"]} == {None}
    assert sorted(it.ref for it in src.items["unlabelled"])[0] == "unlabelled/sub0/u_000.png"
    img = src.load(src.items["train"][0])
    assert img.mode == "RGB" and img.size == (8, 8)


def test_root_with_class_folders_is_train(make_folder) -> None:
    root = make_folder({"": {"cat": 2, "dog": 2}})
    save_png(root / "unlabeled" / "x.png")
    (root / ".DS_Store").write_text("junk")
    (root / "cat" / ".DS_Store").write_text("junk")
    (root / "cat" / "Thumbs.db").write_text("junk")
    src = open_source(root)
    assert src.classes == ["cat", "dog"] and src.items["train"][0].ref == "cat/img_000.png"
    assert [it.ref for it in src.items["unlabelled"]] == ["unlabeled/x.png"]


def test_separate_unlabelled_folder(make_folder, tmp_path: Path) -> None:
    root = make_folder({"train": {"a": 2, "b": 2}})
    save_png(tmp_path / "pool" / "p1.png")
    save_png(tmp_path / "pool" / "deep" / "p2.png", 3)
    (tmp_path / "pool" / "readme.txt").write_text("ignored")
    src = open_source(root, unlabelled=tmp_path / "pool")
    refs = [it.ref for it in src.items["unlabelled"]]
    assert len(refs) == 2 and all(Path(r).is_absolute() for r in refs)
    assert src.load(src.items["unlabelled"][0]).mode == "RGB"


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data path '.*nowhere' does not exist: check the path"):
        open_source(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"unlabelled folder '.*nopool' does not exist"):
        open_source(write_npz(tmp_path / "d.npz"), unlabelled=tmp_path / "nopool")


def test_empty_class_folder(make_folder) -> None:
    root = make_folder({"train": {"a": 2, "b": 2}})
    (root / "train" / "c").mkdir()
    with pytest.raises(
        DataError, match=r"class folder '.*train/c' contains no images: add images to it or remove"
    ):
        open_source(root)


def test_non_image_file_in_class_folder(make_folder) -> None:
    root = make_folder({"train": {"a": 2, "b": 2}})
    (root / "train" / "a" / "notes.txt").write_text("x")
    with pytest.raises(DataError) as err:
        open_source(root)
    msg = str(err.value)
    assert "notes.txt' is not an image file" in msg and "remove it or move it out of" in msg


def test_unknown_classes_in_test(make_folder) -> None:
    root = make_folder({"train": {"a": 2, "b": 2}, "test": {"a": 1, "zebra": 1}})
    with pytest.raises(DataError, match=r"classes 'zebra' in '.*test' have no training images: add them to"):
        open_source(root)


def test_single_class(make_folder) -> None:
    root = make_folder({"train": {"only": 3}})
    with pytest.raises(
        DataError, match=r"only one class \('only'\) found in '.*': at least 2 classes are needed"
    ):
        open_source(root)


def test_no_images(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        DataError, match=r"no images found in '.*empty': put them in '.*empty/train/<class>/'"
    ):
        open_source(tmp_path / "empty")


def test_test_without_train(make_folder) -> None:
    root = make_folder({"test": {"a": 1, "b": 1}})
    with pytest.raises(DataError, match=r"has a 'test/' folder but no 'train/' folder"):
        open_source(root)


def test_npz_source(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "m.npz", n=(30, 6, 9), k=3)
    src = open_source(path)
    assert src.kind == "npz" and src.classes == ["0", "1", "2"]
    assert [len(src.items[k]) for k in ("train", "valid", "test")] == [30, 6, 9]
    assert src.items["train"][17] == Item("train:17", 17 % 3) and src.items["valid"][3].ref == "val:3"
    img = src.load(src.items["test"][5])
    assert img.mode == "RGB" and img.size == (28, 28)
    raw = np.load(path)["test_images"][5]
    assert (np.asarray(img)[..., 1] == raw).all()
    assert "test" in src._cache
    clone = pickle.loads(pickle.dumps(src))
    assert clone._cache == {} and (np.asarray(clone.load("test:5")) == np.asarray(img)).all()
    assert src.fingerprint() == hashlib.sha256(path.read_bytes()).hexdigest()
    named = open_source(path, class_names=["x", "y", "z"])
    assert named.classes == ["x", "y", "z"]


def test_npz_colour(tmp_path: Path) -> None:
    src = open_source(write_npz(tmp_path / "c.npz", colour=True))
    assert src.load("train:0").size == (28, 28)


def test_npz_wrong_keys(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "bad.npz", drop=("val_images", "val_labels"))
    with pytest.raises(DataError) as err:
        open_source(path)
    msg = str(err.value)
    assert "bad.npz' is not a MedMNIST file" in msg
    assert "it has keys train_images, train_labels, test_images, test_labels" in msg
    assert "needs train_images, train_labels, val_images, val_labels, test_images, test_labels" in msg


def test_csv_manifest(tmp_path: Path) -> None:
    save_png(tmp_path / "imgs" / "a1.png", 1)
    save_png(tmp_path / "imgs" / "a2.png", 2)
    save_png(tmp_path / "imgs" / "b1.png", 3)
    absolute = save_png(tmp_path / "elsewhere" / "b2.png", 4)
    save_png(tmp_path / "imgs" / "u.png", 5)
    csv_path = tmp_path / "data.csv"
    csv_path.write_text(
        f"path,label,split\nimgs/a1.png,benign,train\nimgs/a2.png,benign,test\nimgs/b1.png,malignant,\n"
        f"{absolute},malignant,val\nimgs/u.png,,\n"
    )
    src = open_source(csv_path)
    assert src.kind == "csv" and src.classes == ["benign", "malignant"]
    assert src.items["train"] == [Item("imgs/a1.png", 0), Item("imgs/b1.png", 1)]
    assert src.items["test"] == [Item("imgs/a2.png", 0)]
    assert src.items["valid"] == [Item(absolute.as_posix(), 1)]
    assert src.items["unlabelled"] == [Item("imgs/u.png", None)]
    assert src.load(src.items["valid"][0]).mode == "RGB"
    assert src.fingerprint() == hashlib.sha256(csv_path.read_bytes()).hexdigest()


def test_csv_two_columns_numeric_labels(tmp_path: Path) -> None:
    for i in range(4):
        save_png(tmp_path / f"{i}.png", i)
    (tmp_path / "m.csv").write_text("path,label\n0.png,0\n1.png,1\n2.png,2\n3.png,\n")
    src = open_source(tmp_path / "m.csv")
    assert src.classes == ["0", "1", "2"] and len(src.items["train"]) == 3


def test_csv_bad_header_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("file,class\nx.png,a\n")
    expected = (
        r"CSV manifest '.*bad\.csv' has header file,class: the first line must be 'path,label\[,split\]'"
    )
    with pytest.raises(DataError, match=expected):
        open_source(tmp_path / "bad.csv")
    (tmp_path / "gone.csv").write_text("path,label\nmissing.png,a\n")
    with pytest.raises(
        DataError, match=r"image '.*missing\.png' listed in CSV manifest '.*gone\.csv' does not exist"
    ):
        open_source(tmp_path / "gone.csv")


def test_unsupported_file_kind(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(DataError, match=r"is not a folder, a \.npz or a \.csv file"):
        open_source(tmp_path / "x.json")


def test_folder_fingerprint_changes_with_files(make_folder) -> None:
    root = make_folder({"train": {"a": 2, "b": 2}})
    before = open_source(root).fingerprint()
    assert open_source(root).fingerprint() == before
    save_png(root / "train" / "a" / "new.png", 99)
    assert open_source(root).fingerprint() != before
