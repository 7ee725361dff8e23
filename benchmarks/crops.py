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


def cropped(images: dict[str, np.ndarray], modality: str, spec: NormalizationSpec, side: int) -> dict[str, np.ndarray]:
    """Every image of a row cut to the region of interest of ``images["clean"]``."""
    top, left = region_of_interest(images["clean"], modality, spec, side)
    edge = min(side, *images["clean"].shape)
    return {name: image[top : top + edge, left : left + edge] for name, image in images.items()}


def crop_grid(rows: list[dict], columns: list[str], path: Path, side: int = 128,
              title: str = "held-out crops (CT: soft-tissue window W400/L40)", dpi: int = 110) -> Path:
    """One row per image (``name``, ``modality``, ``spec``, ``degradation``, ``images``: column ->
    array; rows may be cropped already, see :func:`cropped`) as a PNG; columns are titled by name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), len(columns), figsize=(1.9 * len(columns), 2.0 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        images = cropped(row["images"], row["modality"], row["spec"], side)
        for c, column in enumerate(columns):
            axis = axes[r][c]
            axis.set_xticks([])
            axis.set_yticks([])
            image = images.get(column)
            if image is None:
                axis.set_facecolor("0.85")
            else:
                axis.imshow(display(image, row["modality"], row["spec"], images["clean"]),
                            cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            if r == 0:
                axis.set_title(column, fontsize=8)
            if c == 0:
                axis.set_ylabel(f"{row['modality']} {row['degradation']}", fontsize=7)
    fig.suptitle(title, fontsize=9)
    path = report.save_figure(fig, path, dpi=dpi, title_inches=0.3)
    from PIL import Image

    with Image.open(path) as image:  # grey crops, black text: 8-bit grey is a quarter of RGBA
        grey = image.convert("L")
    grey.save(path, optimize=True)
    return path
