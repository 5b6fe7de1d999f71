"""The official class names of the MedMNIST v2 2D sets, recognised by file name.

A MedMNIST ``.npz`` holds labels 0..K-1 only; the names come from MedMNIST's ``INFO`` table
(``medmnist/info.py``, v2). A file is recognised by its name as downloaded: ``bloodmnist.npz`` or
a size variant such as ``bloodmnist_64.npz``. RetinaMNIST's labels are diabetic-retinopathy grades
(INFO names them "0".."4"); they are shown as "grade 0".."grade 4". ChestMNIST is multi-label and
not supported. Names given by the user (``class_names``) always win.
"""

from __future__ import annotations

import re
from pathlib import Path

_ORGAN = [
    "bladder",
    "femur-left",
    "femur-right",
    "heart",
    "kidney-left",
    "kidney-right",
    "liver",
    "lung-left",
    "lung-right",
    "pancreas",
    "spleen",
]

MEDMNIST_CLASSES: dict[str, list[str]] = {
    "bloodmnist": [
        "basophil",
        "eosinophil",
        "erythroblast",
        "immature granulocytes",
        "lymphocyte",
        "monocyte",
        "neutrophil",
        "platelet",
    ],
    "pneumoniamnist": ["normal", "pneumonia"],
    "breastmnist": ["malignant", "normal, benign"],
    "retinamnist": [f"grade {i}" for i in range(5)],
    "pathmnist": [
        "adipose",
        "background",
        "debris",
        "lymphocytes",
        "mucus",
        "smooth muscle",
        "normal colon mucosa",
        "cancer-associated stroma",
        "colorectal adenocarcinoma epithelium",
    ],
    "dermamnist": [
        "actinic keratoses and intraepithelial carcinoma",
        "basal cell carcinoma",
        "benign keratosis-like lesions",
        "dermatofibroma",
        "melanoma",
        "melanocytic nevi",
        "vascular lesions",
    ],
    "octmnist": ["choroidal neovascularization", "diabetic macular edema", "drusen", "normal"],
    "tissuemnist": [
        "Collecting Duct, Connecting Tubule",
        "Distal Convoluted Tubule",
        "Glomerular endothelial cells",
        "Interstitial endothelial cells",
        "Leukocytes",
        "Podocytes",
        "Proximal Tubule Segments",
        "Thick Ascending Limb",
    ],
    "organamnist": _ORGAN,
    "organcmnist": _ORGAN,
    "organsmnist": _ORGAN,
}

_NAME = re.compile(r"^([a-z]+mnist)(?:_(?:28|64|128|224))?$")


def medmnist_set(path: str | Path) -> str | None:
    """The MedMNIST set a file name stands for (``bloodmnist_64.npz`` -> ``bloodmnist``), or None."""
    if Path(path).suffix.lower() != ".npz":
        return None
    match = _NAME.match(Path(path).stem.lower())
    return match.group(1) if match and match.group(1) in MEDMNIST_CLASSES else None


def medmnist_class_names(path: str | Path, n_classes: int) -> list[str] | None:
    """The official names for a recognised MedMNIST file with ``n_classes`` labels, else None."""
    name = medmnist_set(path)
    names = MEDMNIST_CLASSES.get(name or "")
    return list(names) if names and len(names) == n_classes else None


def is_default_names(classes: list[str]) -> bool:
    """True for the names "0".."K-1" that an npz got before its MedMNIST names were known."""
    return list(classes) == [str(i) for i in range(len(classes))]
