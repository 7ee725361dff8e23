"""Rendering one case's arms to 8-bit display images: the same windows for every arm.

CT gets the soft-tissue (W400/L40) and lung (W1500/L-600) windows that the quality benchmarks
score in (``trainer.metrics``); other modalities get the file's VOI window, else the
0.5-99.5 percentiles of the original image (``runtime.outputs.display_window``, the PNG
preview's window). Windows are chosen from the original, so no arm is windowed differently.
PNGs carry no text chunks and are stored uncompressed: nothing but pixels tells one arm from another.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from runtime.outputs import display_window, to_display, write_png
from trainer.metrics import LUNG_WINDOW, SOFT_TISSUE_WINDOW

Window = tuple[str, tuple[float, float]]  # preset name, (low, high) modality values
CT_PRESETS = (("Soft tissue", SOFT_TISSUE_WINDOW), ("Lung", LUNG_WINDOW))  # name, (level, width)
DEFAULT_PRESET = "Default"


def case_windows(ds: Dataset, original: np.ndarray, modality: str) -> list[Window]:
    """The display presets of a case, from its original values."""
    if modality == "CT":
        return [(name, (level - width / 2, level + width / 2)) for name, (level, width) in CT_PRESETS]
    return [(DEFAULT_PRESET, display_window(ds, original, modality))]


def grey_levels(values: np.ndarray, window: tuple[float, float], photometric: str) -> np.ndarray:
    """Modality values -> uint8 within ``window``; MONOCHROME1 inverted so that it displays as read."""
    grey = to_display(values, window)
    return 255 - grey if photometric.strip().upper() == "MONOCHROME1" else grey


def write_image(path: Path, grey: np.ndarray) -> None:
    """Save a uint8 image as an uncompressed PNG without metadata (atomically): every arm's file
    of a case has the same bytes count, so not even the size tells a smoother arm apart."""
    write_png(path, np.ascontiguousarray(grey), compress=False)
