"""Stored DICOM pixel values <-> modality values (HU for CT), and back.

This is the first half of the image contract: it undoes what the DICOM encoding does
(Rescale Slope/Intercept, MONOCHROME1 inversion, signed/unsigned storage, Bits Stored,
pixel padding) so that the model sees physical values, and it redoes it exactly on the
way out, clipping to what the source's pixel representation can hold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

SUPPORTED_PHOTOMETRIC = ("MONOCHROME1", "MONOCHROME2")


class UnsupportedImageError(ValueError):
    """The dataset holds no greyscale image this project can enhance."""


@dataclass(frozen=True)
class PixelEncoding:
    """How one source image stores its values; enough to re-encode an enhanced image."""

    bits_allocated: int
    bits_stored: int
    signed: bool
    photometric: str
    slope: float = 1.0
    intercept: float = 0.0
    padding_value: int | None = None
    padding_range_limit: int | None = None
    modality: str = "OT"
    extra: dict = field(default_factory=dict)

    @property
    def stored_min(self) -> int:
        """Smallest value Bits Stored and Pixel Representation can hold."""
        return -(1 << (self.bits_stored - 1)) if self.signed else 0

    @property
    def stored_max(self) -> int:
        """Largest value Bits Stored and Pixel Representation can hold."""
        return (1 << (self.bits_stored - 1)) - 1 if self.signed else (1 << self.bits_stored) - 1

    @property
    def numpy_dtype(self) -> np.dtype:
        """The dtype pydicom uses for this encoding's Pixel Data."""
        kind = "int" if self.signed else "uint"
        return np.dtype(f"{kind}{self.bits_allocated}")


def _single_rescale(ds: Dataset, keyword: str, default: float) -> float:
    value = ds.get(keyword, default)
    if value is None or value == "":
        return default
    # Some writers store multi-valued rescale tags; the first value is the one that applies.
    if isinstance(value, (list, tuple, MultiValue)):
        value = value[0]
    return float(value)


def _item_rescale(item: Dataset) -> tuple[float, float] | None:
    """Rescale Slope/Intercept of a dataset or functional group item, if it declares them."""
    if "RescaleSlope" in item or "RescaleIntercept" in item:
        return _single_rescale(item, "RescaleSlope", 1.0), _single_rescale(item, "RescaleIntercept", 0.0)
    transform = item.get("PixelValueTransformationSequence")
    if transform:
        return _item_rescale(transform[0])
    return None


def _frame_rescale(ds: Dataset) -> tuple[float, float]:
    """Rescale Slope/Intercept, including enhanced multi-frame shared and per-frame groups.

    One encoding serves all frames, so per-frame values must agree; different values per frame
    are refused rather than silently applying the first frame's to all.
    """
    found = _item_rescale(ds)
    if found is not None:
        return found
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared and (found := _item_rescale(shared[0])) is not None:
        return found
    per_frame = {_item_rescale(item) for item in ds.get("PerFrameFunctionalGroupsSequence", [])}
    per_frame.discard(None)
    if len(per_frame) > 1:
        raise UnsupportedImageError("Rescale Slope/Intercept differ between frames")
    return per_frame.pop() if per_frame else (1.0, 0.0)


def read_encoding(ds: Dataset) -> PixelEncoding:
    """Describe how ``ds`` stores its pixels; raise UnsupportedImageError for non-greyscale data."""
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise UnsupportedImageError("no pixel data (not an image object)")
    if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        raise UnsupportedImageError("floating-point pixel data is not supported")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if photometric not in SUPPORTED_PHOTOMETRIC:
        raise UnsupportedImageError(
            f"photometric interpretation {photometric or 'missing'!r} is not greyscale "
            "(only MONOCHROME1/MONOCHROME2 are enhanced)"
        )
    if "ModalityLUTSequence" in ds:
        # A lookup table has no exact inverse, so enhanced values could not be stored back.
        raise UnsupportedImageError("Modality LUT Sequence is not supported (only Rescale Slope/Intercept)")
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise UnsupportedImageError("more than one sample per pixel")
    bits_allocated = int(ds.get("BitsAllocated", 16))
    if bits_allocated not in (8, 16, 32):
        raise UnsupportedImageError(f"Bits Allocated {bits_allocated} is not supported")
    bits_stored = int(ds.get("BitsStored", bits_allocated))
    slope, intercept = _frame_rescale(ds)
    if not (math.isfinite(slope) and math.isfinite(intercept)):
        raise UnsupportedImageError("Rescale Slope or Intercept is not a finite number")
    padding = ds.get("PixelPaddingValue")
    padding_limit = ds.get("PixelPaddingRangeLimit")
    return PixelEncoding(
        bits_allocated=bits_allocated,
        bits_stored=bits_stored,
        signed=int(ds.get("PixelRepresentation", 0)) == 1,
        photometric=photometric,
        slope=slope if slope != 0 else 1.0,
        intercept=intercept,
        padding_value=int(padding) if padding is not None else None,
        padding_range_limit=int(padding_limit) if padding_limit is not None else None,
        modality=str(ds.get("Modality", "OT")).upper() or "OT",
    )


def stored_values(ds: Dataset, encoding: PixelEncoding) -> np.ndarray:
    """Pixel Data as stored integers, shape ``(frames, rows, columns)``, Bits Stored applied."""
    array = np.asarray(ds.pixel_array)
    if not array.dtype.isnative:  # big-endian transfer syntaxes
        array = array.astype(array.dtype.newbyteorder("="))
    if array.ndim == 2:
        array = array[np.newaxis]
    if array.ndim != 3:
        raise UnsupportedImageError(f"unexpected pixel array shape {array.shape}")
    return array


def padding_mask(stored: np.ndarray, encoding: PixelEncoding) -> np.ndarray | None:
    """True where a pixel is padding (PS3.3 C.7.5.1.1.2); None when the image declares none."""
    if encoding.padding_value is None:
        return None
    if encoding.padding_range_limit is None:
        return stored == encoding.padding_value
    low, high = sorted((encoding.padding_value, encoding.padding_range_limit))
    return (stored >= low) & (stored <= high)


def to_modality(stored: np.ndarray, encoding: PixelEncoding) -> np.ndarray:
    """Stored integers -> modality values (HU for CT) as float32, brighter = larger.

    MONOCHROME1 images are inverted within the stored range so that larger always means
    brighter (more attenuation) for the model, whatever the source's convention.
    """
    values = stored.astype(np.float64)
    if encoding.photometric == "MONOCHROME1":
        values = (encoding.stored_min + encoding.stored_max) - values
    return (values * encoding.slope + encoding.intercept).astype(np.float32)


def modality_range(encoding: PixelEncoding) -> tuple[float, float]:
    """The lowest and highest modality value the encoding can store (what a file clips to)."""
    ends = to_modality(np.array([encoding.stored_min, encoding.stored_max]), encoding)
    return float(ends.min()), float(ends.max())


def from_modality(modality: np.ndarray, encoding: PixelEncoding) -> np.ndarray:
    """Modality values -> stored integers of the source encoding, clipped to its range.

    The exact inverse of :func:`to_modality` for values it produced.
    """
    values = (np.asarray(modality, dtype=np.float64) - encoding.intercept) / encoding.slope
    values = np.rint(values)
    if encoding.photometric == "MONOCHROME1":
        values = (encoding.stored_min + encoding.stored_max) - values
    values = np.clip(values, encoding.stored_min, encoding.stored_max)
    return values.astype(encoding.numpy_dtype)
