"""Which source an output was derived from, so that a name never stands in for an identity.

Output names come from input paths, and two patients' files can share a path (``IM1`` in two
exports). An existing output therefore counts as finished work only if it names this very
source: a derived DICOM by its Source Image Sequence (top level, or in the Derivation Image
Sequence of its functional groups), a PNG by a text chunk, an NPY by a small JSON file beside
it. An output of another source, or one whose source cannot be told, is never skipped as done
and never overwritten; this source's output moves to a name with a short digest of its SOP
Instance UID instead.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from runtime.dicom_io import InputError, Skipped
from runtime.inputs import Job

SOURCE_KEY = "medclear-source-sop-instance-uid"
NPY_RECORD_SUFFIX = ".json"
DIGEST_LENGTH = 12


def source_uid(ds: Dataset) -> str:
    """The identity of a source image: its SOP Instance UID."""
    return str(ds.get("SOPInstanceUID", "")).strip()


def uid_digest(uid: str) -> str:
    """A short, stable name part for a UID (the UID itself may be long)."""
    return hashlib.sha256(uid.encode()).hexdigest()[:DIGEST_LENGTH]


def npy_record(path: Path) -> Path:
    """``X.npy`` -> ``X.npy.json``: where an NPY output names its source."""
    return path.with_name(path.name + NPY_RECORD_SUFFIX)


def referenced_sources(ds: Dataset) -> set[str]:
    """SOP Instance UIDs a derived DICOM names as its sources."""
    holders = [ds]
    for group_name in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for group in ds.get(group_name) or []:
            holders.extend(group.get("DerivationImageSequence") or [])
    return {
        str(item.get("ReferencedSOPInstanceUID", "")).strip()
        for holder in holders
        for item in holder.get("SourceImageSequence") or []
    }


def output_sources(path: Path) -> set[str]:
    """The sources an existing output says it was derived from (empty if it cannot tell)."""
    try:
        if path.suffix == ".dcm":
            return referenced_sources(pydicom.dcmread(path, stop_before_pixels=True))
        if path.suffix == ".png":
            from PIL import Image

            with Image.open(path) as image:
                return {str(image.text.get(SOURCE_KEY, ""))}
        if path.suffix == ".npy":
            return {str(json.loads(npy_record(path).read_text()).get("source_sop_instance_uid", ""))}
    except Exception:  # unreadable, foreign or half-written: its source is unknown
        pass
    return set()


def derived_from(path: Path, uid: str) -> bool:
    """Whether the existing output at ``path`` was derived from the source with SOP Instance UID ``uid``."""
    return bool(uid) and uid in output_sources(path)


class AlreadyDone(Skipped):
    """An output derived from this very source exists: a re-run leaves it alone."""


def claim_output(job: Job, uid: str, outdir: Path, fmt: str, overwrite: bool = False, preview: bool = False) -> Job:
    """The job under whose names this source's outputs go.

    Its plain name, or the name with a digest of the source's UID when the plain name holds
    another source's output. AlreadyDone if an output of this source exists (unless
    ``overwrite``, or a requested preview is missing); InputError if both names hold other
    sources' outputs. Nothing of another source is ever chosen for replacing.
    """
    candidates = [(c, c.output(outdir, fmt)) for c in (job, job.renamed(uid_digest(uid)))]
    for candidate, target in candidates:
        if target.exists() and derived_from(target, uid):
            if overwrite or (preview and not candidate.preview(outdir).exists()):
                return candidate
            raise AlreadyDone(f"output exists ({target}), derived from this file; use --overwrite to redo it")
    for candidate, target in candidates:
        if not target.exists():
            return candidate
    raise InputError(
        f"cannot write output: {candidates[0][1]} and {candidates[1][1]} hold other sources' outputs; "
        "choose another output folder"
    )
