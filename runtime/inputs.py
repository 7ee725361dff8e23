"""Turning command-line inputs (files, folders, DICOMDIRs) into a list of jobs with output names."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from runtime.dicom_io import InputError, is_dicomdir, read_dataset
from runtime.outputs import TEMP_PREFIX

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

    def renamed(self, tag: str) -> "Job":
        """The same source under ``<relative>.<tag>`` (when its plain name belongs to another source)."""
        return Job(self.source, self.relative.with_name(f"{self.relative.name}.{tag}"))


def _stem(path: Path) -> Path:
    return path.with_suffix("") if path.suffix.lower() == ".dcm" else path


def _dicomdir_files(path: Path) -> tuple[list[tuple[Path, Path]], list[tuple[Path, str]]] | None:
    """``(file, File ID path)`` for every DICOMDIR record that references a file, and ``(file,
    reason)`` for records whose file is missing or whose File ID would leave the file-set;
    None if ``path`` is not a DICOMDIR. File IDs are relative to the DICOMDIR's real folder;
    a DICOMDIR given by a relative path keeps its paths relative."""
    ds = read_dataset(path)
    if not is_dicomdir(ds):
        return None
    root = path.resolve().parent if path.is_symlink() else path.parent
    files, problems = [], []
    for record in ds.get("DirectoryRecordSequence") or []:
        components = record.get("ReferencedFileID")
        if not components:
            continue
        parts = [components] if isinstance(components, str) else [str(part) for part in components]
        if any(part in ("", ".", "..") or "/" in part or "\\" in part for part in parts):
            problems.append((path, f"DICOMDIR record with an invalid File ID {'/'.join(parts)!r}"))
        elif (root / Path(*parts)).is_file():
            files.append((root / Path(*parts), Path(*parts)))
        else:
            problems.append((root / Path(*parts), f"referenced by DICOMDIR {path} but missing"))
    return files, problems


def is_output_name(name: str) -> bool:
    """Whether a file name is one medclear writes: ``*.enhanced.*`` (with an NPY's ``.json``),
    ``*.preview.png`` or an unfinished ``.medclear-tmp-*`` file."""
    return OUTPUT_TAG + "." in name or PREVIEW_TAG + "." in name or name.startswith(TEMP_PREFIX)


def foreign_files(folder: Path) -> list[Path]:
    """The files under ``folder`` (recursively) that medclear did not write; [] if it does not exist."""
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.rglob("*") if path.is_file() and not is_output_name(path.name))


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
                found = _dicomdir_files(item)
            except InputError as error:
                errors.append((item, str(error)))
                continue
            if found is None:  # a file named DICOMDIR that is not one: an ordinary input
                add(item, Path(item.name))
                continue
            for path, inside in found[0]:
                add(path, Path(item.resolve().parent.name) / inside)
            errors.extend(found[1])
        elif item.is_file():
            add(item, Path(item.name))
        else:
            errors.append((item, "no such file or directory"))
    return list(jobs.values()), errors
