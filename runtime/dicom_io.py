"""Reading DICOM inputs safely: classify, bound the size before decoding, decode with a codec check.

Every failure becomes one short, patient-free sentence: ``InputError`` for files that should
have been enhanced but cannot be, ``Skipped`` (``NotAnImage``) for files that are left alone
on purpose, e.g. DICOM objects that carry no image (SR, RT plans, presentation states,
DICOMDIRs). A file that claims to be an image (an image storage SOP class, or image pixel
attributes) but whose pixels cannot be read is a failure, never a skip.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels.decoders.base import get_decoder
from pydicom.tag import Tag
from pydicom.uid import UID

from runtime.logtext import cause, described
from runtime.pixels import read_encoding

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# The default run (shipped fp32 model, --batch 1, --tile 1024) peaks at about 870 MiB plus 37
# bytes per pixel (docs/RUNTIME.md, memory); 24 Mi pixels keep it below 2 GiB.
DEFAULT_MAX_PIXELS = 24 * 1024 * 1024
UNDEFINED_LENGTH = 0xFFFFFFFF
PIXEL_DATA = 0x7FE00010


class InputError(ValueError):
    """A file that cannot be enhanced; the message is one line without patient data."""


class Skipped(InputError):
    """A file left alone on purpose (not a failure); the message says why."""


class NotAnImage(Skipped):
    """A valid DICOM object that holds no image to enhance."""


def read_dataset(path: Path) -> Dataset:
    """Parse ``path`` (pixels still encoded) and every element value in it.

    InputError if it is not readable DICOM, ends early, or has an element that cannot be read.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = _parse(path)
    if any("end of file" in str(warning.message).lower() for warning in caught):
        raise InputError("corrupt or truncated DICOM: the file ends inside a sequence or pixel data")
    _check_lengths(ds)
    _read_values(ds)
    return ds


def _parse(path: Path) -> Dataset:
    try:
        return pydicom.dcmread(path)
    except InvalidDicomError:
        return _read_without_preamble(path)
    except (OSError, MemoryError) as error:
        raise InputError(f"cannot read file: {described(error)}") from None
    except Exception as error:  # pydicom raises many types for corrupt data
        raise InputError(f"corrupt or truncated DICOM: {described(error, 160)}") from None


def _read_without_preamble(path: Path) -> Dataset:
    """Older files may lack the 128-byte preamble and 'DICM'; accept them only if they parse
    into something with a SOP Class UID, so that arbitrary files are not taken for DICOM."""
    try:
        ds = pydicom.dcmread(path, force=True)
        if "SOPClassUID" in ds:
            return ds
    except Exception:  # whatever forced parsing of a non-DICOM file raises
        pass
    raise InputError("not a DICOM file (no DICM preamble, no DICOM data elements)")


def _check_lengths(ds: Dataset) -> None:
    """A top-level element whose value is shorter than its declared length: the file was cut."""
    for tag in ds.keys():
        raw = ds.get_item(tag)
        length, value = getattr(raw, "length", None), getattr(raw, "value", None)
        if isinstance(value, bytes) and length not in (None, UNDEFINED_LENGTH) and len(value) < length:
            what = "the pixel data" if tag == PIXEL_DATA else f"element {Tag(tag)}"
            raise InputError(f"corrupt or truncated DICOM: {what} is cut short (the file ends early)")


def _read_values(ds: Dataset) -> None:
    """Convert every element now (pydicom converts lazily), naming the first unreadable one.

    The message names the tag and the error type only: a value could be patient data.
    """
    for tag in list(ds.keys()):
        try:
            element = ds[tag]
            items = list(element.value) if element.VR == "SQ" else []
        except Exception as error:  # unknown VR, bad length, undecodable text, ...
            raise InputError(
                f"corrupt DICOM: element {Tag(tag)} cannot be read ({error.__class__.__name__})"
            ) from None
        for item in items:
            _read_values(item)


def is_dicomdir(ds: Dataset) -> bool:
    """True for a DICOMDIR (Media Storage Directory) object."""
    meta = getattr(ds, "file_meta", None)
    sop_class = meta.get("MediaStorageSOPClassUID") if meta is not None else None
    return str(sop_class or ds.get("SOPClassUID", "")) == MEDIA_STORAGE_DIRECTORY or "DirectoryRecordSequence" in ds


def claims_image(ds: Dataset) -> bool:
    """Whether ``ds`` says it is an image: an image storage SOP class, or image pixel attributes."""
    meta = getattr(ds, "file_meta", None)
    classes = [meta.get("MediaStorageSOPClassUID") if meta is not None else None, ds.get("SOPClassUID")]
    named = any("Image Storage" in UID(str(uid)).name for uid in classes if uid)
    return named or ("BitsAllocated" in ds and "PhotometricInterpretation" in ds)


def check_image(ds: Dataset, max_pixels: int = DEFAULT_MAX_PIXELS, scale: int = 1) -> None:
    """Raise NotAnImage / InputError before any pixel decoding if ``ds`` cannot be enhanced;
    ``max_pixels`` bounds the output's values (a super-resolution model's: ``scale``² times
    the input's)."""
    if is_dicomdir(ds):
        raise NotAnImage("DICOMDIR (media directory): pass it as an input to process the files it references")
    if len(ds) == 0:
        raise InputError("corrupt or truncated DICOM: no data elements could be read")
    if not any(keyword in ds for keyword in PIXEL_KEYWORDS):
        if claims_image(ds):
            raise InputError("corrupt or truncated DICOM: an image object without Pixel Data")
        modality = str(ds.get("Modality", "")).strip() or "unknown modality"
        raise NotAnImage(f"no pixel data ({cause(modality, 16)} object, not an image)")
    rows, columns, frames, samples = _dimensions(ds)
    read_encoding(ds)  # greyscale, bit depth, finite rescale: refused before decoding
    total = rows * columns * frames * samples * scale**2
    if total > max_pixels:
        upscaled = f" after x{scale} super-resolution" if scale != 1 else ""
        raise InputError(
            f"image too large: {rows} x {columns} x {frames} frames = {total} values{upscaled} exceeds the limit "
            f"of {max_pixels} (--max-pixels)"
        )
    for keyword, name in (("SOPClassUID", "SOP Class UID"), ("SOPInstanceUID", "SOP Instance UID")):
        if not str(ds.get(keyword, "")).strip():
            raise InputError(f"corrupt DICOM: no {name} (an image must have one; the output references it)")
    _check_codec(ds)


def _dimensions(ds: Dataset) -> tuple[int, int, int, int]:
    """Rows, columns, frames and samples per pixel; InputError unless all are positive integers."""
    try:
        rows, columns = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
    except (TypeError, ValueError, OverflowError) as error:
        raise InputError(f"malformed image dimensions ({cause(error, 80)})") from None
    if rows <= 0 or columns <= 0 or frames <= 0 or samples <= 0:
        raise InputError(f"invalid image dimensions {rows} x {columns} x {frames} frames")
    return rows, columns, frames, samples


def _check_codec(ds: Dataset) -> None:
    syntax = UID(str(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2.1")))
    if syntax.name == str(syntax) or not syntax.is_transfer_syntax:
        raise InputError(f"unknown transfer syntax {cause(syntax, 64)} (corrupt file meta?)")
    if syntax.is_compressed:
        decoder = get_decoder(syntax) if _has_decoder(syntax) else None
        if decoder is None or not decoder.is_available:
            missing = "; ".join(decoder.missing_dependencies) if decoder is not None else "no decoder known"
            raise InputError(
                f"no codec installed for transfer syntax {syntax.name} ({syntax}); "
                f"install the pylibjpeg plugins (pip install pylibjpeg pylibjpeg-libjpeg "
                f"pylibjpeg-openjpeg pylibjpeg-rle) [{missing}]"
            )


def decode(ds: Dataset) -> np.ndarray:
    """Force pixel decoding now, turning codec and length errors into InputError."""
    try:
        return ds.pixel_array
    except Exception as error:  # codecs raise many types for damaged streams
        raise InputError(f"cannot decode pixel data: {described(error, 160)}") from None


def _has_decoder(syntax: UID) -> bool:
    try:
        get_decoder(syntax)
    except NotImplementedError:
        return False
    return True
