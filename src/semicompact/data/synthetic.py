"""The embedded default dataset: generated, biomedical-looking stained cells in 4 classes.

The demo must run offline with no download, yet exercise the real pipeline (a folder of PNGs) on a
task where a CNN has to look at shape, count and texture. Classes are set by the nucleus: one round
nucleus, one elongated nucleus, two nuclei, or a round nucleus in a granular cytoplasm. Every image
is rescaled to a random mean intensity drawn from the same distribution for every class, so that
brightness carries no class information. Rendering is vectorised numpy (Beer-Lambert stain mixing,
H&E- or Giemsa-like), and deterministic: the same seed gives the same bytes.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from semicompact.errors import DataError
from semicompact.io import write_bytes, write_json, write_text

CLASSES = ("binucleate", "elongated_nucleus", "granular", "round_nucleus")  # sorted, as a folder source
_ELONG, _BI, _GRAN = (CLASSES.index(c) for c in ("elongated_nucleus", "binucleate", "granular"))
_CHUNK = 256
# Optical densities (R, G, B) of the nuclear and the cytoplasmic stain.
_STAINS = {
    "he": (np.array([0.65, 0.70, 0.29]), np.array([0.07, 0.99, 0.11])),  # haematoxylin, eosin
    "giemsa": (np.array([0.50, 0.90, 0.30]), np.array([0.55, 0.32, 0.12])),  # azure-eosin, basophilic
}


def _ellipse(xx, yy, cx, cy, a, b, theta, wobble=None, edge: float = 1.0) -> np.ndarray:
    """Soft (anti-aliased) filled ellipses, one per image: (N, S, S) in [0, 1]."""
    dx = xx[None] - cx[:, None, None]
    dy = yy[None] - cy[:, None, None]
    c, s = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    u = (dx * c + dy * s) / a[:, None, None]
    v = (-dx * s + dy * c) / b[:, None, None]
    r = np.sqrt(u * u + v * v)
    if wobble is not None:  # irregular outline: a few harmonics of the polar angle
        amp, k, phase = wobble
        angle = np.arctan2(v, u)
        r = r * (1.0 + amp[:, None, None] * np.cos(k[:, None, None] * angle + phase[:, None, None]))
    dist = (1.0 - r) * np.minimum(a, b)[:, None, None]
    return np.clip(dist / edge + 0.5, 0.0, 1.0).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, n: int, size: int, sigma: float) -> np.ndarray:
    """Gaussian-smoothed white noise, standardised per image."""
    w = rng.standard_normal((n, size, size)).astype(np.float32)
    g = gaussian_filter(w, sigma=(0, sigma, sigma), mode="wrap")
    g -= g.mean(axis=(1, 2), keepdims=True)
    g /= g.std(axis=(1, 2), keepdims=True) + 1e-6
    return g


def _render_chunk(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    n, s = len(labels), size
    sc = s / 64.0

    def uni(lo: float, hi: float) -> np.ndarray:
        return rng.uniform(lo, hi, n).astype(np.float32)

    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) + 0.5
    # the cell: random position, size, shape, rotation
    cx, cy = s / 2 + uni(-0.12, 0.12) * s, s / 2 + uni(-0.12, 0.12) * s
    radius = uni(0.25, 0.33) * s
    asp = uni(0.85, 1.15)
    wob = (uni(0.0, 0.07), rng.integers(2, 5, n).astype(np.float32), uni(0, 2 * np.pi))
    cell = _ellipse(xx, yy, cx, cy, radius * asp, radius / asp, uni(0, np.pi), wobble=wob)

    # nuclei, by class
    is_e, is_b, is_g = (labels == _ELONG), (labels == _BI), (labels == _GRAN)
    sizes = [uni(0.62, 0.78), uni(0.27, 0.33), uni(0.36, 0.46)]
    a1 = radius * np.select([is_e, is_b, is_g], sizes, uni(0.40, 0.50))
    b1 = a1 / np.where(is_e, uni(2.2, 3.0), uni(1.0, 1.15))
    phi = uni(0, 2 * np.pi)
    off = radius * np.where(is_b, 0.45, uni(0.0, 0.12))
    nth = uni(0, np.pi)
    nwob = (uni(0.0, 0.05), rng.integers(2, 4, n).astype(np.float32), uni(0, 2 * np.pi))
    nuc = _ellipse(xx, yy, cx + off * np.cos(phi), cy + off * np.sin(phi), a1, b1, nth, wobble=nwob)
    a2 = radius * uni(0.27, 0.33)
    b2 = a2 / uni(1.0, 1.15)
    nuc2 = _ellipse(xx, yy, cx - off * np.cos(phi), cy - off * np.sin(phi), a2, b2, uni(0, np.pi))
    nuc = np.maximum(nuc, nuc2 * is_b[:, None, None])
    nuc *= cell

    # stain concentrations with texture
    chrom = _smooth_noise(rng, n, s, 1.0 * sc)
    tex = _smooth_noise(rng, n, s, 2.5 * sc)
    back = _smooth_noise(rng, n, s, 6.0 * sc)
    gran_field = _smooth_noise(rng, n, s, 1.1 * sc)
    granules = np.clip((gran_field - 1.2) * 2.0, 0, 1) * (cell * (1 - nuc)) * is_g[:, None, None]
    nuc_od = (uni(0.85, 1.15)[:, None, None] * (1 + 0.2 * chrom)).clip(0.2)
    cyto_od = (uni(0.30, 0.55)[:, None, None] * (1 + 0.2 * tex)).clip(0.05)
    back_od = (uni(0.04, 0.10)[:, None, None] * (1 + 0.3 * back)).clip(0.0)
    # a few red-cell-like discs around, independent of the class
    debris = np.zeros((n, s, s), np.float32)
    for _ in range(3):
        present = rng.random(n) < 0.4
        disc = _ellipse(xx, yy, uni(0, s), uni(0, s), uni(0.09, 0.13) * s, uni(0.09, 0.13) * s, uni(0, np.pi))
        debris = np.maximum(debris, disc * present[:, None, None])
    debris *= 1 - cell
    hema = 0.02 + nuc * nuc_od + cell * 0.06 + 1.0 * granules
    eos = back_od + cell * (1 - nuc) * cyto_od + nuc * 0.1 + debris * uni(0.3, 0.5)[:, None, None]

    # stain vectors: H&E or Giemsa, jittered per image
    style = rng.random(n) < 0.5
    vh = np.where(style[:, None], _STAINS["he"][0], _STAINS["giemsa"][0])
    ve = np.where(style[:, None], _STAINS["he"][1], _STAINS["giemsa"][1])
    vh = (vh * rng.uniform(0.85, 1.15, (n, 3))).astype(np.float32)
    ve = (ve * rng.uniform(0.85, 1.15, (n, 3))).astype(np.float32)
    od = hema[..., None] * vh[:, None, None, :] + eos[..., None] * ve[:, None, None, :]
    # optical blur, of random strength
    blurred = gaussian_filter(od, sigma=(0, 0.9 * sc, 0.9 * sc, 0))
    od += uni(0.2, 1.0)[:, None, None, None] * (blurred - od)

    # mean intensity: the same random distribution for every class (Newton on the stain amount k)
    target = uni(135.0, 205.0)
    k = np.ones(n, np.float32)
    for _ in range(10):
        e = 255.0 * np.exp(-k[:, None, None, None] * od)
        f = e.mean(axis=(1, 2, 3)) - target
        df = -(od * e).mean(axis=(1, 2, 3))
        k = np.clip(k - f / np.minimum(df, -1e-3), 0.02, 20.0)
    rgb = 255.0 * np.exp(-k[:, None, None, None] * od) + rng.normal(0, 2.0, od.shape).astype(np.float32)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def render_cells(labels: np.ndarray | list[int], size: int = 64, seed: int | list[int] = 0) -> np.ndarray:
    """Render one image per label (indices into :data:`CLASSES`): uint8 (N, size, size, 3)."""
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    out = np.empty((len(labels), size, size, 3), np.uint8)
    for start in range(0, len(labels), _CHUNK):
        out[start : start + _CHUNK] = _render_chunk(labels[start : start + _CHUNK], size, rng)
    return out


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode="RGB").save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def make_synthetic_cells(
    root: str | os.PathLike[str],
    n_per_class_train: int = 200,
    n_test: int = 100,
    n_unlabelled: int = 800,
    size: int = 64,
    seed: int = 0,
) -> Path:
    """Write the synthetic cell dataset to ``root`` (train/<class>/, test/<class>/, unlabelled/).

    ``n_test`` is per class. A folder already holding the same dataset is reused as it is; the files
    are written to a temporary sibling folder renamed into place at the end, so an interrupted run
    never leaves half a dataset. The true classes of the unlabelled images are in
    ``unlabelled_labels.csv`` (outside the image folders), for measuring pseudo-label accuracy.
    """
    root = Path(root).expanduser().resolve()
    params = {
        "generator": "semicompact.synthetic_cells/1",
        "classes": list(CLASSES),
        "n_per_class_train": n_per_class_train,
        "n_test": n_test,
        "n_unlabelled": n_unlabelled,
        "size": size,
        "seed": seed,
    }
    marker = root / "synthetic.json"
    if marker.is_file():
        try:
            if json.loads(marker.read_text(encoding="utf-8")) == params:
                return root
        except ValueError:
            pass
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise DataError(
            f"'{root}' already exists and does not hold this synthetic dataset: choose a new folder "
            "or delete it"
        )
    if size < 16:
        raise DataError(f"synthetic image size {size} is too small: use at least 16 pixels")

    staging = root.parent / f".{root.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for split_id, (split, n) in enumerate((("train", n_per_class_train), ("test", n_test))):
            for c, name in enumerate(CLASSES):
                images = render_cells(np.full(n, c), size, seed=[seed, split_id, c])
                for i, img in enumerate(images):
                    write_bytes(staging / split / name / f"{name}_{i:04d}.png", _png(img))
        if n_unlabelled:
            labels = np.random.default_rng([seed, 2, 99]).permutation(np.arange(n_unlabelled) % len(CLASSES))
            images = render_cells(labels, size, seed=[seed, 2])
            lines = ["path,label"]
            for i, (img, lab) in enumerate(zip(images, labels, strict=True)):
                ref = f"unlabelled/cell_{i:04d}.png"
                write_bytes(staging / ref, _png(img))
                lines.append(f"{ref},{CLASSES[lab]}")
            write_text(staging / "unlabelled_labels.csv", "\n".join(lines) + "\n")
        write_json(staging / "synthetic.json", params)
        if root.exists():
            root.rmdir()  # empty (checked above)
        os.replace(staging, root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return root
