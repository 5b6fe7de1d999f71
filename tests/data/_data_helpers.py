"""Helpers for the data tests (importable as ``_data_helpers``): file writers and paths."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image


def shared_dir() -> Path:
    """../shared next to the repository, or $SEMICOMPACT_SHARED."""
    env = os.environ.get("SEMICOMPACT_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared"


def save_png(path: Path, seed: int = 0, size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


def write_npz(path: Path, n: tuple[int, int, int] = (40, 8, 12), k: int = 3, colour: bool = False,
              drop: tuple[str, ...] = ()) -> Path:  # fmt: skip
    """A MedMNIST-like file with n (train, val, test) images of k classes."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n, strict=True):
        shape = (count, 28, 28, 3) if colour else (count, 28, 28)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(count) % k).reshape(-1, 1).astype(np.uint8)
    for key in drop:
        arrays.pop(key)
    np.savez_compressed(path, **arrays)
    return path


def write_dicom(
    path: Path,
    arr: np.ndarray,
    photometric: str = "MONOCHROME2",
    frames: int = 1,
    **attrs: object,
) -> Path:
    """A minimal valid DICOM file (explicit VR little endian) holding ``arr``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    colour = photometric == "RGB"
    shape = arr.shape[1:] if frames > 1 else arr.shape
    ds.Rows, ds.Columns = int(shape[0]), int(shape[1])
    ds.SamplesPerPixel = 3 if colour else 1
    if colour:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PhotometricInterpretation = photometric
    bits = arr.dtype.itemsize * 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    ds.PixelRepresentation = 1 if arr.dtype.kind == "i" else 0
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(arr).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
