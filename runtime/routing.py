"""Which model serves which file of a run.

A run names one model (``--model``, ``$MEDCLEAR_MODEL`` / ``$MEDCLEAR_SR2_MODEL``), or leaves it
to the task's default. The default denoiser covers every modality; x2 super-resolution ships one
model per modality (MR's k-space truncation wants band-limited interpolation, CT's blur wants
sharpening), so an ``sr2`` run without a named model sends each file to its modality's installed
x2 model and the rest to the default x2 model. The modality is read from the file's header only.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pydicom

from runtime.backends.select import SR2_MODEL_ENV, default_model, sr2_model_for
from runtime.inputs import Job

Group = tuple[Path | None, list[Job]]  # (the model, or None for the run's default; its files)


def header_modality(path: Path) -> str | None:
    """The file's Modality, read from its header; None when it cannot be read (the run that
    enhances the file reports why)."""
    try:
        modality = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality"], force=True).get("Modality")
    except Exception:  # unreadable here: whichever model gets it reports the cause
        return None
    return str(modality) if modality else None


def routes_by_modality(task: str | None, model: Path | None, remote: bool) -> bool:
    """Whether a run sends files to per-modality models: ``sr2``, no model named on the command
    line or in ``$MEDCLEAR_SR2_MODEL``, and not a Triton server's model."""
    return task == "sr2" and model is None and not remote and not os.environ.get(SR2_MODEL_ENV)


def sr2_groups(jobs: list[Job], models_dir: Path | None = None) -> list[Group]:
    """``jobs`` grouped by the x2 model shipped for their modality, in order of first appearance;
    files of a modality without one of its own (or whose header cannot be read) go to the default
    x2 model. ModelNotFoundError when such a file (or an empty run) finds no default x2 model."""
    # Looked up once, and only when a file needs it: an MR-only run needs no CT model.
    fallback = functools.cache(lambda: default_model(models_dir, task="sr2"))
    groups: dict[Path, list[Job]] = {}
    for job in jobs:
        modality = header_modality(job.source)
        own = sr2_model_for(modality, models_dir) if modality else None
        groups.setdefault(own or fallback(), []).append(job)
    return list(groups.items()) or [(fallback(), [])]
