"""Reading DICOM inputs safely: classify, bound the size before decoding, decode with a codec check.

Every failure becomes one short, patient-free sentence: ``InputError`` for files that should
have been enhanced but cannot be, ``NotAnImage`` for DICOM objects that carry no image (SR,
RT structure sets, plans, DICOMDIRs), which are skipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import UID

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
DEFAULT_MAX_PIXELS = 512 * 1024 * 1024  # e.g. 2000 frames of 512x512; about 2 GiB as float32


class InputError(ValueError):
    """A file that cannot be enhanced; the message is one line without patient data."""


class NotAnImage(InputError):
    """A valid DICOM object that holds no image to enhance (skipped, not failed)."""


def read_dataset(path: Path) -> Dataset:
    """Parse ``path`` (pixels still encoded); InputError if it is not readable DICOM."""
    try:
        return pydicom.dcmread(path)
    except InvalidDicomError:
        return _read_without_preamble(path)
    except (OSError, MemoryError) as error:
        raise InputError(f"cannot read file: {error.__class__.__name__}: {error}") from None
    except Exception as error:  # pydicom raises many types for corrupt data
        raise InputError(f"corrupt or truncated DICOM: {error.__class__.__name__}: {_short(error)}") from None


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


def is_dicomdir(ds: Dataset) -> bool:
    """True for a DICOMDIR (Media Storage Directory) object."""
    meta = getattr(ds, "file_meta", None)
    sop_class = meta.get("MediaStorageSOPClassUID") if meta is not None else None
    return str(sop_class or ds.get("SOPClassUID", "")) == MEDIA_STORAGE_DIRECTORY or "DirectoryRecordSequence" in ds


def check_image(ds: Dataset, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Raise NotAnImage / InputError before any pixel decoding if ``ds`` cannot be enhanced."""
    if is_dicomdir(ds):
        raise NotAnImage("DICOMDIR (media directory): pass it as an input to process the files it references")
    if len(ds) == 0:
        raise InputError("corrupt or truncated DICOM: no data elements could be read")
    if not any(keyword in ds for keyword in PIXEL_KEYWORDS):
        if "Rows" in ds and "Columns" in ds and "SOPClassUID" in ds and _declares_image(ds):
            raise InputError("truncated: image attributes present but the Pixel Data is missing")
        modality = str(ds.get("Modality", "")).strip() or "unknown modality"
        raise NotAnImage(f"no pixel data ({modality} object, not an image)")
    try:
        rows, columns = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
    except (TypeError, ValueError) as error:
        raise InputError(f"malformed image dimensions ({_short(error)})") from None
    if rows <= 0 or columns <= 0 or frames <= 0:
        raise InputError(f"invalid image dimensions {rows} x {columns} x {frames} frames")
    total = rows * columns * frames * samples
    if total > max_pixels:
        raise InputError(
            f"image too large: {rows} x {columns} x {frames} frames = {total} values exceeds the limit "
            f"of {max_pixels} (--max-pixels)"
        )
    syntax = UID(str(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2.1")))
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
        raise InputError(f"cannot decode pixel data: {error.__class__.__name__}: {_short(error)}") from None


def _declares_image(ds: Dataset) -> bool:
    """Image Pixel module attributes that only an image carries (not just Rows/Columns)."""
    return "BitsAllocated" in ds and "PhotometricInterpretation" in ds


def _has_decoder(syntax: UID) -> bool:
    try:
        get_decoder(syntax)
    except NotImplementedError:
        return False
    return True


def _short(error: BaseException, limit: int = 160) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
