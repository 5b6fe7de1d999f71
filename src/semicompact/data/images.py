"""Decode any supported image file into an RGB 8-bit PIL image.

Biomedical data arrives as 16-bit PNGs, float TIFFs, palette GIFs, CMYK JPEGs and DICOM; models
always want the same thing (3-channel 8-bit), so every reader funnels through :func:`load_image`
and every failure becomes one :class:`ImageReadError` the user can act on.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from semicompact.errors import ImageReadError

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".dcm", ".dicom"}
)
DICOM_EXTENSIONS: frozenset[str] = frozenset({".dcm", ".dicom"})
#: smallest side (px) worth classifying; smaller images (icons, placeholders, broken exports) are
#: refused for training, evaluation and prediction alike instead of being upscaled into a guess
MIN_IMAGE_SIZE = 8

_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


def has_dicom_preamble(path: str | os.PathLike[str]) -> bool:
    """True when the file carries the 'DICM' magic at byte 128 (DICOM files often lack an extension)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """Supported extension, or an extension-less DICOM file (checked by its preamble)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return True
    return suffix == "" and p.is_file() and has_dicom_preamble(p)


def _scale_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Min-max scale to 0..255; constant (or all non-finite) images become zeros."""
    a = np.asarray(arr, dtype=np.float64)
    finite = np.isfinite(a)
    if not finite.any():
        return np.zeros(a.shape, dtype=np.uint8)
    lo, hi = float(a[finite].min()), float(a[finite].max())
    a = np.where(finite, a, lo)
    if hi <= lo:
        return np.zeros(a.shape, dtype=np.uint8)
    return np.clip(np.rint((a - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def _gray_to_rgb(gray8: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(gray8), mode="L").convert("RGB")


def _composite_on_black(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
    return Image.alpha_composite(black, rgba).convert("RGB")


def _pil_to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I", "F") or mode.startswith("I;"):
        return _gray_to_rgb(_scale_to_uint8(np.asarray(img)))
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in img.info):
        return _composite_on_black(img)
    if mode == "P" and img.palette is not None and img.palette.mode == "RGBA":
        return _composite_on_black(img)
    return img.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def _read_pil(path: Path) -> Image.Image:
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file must fail, not load half-grey
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                img.load()
                return _pil_to_rgb(img).copy()
    except UnidentifiedImageError:
        raise ImageReadError(path, "not a recognised image format") from None
    except _DECODE_ERRORS as exc:
        raise ImageReadError(path, f"the file is truncated or corrupt ({exc})") from None


def _read_dicom(path: Path) -> Image.Image:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:  # pydicom < 3
        from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(path, force=not has_dicom_preamble(path))
        if "PixelData" not in ds:
            raise ImageReadError(path, "the DICOM file holds no pixel data")
        arr = ds.pixel_array
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
        samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
        if frames > 1:
            arr = arr[0]
        if samples == 1:
            values = apply_modality_lut(arr, ds)
            values = apply_voi_lut(values, ds, index=0)
            gray = _scale_to_uint8(values)
            if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
                gray = 255 - gray
            return _gray_to_rgb(gray)
        if arr.ndim != 3 or arr.shape[-1] != 3:
            raise ImageReadError(path, f"unsupported DICOM pixel layout {arr.shape}")
        rgb = arr if arr.dtype == np.uint8 else _scale_to_uint8(arr)
        return Image.fromarray(np.ascontiguousarray(rgb), mode="RGB")
    except ImageReadError:
        raise
    except InvalidDicomError as exc:
        raise ImageReadError(path, f"not a valid DICOM file ({exc})") from None
    except (*_DECODE_ERRORS, AttributeError, KeyError, IndexError, TypeError, RuntimeError) as exc:
        raise ImageReadError(path, f"the DICOM pixel data cannot be decoded ({exc})") from None


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Load ``path`` as an RGB 8-bit image; raise :class:`ImageReadError` on any failure."""
    p = Path(path)
    if not p.exists():
        raise ImageReadError(p, "the file does not exist")
    if not p.is_file():
        raise ImageReadError(p, "it is not a file")
    if p.suffix.lower() in DICOM_EXTENSIONS or has_dicom_preamble(p):
        return _read_dicom(p)
    return _read_pil(p)


def check_min_size(img: Image.Image, path: str | os.PathLike[str]) -> Image.Image:
    """Return ``img``; raise :class:`ImageReadError` when a side is below :data:`MIN_IMAGE_SIZE`."""
    width, height = img.size
    if min(width, height) < MIN_IMAGE_SIZE:
        raise ImageReadError(
            path,
            f"the image is {width}x{height} px, smaller than the minimum "
            f"{MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE} px (too little to classify)",
        )
    return img


def load_for_model(path: str | os.PathLike[str]) -> Image.Image:
    """:func:`load_image` plus the minimum size: what training, evaluation and prediction read."""
    return check_min_size(load_image(path), path)
