"""Before/after crops for the eye: a region of interest per image, CT in a soft-tissue window."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.ndimage import uniform_filter

from runtime.normalization import NormalizationSpec, denormalize, fit_normalization
from benchmarks import report

SOFT_TISSUE = (40.0, 400.0)  # level, width (HU)


def region_of_interest(clean: np.ndarray, modality: str, spec: NormalizationSpec, side: int) -> tuple[int, int]:
    """Top-left of the ``side`` square a reader would look at.

    CT: the square holding the most soft tissue (HU within the soft-tissue window), where
    low-dose noise matters most; other modalities: the square with the most local detail
    (highest mean local variance).
    """
    side = min(side, *clean.shape)
    if modality.upper() == "CT" and spec.kind == "hu_linear":
        level, width = SOFT_TISSUE
        hu = denormalize(clean, fit_normalization(clean, spec))
        score = ((hu > level - width / 2) & (hu < level + width / 2)).astype(np.float64)
    else:
        image = clean.astype(np.float64)
        score = uniform_filter(image**2, 5) - uniform_filter(image, 5) ** 2
    density = uniform_filter(score, side, mode="constant")
    half = side // 2
    valid = density[half : clean.shape[0] - side + half + 1, half : clean.shape[1] - side + half + 1]
    top, left = np.unravel_index(int(np.argmax(valid)), valid.shape)
    return int(top), int(left)


def display(image: np.ndarray, modality: str, spec: NormalizationSpec, reference: np.ndarray) -> np.ndarray:
    """[0, 1] display values: CT in the soft-tissue window, others the reference's 1-99% range."""
    if modality.upper() == "CT" and spec.kind == "hu_linear":
        level, width = SOFT_TISSUE
        hu = denormalize(image, fit_normalization(image, spec))
        return np.clip((hu - (level - width / 2)) / width, 0.0, 1.0)
    low, high = np.percentile(reference, [1, 99])
    return np.clip((image - low) / max(high - low, 1e-6), 0.0, 1.0)


def crop_grid(rows: list[dict], columns: list[str], path: Path, side: int = 128) -> Path:
    """One row per image (``name``, ``modality``, ``spec``, ``images``: column -> array) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), len(columns), figsize=(1.9 * len(columns), 2.0 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        clean = row["images"]["clean"]
        top, left = region_of_interest(clean, row["modality"], row["spec"], side)
        edge = min(side, *clean.shape)
        for c, column in enumerate(columns):
            axis = axes[r][c]
            axis.set_xticks([])
            axis.set_yticks([])
            image = row["images"].get(column)
            if image is None:
                axis.set_facecolor("0.85")
            else:
                crop = image[top : top + edge, left : left + edge]
                axis.imshow(display(crop, row["modality"], row["spec"], clean[top : top + edge, left : left + edge]),
                            cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            if r == 0:
                axis.set_title(column, fontsize=8)
            if c == 0:
                axis.set_ylabel(f"{row['modality']} {row['degradation']}", fontsize=7)
    fig.suptitle("held-out crops (CT: soft-tissue window W400/L40)", fontsize=9)
    return report.save_figure(fig, path, dpi=110)
