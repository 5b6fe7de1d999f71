"""Dataset sources on disk: image folders, MedMNIST ``.npz`` files and CSV manifests.

One :class:`DataSource` hides the storage so that the split, the datasets and the CLI never care
where the pixels live. Opening a source validates the layout up front, so that mistakes (a stray
file, a missing class) are reported before any training starts, with a message saying how to fix it.
"""

from __future__ import annotations

import csv
import hashlib
import os
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from semicompact.data.images import IMAGE_EXTENSIONS, is_image_file, load_for_model
from semicompact.data.medmnist import medmnist_class_names
from semicompact.errors import DataError
from semicompact.io import sha256_file

SPLIT_KEYS = ("train", "valid", "test", "unlabelled")
HIDDEN_FILES = frozenset({"thumbs.db", "desktop.ini", "ehthumbs.db"})
_SPLIT_DIRS = {"train": ("train",), "valid": ("valid", "val"), "test": ("test",)}
_UNLABELLED_DIRS = ("unlabelled", "unlabeled")
_NPZ_SPLITS = {"train": "train", "val": "valid", "test": "test"}
CSV_HEADER = "path,label[,split]"


@dataclass(frozen=True)
class Item:
    """One image: a path relative to the source (folder/csv), or "split:index" for npz."""

    ref: str
    label: int | None


@dataclass
class DataSource:
    """A dataset on disk; see docs/architecture.md (Sources)."""

    kind: str  # "folder" | "npz" | "csv"
    root: Path  # the folder, the .npz or the .csv file
    classes: list[str]
    items: dict[str, list[Item]]
    unlabelled_root: Path | None = None  # a separate flat folder of unlabelled images
    _cache: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    # -- pickling: DataLoader workers must not receive (or share) the cached npz arrays
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    @property
    def base_dir(self) -> Path:
        """Folder that relative refs are resolved against."""
        return self.root if self.kind == "folder" else self.root.parent

    def path_of(self, ref: str) -> Path:
        """File path for a folder/csv ref (absolute refs are kept as they are)."""
        p = Path(ref)
        return p if p.is_absolute() else self.base_dir / p

    def array(self, ref: str) -> np.ndarray:
        """Raw uint8 pixels of an npz item, (H, W) or (H, W, 3); the arrays are loaded once per process."""
        split, _, index = ref.partition(":")
        if split not in self._cache:
            try:
                with np.load(self.root, allow_pickle=False) as npz:
                    self._cache[split] = np.asarray(npz[f"{split}_images"])
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
                raise DataError(
                    f"cannot read '{split}_images' from '{self.root}' ({exc}): re-download the .npz file"
                ) from None
        return self._cache[split][int(index)]

    def load(self, item: Item | str) -> Image.Image:
        """The item's image as RGB 8-bit PIL image; raises ImageReadError for unreadable files."""
        ref = item.ref if isinstance(item, Item) else item
        if self.kind == "npz":
            arr = self.array(ref)
            if arr.dtype != np.uint8:
                from semicompact.data.images import _scale_to_uint8

                arr = _scale_to_uint8(arr)
            if arr.ndim == 3 and arr.shape[-1] == 1:
                arr = arr[..., 0]
            mode = "L" if arr.ndim == 2 else "RGB"
            return Image.fromarray(np.ascontiguousarray(arr), mode=mode).convert("RGB")
        return load_for_model(self.path_of(ref))

    def fingerprint(self) -> str:
        """SHA-256 of the source: file bytes (npz/csv) or sorted 'relative path, size' lines (folder)."""
        if self.kind != "folder":
            return sha256_file(self.root)
        lines = []
        for items in self.items.values():
            for it in items:
                try:
                    size = self.path_of(it.ref).stat().st_size
                except OSError:
                    size = -1
                lines.append(f"{it.ref}\t{size}\n")
        h = hashlib.sha256()
        for line in sorted(lines):
            h.update(line.encode("utf-8"))
        return h.hexdigest()

    def counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.items.items()}


def open_source(
    path: str | os.PathLike[str],
    unlabelled: str | os.PathLike[str] | None = None,
    class_names: list[str] | None = None,
) -> DataSource:
    """Detect the kind of ``path`` (folder, .npz, .csv) and open it, validating the layout."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"data path '{p}' does not exist: check the path (a folder, a .npz or a .csv file)")
    if p.is_dir():
        source = _open_folder(p.resolve(), class_names)
    elif p.suffix.lower() == ".npz":
        source = _open_npz(p.resolve(), class_names)
    elif p.suffix.lower() == ".csv":
        source = _open_csv(p.resolve(), class_names)
    else:
        raise DataError(
            f"data path '{p}' is not a folder, a .npz or a .csv file: pass an image folder "
            "(train/<class>/...), a MedMNIST .npz file or a CSV manifest"
        )
    if unlabelled is not None:
        _add_unlabelled_folder(source, Path(unlabelled).expanduser())
    return source


# ---------------------------------------------------------------------------------------------- folder
def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".") or path.name.lower() in HIDDEN_FILES


def _walk_files(folder: Path) -> Iterable[Path]:
    """All non-hidden files below ``folder`` (hidden folders such as .ipynb_checkpoints skipped)."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            f = Path(dirpath) / name
            if not _is_hidden(f):
                yield f


def _find_dir(root: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        if (root / name).is_dir():
            return root / name
    return None


def _scan_class_dir(root: Path, class_dir: Path) -> list[str]:
    refs = []
    for f in _walk_files(class_dir):
        if not is_image_file(f):
            exts = ", ".join(sorted(IMAGE_EXTENSIONS))
            raise DataError(
                f"'{f}' is not an image file (supported: {exts}): remove it or move it out of '{class_dir}'"
            )
        refs.append(f.relative_to(root).as_posix())
    if not refs:
        raise DataError(
            f"class folder '{class_dir}' contains no images: add images to it or remove the folder"
        )
    return refs


def _scan_split(root: Path, split_dir: Path, skip: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Map class name -> refs for one split folder of class sub-folders."""
    out: dict[str, list[str]] = {}
    for entry in sorted(split_dir.iterdir()):
        if _is_hidden(entry) or entry.name in skip:
            continue
        if entry.is_dir():
            out[entry.name] = _scan_class_dir(root, entry)
        elif is_image_file(entry):
            raise DataError(
                f"image '{entry}' is not inside a class folder: move it into "
                f"'{split_dir}/<class>/' (one sub-folder per class)"
            )
    return out


def _open_folder(root: Path, class_names: list[str] | None) -> DataSource:
    train_dir = _find_dir(root, _SPLIT_DIRS["train"])
    per_split: dict[str, dict[str, list[str]]] = {}
    if train_dir is None:
        for key in ("valid", "test"):
            found = _find_dir(root, _SPLIT_DIRS[key])
            if found is not None:
                raise DataError(
                    f"'{root}' has a '{found.name}/' folder but no 'train/' folder: put the labelled "
                    f"training images in '{root}/train/<class>/'"
                )
        per_split["train"] = _scan_split(root, root, skip=_UNLABELLED_DIRS)
    else:
        for key, names in _SPLIT_DIRS.items():
            d = _find_dir(root, names)
            if d is not None:
                per_split[key] = _scan_split(root, d)

    unl_dir = _find_dir(root, _UNLABELLED_DIRS)
    unlabelled_refs = (
        [f.relative_to(root).as_posix() for f in _walk_files(unl_dir) if is_image_file(f)] if unl_dir else []
    )

    train_classes = per_split.get("train", {})
    if not train_classes and not any(per_split.get(k) for k in ("valid", "test")) and not unlabelled_refs:
        raise DataError(
            f"no images found in '{root}': put them in '{root}/train/<class>/' (one sub-folder per class)"
        )
    if not train_classes:
        raise DataError(
            f"no labelled training images in '{root}': put them in '{root}/train/<class>/' "
            "(one sub-folder per class)"
        )
    for key in ("valid", "test"):
        extra = sorted(set(per_split.get(key, {})) - set(train_classes))
        if extra:
            split_dir = _find_dir(root, _SPLIT_DIRS[key])
            raise DataError(
                f"classes {', '.join(repr(c) for c in extra)} in '{split_dir}' have no training images: "
                f"add them to '{root}/train/' or remove them from '{split_dir}'"
            )
    classes = sorted(train_classes)
    if class_names is not None:
        if sorted(class_names) != classes:
            raise DataError(
                f"the class names given ({', '.join(class_names)}) do not match the class folders in "
                f"'{root}' ({', '.join(classes)}): fix the class names or rename the folders"
            )
        classes = list(class_names)
    if len(classes) < 2:
        raise DataError(
            f"only one class ('{classes[0]}') found in '{root}': at least 2 classes are needed "
            "(one sub-folder per class)"
        )
    index = {c: i for i, c in enumerate(classes)}
    items: dict[str, list[Item]] = {}
    for key, by_class in per_split.items():
        lst = [Item(ref, index[c]) for c in sorted(by_class) for ref in by_class[c]]
        if lst:
            items[key] = lst
    if unlabelled_refs:
        items["unlabelled"] = [Item(ref, None) for ref in unlabelled_refs]
    return DataSource("folder", root, classes, items)


def _add_unlabelled_folder(source: DataSource, folder: Path) -> None:
    if not folder.is_dir():
        raise DataError(f"unlabelled folder '{folder}' does not exist: check the --unlabelled path")
    folder = folder.resolve()
    refs = [f.as_posix() for f in _walk_files(folder) if is_image_file(f)]
    if not refs:
        raise DataError(
            f"unlabelled folder '{folder}' contains no images: add images to it or drop --unlabelled"
        )
    source.unlabelled_root = folder
    source.items.setdefault("unlabelled", []).extend(Item(r, None) for r in refs)


# ---------------------------------------------------------------------------------------------- npz
def _npz_classes(path: Path, labels: list[np.ndarray], class_names: list[str] | None) -> list[str]:
    n = int(max(int(lab.max()) for lab in labels if lab.size) + 1)
    if class_names is None:  # a MedMNIST file (bloodmnist.npz, bloodmnist_64.npz) gets its official names
        return medmnist_class_names(path, n) or [str(i) for i in range(n)]
    if len(class_names) < n:
        raise DataError(
            f"'{path}' has labels 0..{n - 1} but only {len(class_names)} class names were given: "
            f"give {n} class names"
        )
    return list(class_names)


def _npy_header(npz: Any, key: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of one array of an npz, read from its header only (no pixel is loaded)."""
    with npz.zip.open(f"{key}.npy") as fh:
        version = np.lib.format.read_magic(fh)
        fmt = np.lib.format
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _, dtype = read(fh)
    return tuple(int(n) for n in shape), np.dtype(dtype)


def _check_npz_images(path: Path, split: str, shape: tuple[int, ...], dtype: np.dtype, n: int) -> None:
    """Images must be (N, H, W) or (N, H, W, 1|3) numbers, one per label, at least MIN_IMAGE_SIZE px."""
    from semicompact.data.images import MIN_IMAGE_SIZE

    key = f"{split}_images"
    layout = len(shape) == 3 or (len(shape) == 4 and shape[3] in (1, 3))
    if not layout or dtype.kind not in "uif":
        raise DataError(
            f"'{path}': {key} has shape {shape} and type {dtype}; MedMNIST images are numbers of shape "
            "(N, H, W) or (N, H, W, 3): re-download the file or convert it to an image folder"
        )
    if shape[0] != n:
        raise DataError(
            f"'{path}': {key} holds {shape[0]} images but {split}_labels holds {n} labels; "
            "every image needs exactly one label: re-download or rebuild the file"
        )
    if n and min(shape[1], shape[2]) < MIN_IMAGE_SIZE:
        raise DataError(
            f"'{path}': {key} are {shape[1]}x{shape[2]} px, smaller than the minimum "
            f"{MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE} px: use the real images, not thumbnails or placeholders"
        )


def _integer_labels(path: Path, split: str, lab: np.ndarray) -> np.ndarray:
    """Class indices as int64; fractional, non-finite or non-numeric labels are refused, not truncated."""
    key = f"{split}_labels"
    if lab.ndim == 2 and lab.shape[1] != 1:
        raise DataError(
            f"'{path}' holds multi-label targets ({key} has shape {lab.shape}): "
            "only single-label classification is supported, use a single-label dataset"
        )
    if lab.ndim not in (1, 2) or lab.dtype.kind not in "buif":
        raise DataError(
            f"'{path}': {key} has shape {lab.shape} and type {lab.dtype}; labels must be class "
            "indices 0..K-1 of shape (N,) or (N, 1)"
        )
    flat = lab.reshape(-1)
    if flat.dtype.kind == "f":
        bad = ~np.isfinite(flat) | (flat != np.round(flat))
        if bad.any():
            raise DataError(
                f"'{path}': {key} holds non-integer labels (e.g. {float(flat[bad][0])}); labels must be "
                "class indices 0..K-1: fix the file (they are never rounded silently)"
            )
    out = flat.astype(np.int64)
    if out.size and int(out.min()) < 0:
        raise DataError(f"'{path}' has negative labels in {key}: labels must be 0..K-1")
    return out


def _open_npz(path: Path, class_names: list[str] | None) -> DataSource:
    expected = [f"{s}_{kind}" for s in _NPZ_SPLITS for kind in ("images", "labels")]
    if not zipfile.is_zipfile(path):
        raise DataError(
            f"'{path}' is not a valid .npz file (not a zip archive: corrupt, truncated or another "
            "format): re-download it or convert the data to an image folder"
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            found = list(npz.files)
            missing = [k for k in expected if k not in found]
            if missing:
                raise DataError(
                    f"'{path}' is not a MedMNIST file: it has keys {', '.join(found) or '(none)'} but "
                    f"needs {', '.join(expected)}; re-download it or convert it to a folder"
                )
            labels = {s: np.asarray(npz[f"{s}_labels"]) for s in _NPZ_SPLITS}
            images = {s: _npy_header(npz, f"{s}_images") for s in _NPZ_SPLITS}
    except DataError:
        raise
    except ValueError as exc:
        reason = "it holds pickled objects, which are never loaded" if "pickle" in str(exc) else str(exc)
        raise DataError(f"cannot read '{path}' ({reason}): re-download the .npz file") from None
    except (OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(
            f"cannot read '{path}' (corrupt or truncated: {exc}): re-download the .npz file"
        ) from None
    flat = {}
    for s, lab in labels.items():
        flat[s] = _integer_labels(path, s, lab)
        _check_npz_images(path, s, *images[s], n=flat[s].size)
    classes = _npz_classes(path, list(flat.values()), class_names)
    if len(classes) < 2:
        raise DataError(f"only one class found in '{path}': at least 2 classes are needed")
    items = {
        key: [Item(f"{s}:{i}", int(lab)) for i, lab in enumerate(flat[s])]
        for s, key in _NPZ_SPLITS.items()
        if flat[s].size
    }
    return DataSource("npz", path, classes, items)


# ---------------------------------------------------------------------------------------------- csv
def _open_csv(path: Path, class_names: list[str] | None) -> DataSource:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read CSV manifest '{path}' ({exc}): save it as UTF-8 CSV") from None
    header = [h.strip().lower() for h in rows[0]] if rows else []
    if header not in (["path", "label"], ["path", "label", "split"]):
        raise DataError(
            f"CSV manifest '{path}' has header {','.join(header) or '(empty)'}: "
            f"the first line must be '{CSV_HEADER}'"
        )
    raw: list[tuple[str, str, str]] = []
    for n, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise DataError(
                f"line {n} of CSV manifest '{path}' has {len(row)} columns: every line needs "
                f"{len(header)} ({','.join(header)})"
            )
        ref, label = row[0].strip(), row[1].strip()
        split = row[2].strip().lower() if len(row) > 2 and row[2].strip() else "train"
        split = {"val": "valid", "validation": "valid", "unlabeled": "unlabelled"}.get(split, split)
        if split not in SPLIT_KEYS:
            raise DataError(
                f"line {n} of CSV manifest '{path}' has split '{row[2].strip()}': use train, valid or test"
            )
        raw.append((Path(ref).as_posix(), label, split))
    if not raw:
        raise DataError(f"no images listed in CSV manifest '{path}': add lines '{CSV_HEADER}'")
    base = path.parent
    for ref, _, _ in raw:
        f = Path(ref) if Path(ref).is_absolute() else base / ref
        if not f.is_file():
            raise DataError(
                f"image '{f}' listed in CSV manifest '{path}' does not exist: fix the path "
                "(relative to the CSV's folder) or remove the line"
            )
        if not is_image_file(f):
            raise DataError(f"'{f}' listed in CSV manifest '{path}' is not an image file: remove the line")
    names = sorted({lab for _, lab, _ in raw if lab})
    numeric = bool(names) and all(lab.lstrip("-").isdigit() for lab in names)
    if numeric:
        values = [int(x) for x in names]
        if min(values) < 0:
            raise DataError(
                f"CSV manifest '{path}' has negative labels: labels must be 0..K-1 or class names"
            )
        classes = _npz_classes(path, [np.asarray(values)], class_names)
        to_index = {lab: int(lab) for lab in names}
    else:
        classes = list(class_names) if class_names is not None else names
        unknown = sorted(set(names) - set(classes))
        if unknown:
            raise DataError(
                f"CSV manifest '{path}' has labels {', '.join(unknown)} that are not among the class names "
                "given: fix the labels or the class names"
            )
        to_index = {c: i for i, c in enumerate(classes)}
    if len(classes) < 2:
        raise DataError(
            f"only one class ({', '.join(repr(c) for c in classes) or 'none'}) found in CSV manifest "
            f"'{path}': at least 2 classes are needed"
        )
    items: dict[str, list[Item]] = {}
    for ref, label, split in raw:
        key = split if label else "unlabelled"  # a label on an 'unlabelled' line is kept as the truth
        items.setdefault(key, []).append(Item(ref, to_index[label] if label else None))
    if "train" not in items:
        raise DataError(
            f"CSV manifest '{path}' has no labelled training images: give some lines a label and "
            "split 'train' (or an empty split)"
        )
    return DataSource("csv", path, classes, items)
