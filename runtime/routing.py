"""Which model serves which file of a run.

A run names one model (``--model``, ``$MEDCLEAR_MODEL`` / ``$MEDCLEAR_SR2_MODEL``), or leaves it
to the task's default. Some modalities ship a model of their own (``MODALITY_MODELS``: MR has its
own denoiser and its own x2 model; x2 also names CT's), so a run without a named model sends each
file to its modality's installed model and the rest to the task's default model. The modality is
read from the file's header only.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pydicom

from runtime.backends.select import DEFAULT_TASK, TASK_MODELS, default_model, installed_or_given, modality_model
from runtime.inputs import Job
from runtime.model_location import model_location

# (the model: a path, a Triton URL, or None for the run's default or server model; its files)
Group = tuple[Path | str | None, list[Job]]


def header_modality(path: Path) -> str | None:
    """The file's Modality, read from its header; None when it cannot be read (the run that
    enhances the file reports why)."""
    try:
        modality = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality"], force=True).get("Modality")
    except Exception:  # unreadable here: whichever model gets it reports the cause
        return None
    return str(modality) if modality else None


def routes_by_modality(task: str | None, model: Path | None, remote: bool) -> bool:
    """Whether a run sends files to per-modality models: no model named on the command line or in
    the task's environment variable (``$MEDCLEAR_MODEL``, ``$MEDCLEAR_SR2_MODEL``), and not a
    Triton server's model."""
    env = TASK_MODELS.get(task or DEFAULT_TASK, (None,))[0]
    return model is None and not remote and not (env and os.environ.get(env))


def routed_model(modality: str | None, task: str = DEFAULT_TASK, models_dir: Path | None = None) -> Path:
    """The model a routed run gives a file of ``modality`` (None: unknown): its modality's own
    installed model, else the task's default model (ModelNotFoundError when there is none)."""
    own = modality_model(modality, task, models_dir) if modality else None
    return own or default_model(models_dir, task=task)


def modality_groups(jobs: list[Job], task: str = DEFAULT_TASK, models_dir: Path | None = None, *,
                    routed: bool = True, model: Path | str | None = None,
                    overrides: dict[str, Path | str] | None = None) -> list[Group]:
    """``jobs`` grouped by the model that serves them, in order of first appearance: a file whose
    modality ``overrides`` names goes to that model (``--modality-model``); else, ``routed``, to
    the model ``task`` ships for its modality, and otherwise (or when its header cannot be read)
    to the task's default model; not ``routed``, to ``model`` (the run's named model, None for a
    Triton server's). ModelNotFoundError when a routed file (or an empty run) finds no default."""
    # Looked up once, and only when a file needs it: an MR-only x2 run needs no CT model.
    fallback = functools.cache(lambda: default_model(models_dir, task=task)) if routed else (lambda: model)
    overrides = overrides or {}
    groups: dict[Path | str | None, list[Job]] = {}
    for job in jobs:
        modality = header_modality(job.source) if routed or overrides else None
        key = modality.strip().upper() if modality else None
        own = overrides.get(key) if key else None
        if own is None and routed and modality:
            own = modality_model(modality, task, models_dir)
        groups.setdefault(own or fallback(), []).append(job)
    return list(groups.items()) or [(fallback(), [])]


def given_model(model: Path | str) -> Path | str:
    """A ``--modality-model`` MODEL as a run opens it: a Triton model URL (text) as it is, a file
    as :func:`runtime.backends.select.installed_or_given` finds it (a bare installed name works)."""
    return model if isinstance(model, str) else installed_or_given(model)


def parse_modality_model(text: str) -> tuple[str, Path | str]:
    """``MODALITY=MODEL`` (``--modality-model``) as ``(MODALITY in capitals, MODEL)``; ValueError
    naming the form otherwise. MODEL is a file (.onnx, .engine: a Path) or a Triton model URL
    (``grpc://HOST:PORT/NAME``: kept as text, since a Path folds its "//")."""
    modality, equals, model = text.partition("=")
    modality, model = modality.strip(), model.strip()
    if not equals or not modality or not model or not modality.isalnum():
        raise ValueError(f"expected MODALITY=MODEL (e.g. MR=medclear_student_mr.int8.engine), got {text!r}")
    return modality.upper(), model_location(model)
