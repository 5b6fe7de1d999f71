"""Data: image decoding, dataset sources, the paper's split protocol, loaders and transforms."""

from .datamodule import SemiCompactDataModule
from .images import IMAGE_EXTENSIONS, is_image_file, load_image
from .sources import DataSource, Item, open_source
from .split import SplitManifest, make_split

__all__ = [
    "IMAGE_EXTENSIONS",
    "DataSource",
    "Item",
    "SemiCompactDataModule",
    "SplitManifest",
    "is_image_file",
    "load_image",
    "make_split",
    "open_source",
]
