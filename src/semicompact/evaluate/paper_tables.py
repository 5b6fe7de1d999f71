"""Numbers printed in the seed paper (Inés et al.), kept as data so the statistics can be re-checked.

``TABLE3``: base-training F1 (%) of the 12 networks on the 10 datasets. ``TABLE4_BASE``: what the
paper concludes from it. ``TABLE10``: its Holm p-values for the method comparison (a hand-worked
example for the adjustment).
"""

from __future__ import annotations

DATASETS = (
    "Blindness",
    "Chest X Ray",
    "Fungi",
    "HAM 10000",
    "ISIC",
    "Kvasir",
    "Open Sprayer",
    "Plants",
    "Retinal OCT",
    "Tobacco",
)

TABLE3: dict[str, tuple[float, ...]] = {
    "ResNet-50": (59.3, 89.9, 91.0, 54.3, 87.6, 89.0, 91.3, 84.3, 97.4, 81.8),
    "ResNet-101": (58.2, 90.7, 86.9, 52.0, 84.0, 83.8, 95.8, 84.3, 96.4, 80.1),
    "EfficientNet": (53.6, 84.1, 84.7, 52.8, 85.0, 85.4, 96.8, 84.0, 98.1, 72.9),
    "FBNet": (57.5, 87.4, 89.0, 47.2, 85.2, 88.9, 95.4, 81.8, 94.9, 73.3),
    "MixNet": (61.8, 89.5, 89.7, 46.9, 89.9, 86.8, 95.5, 86.2, 98.9, 76.7),
    "MNasNet": (56.2, 89.2, 90.3, 55.8, 81.9, 84.6, 95.7, 82.5, 97.4, 75.3),
    "MobileNet": (52.0, 86.9, 89.0, 46.7, 84.1, 82.1, 89.1, 82.9, 91.0, 69.4),
    "ResNet-18": (56.3, 90.3, 94.2, 53.7, 86.8, 84.1, 91.6, 80.0, 97.7, 77.5),
    "SqueezeNet": (50.3, 88.3, 79.3, 43.6, 76.8, 80.1, 90.9, 78.9, 93.2, 75.5),
    "ShuffleNet": (39.5, 85.7, 69.9, 37.6, 78.9, 67.0, 89.6, 51.9, 33.9, 40.7),
    "ResNet-18 quantized": (45.1, 77.8, 88.1, 47.0, 86.5, 84.2, 91.3, 75.1, 91.6, 55.8),
    "ResNet-50 quantized": (48.6, 77.2, 83.2, 42.9, 78.6, 81.1, 85.4, 77.7, 91.6, 69.7),
}

# Table 3's last column as printed: mean(std) over the 10 datasets
TABLE3_MEAN_STD: dict[str, tuple[float, float]] = {
    "ResNet-50": (82.5, 13.5),
    "ResNet-101": (81.2, 14.1),
    "EfficientNet": (79.7, 14.8),
    "FBNet": (80.1, 15.3),
    "MixNet": (82.2, 15.3),
    "MNasNet": (80.9, 13.9),
    "MobileNet": (77.3, 15.1),
    "ResNet-18": (81.2, 14.4),
    "SqueezeNet": (75.7, 15.5),
    "ShuffleNet": (59.5, 20.2),
    "ResNet-18 quantized": (74.3, 17.2),
    "ResNet-50 quantized": (73.6, 15.0),
}

# Table 4, row "Base": Friedman (Iman-Davenport) 16.0, p < 0.001, then Holm against ResNet-50
TABLE4_BASE = {
    "statistic": 16.0,
    "p_below": 0.001,
    "control": "ResNet-50",
    "not_different": ("EfficientNet", "FBNet", "MixNet", "MNasNet", "ResNet-101", "ResNet-18"),
    "different": ("MobileNet", "SqueezeNet", "ShuffleNet", "ResNet-18 quantized", "ResNet-50 quantized"),
}

# Table 10: unadjusted and Holm-adjusted p-values against the control "Data" (6 comparisons)
TABLE10 = {
    "Base": (9.6e-3, 0.02),
    "Plain": (0.35, 0.35),
    "Model": (2.7e-3, 0.01),
    "DataModel": (5.2e-3, 0.02),
    "FixMatch": (3.2e-6, 1.6e-5),
    "MixMatch": (2.3e-8, 1.4e-7),
}
