"""The geometry of an upscaled (super-resolution) image: matrix, pixel spacing, position.

Grid convention of the SR models, their training data and ``runtime.resample``: input pixel
``i`` covers output pixels ``s*i .. s*i + s - 1``, so the new grid covers exactly the area of
the old one and the centre of new pixel 0 lies at old index ``-(s - 1) / (2 s)`` (-0.25 for x2)
along each axis. With Pixel Spacing ``(row spacing, column spacing)`` and Image Orientation
(Patient) ``(row direction, column direction)`` (PS3.3 C.7.6.2.1.1):

    Rows, Columns         x s
    Pixel Spacing         / s   (also Imager Pixel Spacing, Nominal Scanned Pixel Spacing)
    Image Position        IPP - (s-1)/(2s) * (column spacing * row direction + row spacing * column direction)

Enhanced multi-frame objects get the same in their Pixel Measures (shared or per frame) and
Plane Position (per frame or shared) functional groups, each frame with its own spacing and
orientation. Overlays are repeated ``s`` times per axis, their origin moved to match.
Attributes that place things in pixel coordinates this module cannot rescale are refused.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.valuerep import format_number_as_ds

from runtime.resample import nearest

SPACING_KEYWORDS = ("PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing")
# Pixel-coordinate attributes with no rescaling rule here: such images are refused, not mis-described.
UNSUPPORTED = ("SequenceOfUltrasoundRegions", "RTImagePosition", "ImagePlanePixelSpacing")
OVERLAY_GROUPS = range(0x6000, 0x6020, 2)
SHARED, PER_FRAME = "SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"


class GeometryError(ValueError):
    """The image's geometry cannot be carried over to the upscaled grid."""


def first_pixel_offset(scale: int) -> float:
    """Where the new first pixel's centre lies, in old pixels along each axis: ``-(s-1)/(2s)``."""
    return -(scale - 1) / (2 * scale)


def upscaled_position(position, orientation, spacing, scale: int) -> list[float]:
    """Image Position (Patient) of the upscaled image's first pixel centre."""
    ipp = np.asarray([float(v) for v in position], dtype=np.float64)
    iop = np.asarray([float(v) for v in orientation], dtype=np.float64)
    row_spacing, column_spacing = (float(v) for v in spacing)
    offset = first_pixel_offset(scale)
    return list(ipp + offset * (column_spacing * iop[:3] + row_spacing * iop[3:6]))


def _ds_values(values) -> list[str]:
    return [format_number_as_ds(float(v)) for v in values]


def _item(group: Dataset | None, keyword: str) -> Dataset | None:
    """The single item of a functional group macro (e.g. PixelMeasuresSequence), or None."""
    sequence = group.get(keyword) if group is not None else None
    return sequence[0] if sequence else None


def _value(item: Dataset | None, keyword: str):
    return item.get(keyword) if item is not None and keyword in item else None


def _numbers(value, count: int) -> list[float] | None:
    """``count`` numbers from a multi-valued DS element, or None if it does not hold them."""
    try:
        numbers = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count else None


def _move(item: Dataset | None, spacing, orientation, scale: int, where: str) -> None:
    """Move ``item``'s Image Position (Patient), if it has one, by the first-pixel offset."""
    position = _numbers(item.get("ImagePositionPatient"), 3) if item is not None else None
    if position is None:
        return  # absent or empty (Type 2): nothing to move
    spacing, orientation = _numbers(spacing, 2), _numbers(orientation, 6)
    if spacing is None or orientation is None:
        raise GeometryError(f"{where}: Image Position (Patient) without Pixel Spacing and Image Orientation; "
                            "cannot place the upscaled grid")
    item.ImagePositionPatient = _ds_values(upscaled_position(position, orientation, spacing, scale))


def _divide_spacings(item: Dataset | None, scale: int) -> None:
    for keyword in SPACING_KEYWORDS:
        if item is None or not item.get(keyword):
            continue  # absent or empty
        spacing = _numbers(item[keyword].value, 2)
        if spacing is None:
            raise GeometryError(f"{keyword} is not two numbers; cannot halve it")
        item[keyword].value = _ds_values(v / scale for v in spacing)


def _upscale_functional_groups(ds: Dataset, scale: int) -> None:
    """Plane positions first (they need the old spacing), then the Pixel Measures."""
    shared = ds[SHARED][0] if ds.get(SHARED) else None
    shared_spacing = _value(_item(shared, "PixelMeasuresSequence"), "PixelSpacing")
    shared_orientation = _value(_item(shared, "PlaneOrientationSequence"), "ImageOrientationPatient")
    frames = list(ds.get(PER_FRAME, []))
    for index, frame in enumerate(frames):
        spacing = _value(_item(frame, "PixelMeasuresSequence"), "PixelSpacing") or shared_spacing
        orientation = _value(_item(frame, "PlaneOrientationSequence"), "ImageOrientationPatient") or shared_orientation
        _move(_item(frame, "PlanePositionSequence"), spacing, orientation, scale, f"frame {index + 1}")
    _move(_item(shared, "PlanePositionSequence"), shared_spacing, shared_orientation, scale, "shared functional group")
    for group in [shared, *frames]:
        _divide_spacings(_item(group, "PixelMeasuresSequence"), scale)


def _upscale_overlays(ds: Dataset, scale: int) -> None:
    """Overlay planes (60xx) repeated ``scale`` times per axis; origin moved onto the new grid."""
    from pydicom.pixels import pack_bits

    for group in OVERLAY_GROUPS:
        if (group, 0x3000) not in ds:
            continue  # no Overlay Data: nothing stored at the old matrix size
        try:
            bits = nearest(np.asarray(ds.overlay_array(group), dtype=np.uint8), scale)
        except Exception as error:  # pydicom raises several types for malformed overlays
            raise GeometryError(f"overlay {group:04X} cannot be read to upscale it ({type(error).__name__})") from None
        ds[group, 0x0010].value, ds[group, 0x0011].value = bits.shape[-2:]
        if (group, 0x0050) in ds:
            ds[group, 0x0050].value = [(int(v) - 1) * scale + 1 for v in ds[group, 0x0050].value]
        ds[group, 0x3000].value = pack_bits(bits.reshape(-1))


def upscale_geometry(ds: Dataset, scale: int) -> None:
    """Describe ``ds`` (in place) as its ``scale`` times larger matrix over the same area.

    GeometryError (one line) for attributes this module cannot rescale, or a position that
    cannot be moved (no spacing or orientation to move it along).
    """
    if scale == 1:
        return
    refused = [keyword for keyword in UNSUPPORTED if keyword in ds]
    if refused:
        raise GeometryError(f"super-resolution cannot rescale {', '.join(refused)}; such images are not upscaled")
    _move(ds, ds.get("PixelSpacing"), ds.get("ImageOrientationPatient"), scale, "image")
    _divide_spacings(ds, scale)
    _upscale_functional_groups(ds, scale)
    _upscale_overlays(ds, scale)
    ds.Rows, ds.Columns = int(ds.Rows) * scale, int(ds.Columns) * scale
