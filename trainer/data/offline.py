"""Where the real DICOM images that ship inside installed packages live (no downloads).

pydicom ships its test files; the ``pydicom-data`` package ships larger ones (its import name
is ``data_store``); ``deid-data`` (pydicom's de-identification test data, import name
``deid_data``) ships a real 12-bit DX radiograph among colour and ultrasound files.
``pydicom.data.get_testdata_files`` would try to download missing files, so this module lists
the package folders directly.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def _package_dir(import_name: str, *parts: str) -> Path | None:
    spec = importlib.util.find_spec(import_name)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    return folder if folder.is_dir() else None


def offline_dicom_dirs() -> list[Path]:
    """Folders of packaged DICOM test files that exist on this machine."""
    return [folder for _, folder in _labelled_dirs()]


_PACKAGES = (("pydicom", ("pydicom", "data", "test_files")), ("pydicom-data", ("data_store", "data")),
             ("deid-data", ("deid_data", "data")))


def _labelled_dirs() -> list[tuple[str, Path]]:
    """``(package label, data folder)`` of the packages installed here."""
    found = ((label, _package_dir(*where)) for label, where in _PACKAGES)
    return [(label, folder) for label, folder in found if folder is not None]


def offline_dicom_entries() -> list[tuple[str, Path]]:
    """``(label, path)`` of every packaged file that may be DICOM (``.dcm`` and extension-less).

    The label names the package and the path inside its data folder, e.g.
    ``"pydicom-data/693_J2KR.dcm"``; it is the same on every machine.
    """
    entries: list[tuple[str, Path]] = []
    for package, folder in _labelled_dirs():
        for path in sorted(folder.rglob("*")):
            if path.is_file() and (path.suffix.lower() == ".dcm" or path.suffix == ""):
                entries.append((f"{package}/{path.relative_to(folder).as_posix()}", path))
    return entries


def offline_dicom_files() -> list[Path]:
    """Every packaged file that may be DICOM (``.dcm`` and extension-less), sorted by path."""
    return [path for _, path in offline_dicom_entries()]
