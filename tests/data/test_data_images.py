"""Every image kind decodes to RGB 8-bit with the right pixel values; bad files fail clearly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _data_helpers import write_dicom
from PIL import Image

from semicompact.data.images import IMAGE_EXTENSIONS, is_image_file, load_image
from semicompact.errors import DataError, ImageReadError


def _rgb(path: Path) -> np.ndarray:
    img = load_image(path)
    assert img.mode == "RGB"
    return np.asarray(img)


def _ramp(dtype: type, lo: float, hi: float, shape: tuple[int, int] = (8, 16)) -> np.ndarray:
    return np.tile(np.linspace(lo, hi, shape[1]), (shape[0], 1)).astype(dtype)


def test_extensions() -> None:
    for ext in (".dcm", ".dicom", ".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif"):
        assert ext in IMAGE_EXTENSIONS
    assert is_image_file("a/B.PNG") and not is_image_file("notes.txt")


@pytest.mark.parametrize("ext", [".jpg", ".png", ".bmp", ".tif", ".webp", ".gif"])
def test_common_formats(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"img{ext}"
    Image.new("RGB", (10, 6), (200, 30, 30)).save(path)
    out = _rgb(path)
    assert out.shape == (6, 10, 3)
    assert abs(int(out[3, 5, 0]) - 200) < 12 and out[3, 5, 1] < 45


def test_grayscale_8bit(tmp_path: Path) -> None:
    Image.new("L", (4, 4), 77).save(tmp_path / "g.png")
    assert (_rgb(tmp_path / "g.png") == 77).all()


def test_16bit_png_is_min_max_scaled(tmp_path: Path) -> None:
    arr = _ramp(np.uint16, 1000, 3000)
    Image.fromarray(arr).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    out = _rgb(tmp_path / "deep.png")
    assert out[0, 0].tolist() == [0, 0, 0] and out[0, -1].tolist() == [255, 255, 255]
    assert (np.diff(out[0, :, 0].astype(int)) > 0).all()


def test_constant_16bit_gives_zeros(tmp_path: Path) -> None:
    Image.fromarray(np.full((5, 5), 1234, np.uint16)).save(tmp_path / "flat.png")
    assert (_rgb(tmp_path / "flat.png") == 0).all()


def test_float_tiff(tmp_path: Path) -> None:
    arr = _ramp(np.float32, -1.5, 2.5)
    Image.fromarray(arr, mode="F").save(tmp_path / "f.tif")
    out = _rgb(tmp_path / "f.tif")
    assert out[:, 0].max() == 0 and out[:, -1].min() == 255
    mid = (arr[0] - arr.min()) / (arr.max() - arr.min()) * 255
    assert np.abs(out[0, :, 1].astype(float) - mid).max() <= 1


def test_rgba_composited_on_black(tmp_path: Path) -> None:
    arr = np.zeros((2, 3, 4), np.uint8)
    arr[..., 0] = 200
    arr[0, 0, 3], arr[0, 1, 3], arr[0, 2, 3] = 0, 255, 128
    Image.fromarray(arr, mode="RGBA").save(tmp_path / "a.png")
    out = _rgb(tmp_path / "a.png")
    assert out[0, 0].tolist() == [0, 0, 0]
    assert out[0, 1].tolist() == [200, 0, 0]
    assert abs(int(out[0, 2, 0]) - 100) <= 2


def test_la_image(tmp_path: Path) -> None:
    Image.new("LA", (3, 3), (180, 0)).save(tmp_path / "la.png")
    assert (_rgb(tmp_path / "la.png") == 0).all()
    Image.new("LA", (3, 3), (180, 255)).save(tmp_path / "la2.png")
    assert (_rgb(tmp_path / "la2.png") == 180).all()


def test_palette_image(tmp_path: Path) -> None:
    img = Image.new("P", (4, 4), 1)
    img.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    img.save(tmp_path / "p.png")
    assert (_rgb(tmp_path / "p.png") == [10, 200, 30]).all()
    img.save(tmp_path / "p.gif")
    assert (_rgb(tmp_path / "p.gif") == [10, 200, 30]).all()


def test_palette_with_transparency(tmp_path: Path) -> None:
    img = Image.new("P", (4, 4), 1)
    img.putpalette([0, 0, 0, 250, 250, 250] + [0] * 762)
    img.info["transparency"] = 1
    img.save(tmp_path / "pt.png", transparency=1)
    assert (_rgb(tmp_path / "pt.png") == 0).all()


def test_cmyk_jpeg(tmp_path: Path) -> None:
    Image.new("CMYK", (8, 8), (0, 0, 0, 0)).save(tmp_path / "c.jpg")
    assert _rgb(tmp_path / "c.jpg").min() > 240  # no ink is white
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "red.jpg")
    px = _rgb(tmp_path / "red.jpg")[4, 4]
    assert px[0] > 200 and px[1] < 60 and px[2] < 60


def test_dicom_16bit_monochrome2(tmp_path: Path) -> None:
    arr = _ramp(np.uint16, 0, 4000)
    out = _rgb(write_dicom(tmp_path / "a.dcm", arr))
    assert out[0, 0].tolist() == [0, 0, 0] and out[0, -1].tolist() == [255, 255, 255]
    assert (np.diff(out[0, :, 0].astype(int)) > 0).all()


def test_dicom_monochrome1_is_inverted(tmp_path: Path) -> None:
    arr = _ramp(np.uint16, 0, 4000)
    out = _rgb(write_dicom(tmp_path / "m1.dcm", arr, photometric="MONOCHROME1"))
    assert out[0, 0].tolist() == [255, 255, 255] and out[0, -1].tolist() == [0, 0, 0]


def test_dicom_modality_rescale_applied(tmp_path: Path) -> None:
    arr = _ramp(np.uint16, 0, 1000)
    out = _rgb(write_dicom(tmp_path / "r.dcm", arr, RescaleSlope=-1, RescaleIntercept=0))
    assert out[0, 0, 0] == 255 and out[0, -1, 0] == 0  # a negative slope reverses the ramp


def test_dicom_voi_window_applied(tmp_path: Path) -> None:
    arr = _ramp(np.uint16, 0, 1000, shape=(4, 101))
    out = _rgb(write_dicom(tmp_path / "w.dcm", arr, WindowCenter=500, WindowWidth=100))
    row = out[0, :, 0]
    assert (row[:40] == 0).all() and (row[-40:] == 255).all()  # outside the window: clipped
    assert 0 < row[50] < 255


def test_dicom_rgb_and_multiframe(tmp_path: Path) -> None:
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 2] = 220
    assert (_rgb(write_dicom(tmp_path / "c.dcm", rgb, photometric="RGB")) == [0, 0, 220]).all()
    frames = np.stack([_ramp(np.uint16, 0, 100, (4, 6)), np.full((4, 6), 7, np.uint16)])
    out = _rgb(write_dicom(tmp_path / "mf.dcm", frames, frames=2))
    assert out[0, 0, 0] == 0 and out[0, -1, 0] == 255  # the first frame (a ramp), not the flat one


def test_dicom_without_extension_detected_by_preamble(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "IM0001", _ramp(np.uint16, 0, 10))
    assert is_image_file(path)
    assert _rgb(path).shape == (8, 16, 3)


def test_truncated_jpeg_fails(tmp_path: Path) -> None:
    arr = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "full.jpg", quality=95)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match=r"cannot read image '.*cut\.jpg': the file is truncated") as err:
        load_image(tmp_path / "cut.jpg")
    assert isinstance(err.value, DataError) and "Replace or remove the file" in str(err.value)


def test_text_file_renamed_png_fails(tmp_path: Path) -> None:
    (tmp_path / "fake.png").write_text("hello, I am not an image\n")
    with pytest.raises(ImageReadError, match=r"'.*fake\.png': not a recognised image format"):
        load_image(tmp_path / "fake.png")


def test_corrupt_dicom_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "bad.dcm").write_bytes(b"\x00" * 50 + b"garbage")
    with pytest.raises(ImageReadError, match=r"bad\.dcm"):
        load_image(tmp_path / "bad.dcm")
    with pytest.raises(ImageReadError, match=r"nothere\.png': the file does not exist"):
        load_image(tmp_path / "nothere.png")
