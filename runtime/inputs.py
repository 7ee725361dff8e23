"""Turning command-line inputs (files, folders, DICOMDIRs) into a list of jobs with output names."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydicom.fileset import FileSet

from runtime.dicom_io import InputError, is_dicomdir, read_dataset

OUTPUT_TAG = ".enhanced"
PREVIEW_TAG = ".preview"
FORMAT_SUFFIX = {"dicom": ".dcm", "png": ".png", "npy": ".npy"}


@dataclass(frozen=True)
class Job:
    """One input file and its path relative to the output folder (without suffix)."""

    source: Path
    relative: Path

    def output(self, outdir: Path, fmt: str) -> Path:
        """``OUTDIR/<relative>.enhanced.<ext>`` — deterministic, so re-runs find finished work."""
        return outdir / self.relative.with_name(self.relative.name + OUTPUT_TAG + FORMAT_SUFFIX[fmt])

    def preview(self, outdir: Path) -> Path:
        """``OUTDIR/<relative>.preview.png`` (before/after side by side)."""
        return outdir / self.relative.with_name(self.relative.name + PREVIEW_TAG + ".png")


def _stem(path: Path) -> Path:
    return path.with_suffix("") if path.suffix.lower() == ".dcm" else path


def _dicomdir_files(path: Path) -> list[Path]:
    """The image files a DICOMDIR references (pydicom's FileSet follows its records)."""
    ds = read_dataset(path)
    if not is_dicomdir(ds):
        return []
    try:
        return [Path(instance.path) for instance in FileSet(ds)]
    except Exception as error:  # pydicom raises several types for broken directories
        raise InputError(f"unreadable DICOMDIR: {error.__class__.__name__}: {error}") from None


def _is_dicomdir_file(path: Path) -> bool:
    return path.name.upper() == "DICOMDIR"


def discover(inputs: list[Path], exclude: Path | None = None) -> tuple[list[Job], list[tuple[Path, str]]]:
    """Expand inputs into jobs (deduplicated, in order) and ``(path, reason)`` input errors.

    A file maps to ``<name>``; a folder ``D`` to ``D.name/<path inside D>`` (recursive, DICOMDIR
    files inside are skipped since the walk already finds their images); a DICOMDIR to
    ``<its folder name>/<referenced path>``. ``exclude`` (the output folder) is never walked.
    """
    jobs: dict[Path, Job] = {}
    errors: list[tuple[Path, str]] = []
    excluded = exclude.resolve() if exclude is not None else None

    used: set[Path] = set()

    def add(path: Path, relative: Path) -> None:
        if path.resolve() in jobs:
            return
        relative = _stem(relative)
        if relative in used:  # same name from another folder: keep both apart
            relative = Path(path.resolve().parent.name) / relative
        while relative in used:
            relative = relative.with_name(relative.name + "_")
        used.add(relative)
        jobs[path.resolve()] = Job(path, relative)

    for item in inputs:
        if item.is_dir():
            for path in sorted(p for p in item.rglob("*") if p.is_file()):
                resolved = path.resolve()
                if excluded is not None and resolved.is_relative_to(excluded):
                    continue
                if not _is_dicomdir_file(path):
                    add(path, Path(item.resolve().name) / path.relative_to(item))
        elif item.is_file() and _is_dicomdir_file(item):
            try:
                for path in _dicomdir_files(item):
                    add(path, Path(item.resolve().parent.name) / path.relative_to(item.parent))
            except InputError as error:
                errors.append((item, str(error)))
        elif item.is_file():
            add(item, Path(item.name))
        else:
            errors.append((item, "no such file or directory"))
    return list(jobs.values()), errors
