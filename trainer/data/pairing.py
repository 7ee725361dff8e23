"""Pair low-dose and full-dose DICOM series slice by slice (AAPM/Mayo low-dose CT layout).

Slices are matched within the same sub-folder (patient/series) by slice position, the
Image Position (Patient) projected on the slice normal or else Slice Location, when every file
states one; otherwise by Instance Number. A slice without a partner is an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

FULL_DOSE_NAMES = ("full_dose", "full", "fd", "normal_dose", "full_1mm", "full_3mm")
LOW_DOSE_NAMES = ("quarter_dose", "low_dose", "quarter", "qd", "ld", "quarter_1mm", "quarter_3mm")


@dataclass(frozen=True)
class SlicePair:
    """One matched slice: its full-dose and low-dose files and the key that matched them."""

    full: Path
    low: Path
    folder: str  # sub-folder relative to the dose folders ("." at their top)
    key: str  # e.g. "position 47.00 mm" or "instance 12"


def find_dose_dirs(root: str | Path) -> tuple[Path, Path] | None:
    """``(low_dir, full_dir)`` when ``root`` holds a full-dose and a low-dose folder, else None."""
    root = Path(root)
    children = {child.name.lower(): child for child in root.iterdir() if child.is_dir()} if root.is_dir() else {}
    full = next((children[n] for n in FULL_DOSE_NAMES if n in children), None)
    low = next((children[n] for n in LOW_DOSE_NAMES if n in children), None)
    return (low, full) if full is not None and low is not None else None


def _position(ds: pydicom.Dataset) -> float | None:
    position = ds.get("ImagePositionPatient")
    orientation = ds.get("ImageOrientationPatient")
    if position is not None and len(position) == 3:
        if orientation is not None and len(orientation) == 6:
            normal = np.cross(np.asarray(orientation[:3], float), np.asarray(orientation[3:], float))
            return float(np.dot(normal, np.asarray(position, float)))
        return float(position[2])
    location = ds.get("SliceLocation")
    return float(location) if location is not None and str(location) != "" else None


def _headers(folder: Path) -> dict[Path, pydicom.Dataset]:
    headers = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError):
            continue  # not DICOM (notes, thumbnails): ignore
        if "Rows" in ds:
            headers[path] = ds
    if not headers:
        raise ValueError(f"{folder}: no DICOM image files found")
    return headers


def _keyed(folder: Path, headers: dict[Path, pydicom.Dataset], by: str) -> dict[tuple[str, str], Path]:
    keyed: dict[tuple[str, str], Path] = {}
    for path, ds in headers.items():
        if by == "position":
            key = f"position {_position(ds):.2f} mm"
        else:
            key = f"instance {int(ds.InstanceNumber)}"
        index = (path.parent.relative_to(folder).as_posix(), key)
        if index in keyed:
            raise ValueError(f"{path}: same {key} as {keyed[index]} (two slices in one series?)")
        keyed[index] = path
    return keyed


def pair_series(low_dir: str | Path, full_dir: str | Path) -> list[SlicePair]:
    """Match every low-dose slice to its full-dose slice; raise ValueError for any unmatched one."""
    low_dir, full_dir = Path(low_dir), Path(full_dir)
    for folder in (low_dir, full_dir):
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: dose folder does not exist")
    low, full = _headers(low_dir), _headers(full_dir)
    every = list(low.values()) + list(full.values())
    if all(_position(ds) is not None for ds in every):
        by = "position"
    elif all(ds.get("InstanceNumber") not in (None, "") for ds in every):
        by = "instance"
    else:
        raise ValueError(f"{low_dir} / {full_dir}: slices state neither a position nor an Instance Number to match by")
    low_keyed, full_keyed = _keyed(low_dir, low, by), _keyed(full_dir, full, by)
    for index, path in low_keyed.items():
        if index not in full_keyed:
            raise ValueError(f"{path}: no full-dose slice at {index[1]} in {full_dir / index[0]}")
    for index, path in full_keyed.items():
        if index not in low_keyed:
            raise ValueError(f"{path}: no low-dose slice at {index[1]} in {low_dir / index[0]}")
    return [SlicePair(full_keyed[i], low_keyed[i], i[0], i[1]) for i in sorted(full_keyed)]
