"""The DICOM inputs of the end-to-end, cold-start and memory measurements.

All come from packaged real files (pydicom, pydicom-data); the 1024x1024 CT is the 512x512
CT slice upsampled 2x (no real 1024^2 CT ships offline), and says so in its label.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from trainer.data.offline import offline_dicom_files

CT_512 = "693_UNCR.dcm"  # CT, 512x512, 16-bit, uncompressed
MR_1024 = "MR2_UNCR.dcm"  # MR, 1024x1024, uncompressed
XRAY_2K = "RG1_UNCR.dcm"  # CR, 1955x1841, MONOCHROME1, uncompressed


@dataclass(frozen=True)
class DicomInput:
    """One input file with the label and size reported beside its numbers."""

    key: str
    label: str
    path: Path
    rows: int
    columns: int


def offline_file(name: str) -> Path:
    """The packaged DICOM file called ``name``; FileNotFoundError naming it when absent."""
    for path in offline_dicom_files():
        if path.name == name:
            return path
    raise FileNotFoundError(f"{name}: packaged DICOM file not found (install pydicom-data)")


def upsampled_copy(source: Path, factor: int, out: Path) -> Path:
    """Write ``source`` upsampled ``factor`` x (pixel replication) as a new uncompressed file."""
    ds = pydicom.dcmread(source)
    pixels = np.asarray(ds.pixel_array)
    ds.PixelData = np.repeat(np.repeat(pixels, factor, axis=0), factor, axis=1).tobytes()
    ds.Rows, ds.Columns = pixels.shape[0] * factor, pixels.shape[1] * factor
    if "PixelSpacing" in ds:
        ds.PixelSpacing = [float(v) / factor for v in ds.PixelSpacing]
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out, enforce_file_format=True)
    return out


def _describe(key: str, label: str, path: Path) -> DicomInput:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return DicomInput(key, label, path, int(ds.Rows), int(ds.Columns))


def ct_512() -> DicomInput:
    """The real 512x512 CT slice."""
    return _describe("ct512", "CT 512x512 (real, 693_UNCR)", offline_file(CT_512))


def ct_1024(workdir: Path) -> DicomInput:
    """A 1024x1024 CT: the real slice upsampled 2x, written into ``workdir``."""
    path = upsampled_copy(offline_file(CT_512), 2, workdir / "ct_1024.dcm")
    return _describe("ct1024", "CT 1024x1024 (693_UNCR upsampled 2x)", path)


def mr_1024() -> DicomInput:
    """The real 1024x1024 MR image."""
    return _describe("mr1024", "MR 1024x1024 (real, MR2_UNCR)", offline_file(MR_1024))


def xray_2k() -> DicomInput:
    """The real ~2k x 2k computed radiograph."""
    return _describe("xray2k", "CR 1955x1841 (real, RG1_UNCR)", offline_file(XRAY_2K))
