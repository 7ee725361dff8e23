"""Where the real DICOM images that ship inside installed packages live (no downloads).

pydicom ships its test files; the ``pydicom-data`` package ships larger ones (its import name
is ``data_store``). ``pydicom.data.get_testdata_files`` would try to download missing files,
so this module lists the package folders directly.
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
    candidates = [_package_dir("pydicom", "data", "test_files"), _package_dir("data_store", "data")]
    return [folder for folder in candidates if folder is not None]


def offline_dicom_entries() -> list[tuple[str, Path]]:
    """``(label, path)`` of every packaged file that may be DICOM (``.dcm`` and extension-less).

    The label names the package and the path inside its data folder, e.g.
    ``"pydicom-data/693_J2KR.dcm"``; it is the same on every machine.
    """
    entries: list[tuple[str, Path]] = []
    for folder in offline_dicom_dirs():
        package = "pydicom" if folder.name == "test_files" else "pydicom-data"
        for path in sorted(folder.rglob("*")):
            if path.is_file() and (path.suffix.lower() == ".dcm" or path.suffix == ""):
                entries.append((f"{package}/{path.relative_to(folder).as_posix()}", path))
    return entries


def offline_dicom_files() -> list[Path]:
    """Every packaged file that may be DICOM (``.dcm`` and extension-less), sorted by path."""
    return [path for _, path in offline_dicom_entries()]
