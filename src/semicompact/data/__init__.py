"""Data stage: decoding, sources, the paper's split, streaming datasets and the Lightning data module."""

from semicompact.data.datamodule import SemiCompactDataModule
from semicompact.data.datasets import ImageDataset, SkippedImageWarning, collate_skip
from semicompact.data.images import IMAGE_EXTENSIONS, is_image_file, load_image
from semicompact.data.sources import DataSource, Item, open_source
from semicompact.data.split import SplitManifest, make_split
from semicompact.data.synthetic import CLASSES as SYNTHETIC_CLASSES
from semicompact.data.synthetic import make_synthetic_cells, render_cells
from semicompact.data.transforms import AUGMENT_PRESETS, build_augmentation, to_uint8_tensor

__all__ = [
    "AUGMENT_PRESETS",
    "IMAGE_EXTENSIONS",
    "SYNTHETIC_CLASSES",
    "DataSource",
    "ImageDataset",
    "Item",
    "SemiCompactDataModule",
    "SkippedImageWarning",
    "SplitManifest",
    "build_augmentation",
    "collate_skip",
    "is_image_file",
    "load_image",
    "make_split",
    "make_synthetic_cells",
    "open_source",
    "render_cells",
    "to_uint8_tensor",
]
