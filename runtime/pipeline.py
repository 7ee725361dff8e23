"""The one inference path: open a model through a runtime backend, prepare the image with the
image contract, run the model (padded, batched, tiled) at a strength, restore it.

The CLI (``runtime.enhance``), the folder watcher (``jetson/watch_folder.py``), ``compiler
verify --heldout`` and the quality and end-to-end benchmarks all call these functions. A model
is always fed what its own contract asks for (CT: its HU window; MR, X-ray: percentile
scaling), and results come back in modality units (HU for CT); a super-resolution model's
(contract ``scale`` s > 1) come back with s times the rows and columns. A ``noise_map`` model
(contract ``noise_conditioning``) gets a second input channel, the constant noise level of the
whole image in normalized units (``runtime.noise.normalized_noise_level``), added to every
batch of padded frames or tiles (:func:`with_noise_map`). Callers that time the stages
pass a stopwatch: any ``watch(stage)`` that returns a context manager (``prepare``, ``infer``,
``restore``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager

import numpy as np
from pydicom.dataset import Dataset

from runtime.backends import Backend, BackendError, select_backend
from runtime.backends.select import DEFAULT_TASK, check_task
from runtime.backends.triton_backend import TritonTarget
from runtime.image_contract import (
    PreparedImage,
    denormalize_frames,
    excluded_pixels,
    keep_excluded,
    modality_values,
    normalize_frames,
    prepare,
    restore,
)
from runtime.model_contract import NOISE_MAP, ModelContract
from runtime.noise import MeasuredNoise, NoiseLevel, normalized_noise_level, prepared_noise
from runtime.normalization import NormalizationState
from runtime.resample import bicubic
from runtime.strength import DEFAULT_STRENGTH, apply_strength, check_strength
from runtime.tiling import InferFn, TilePlan, enhance_frames

Stopwatch = Callable[[str], ContextManager[object]]
DEFAULT_TILE, DEFAULT_OVERLAP = 1024, 32  # the CLI's --tile, --overlap
# One frame or tile per model call by default (the CLI's --batch): on CPUs a batch runs no
# faster, and each extra 1024x1024 tile in a call costs ONNX Runtime about 400 MB (docs/RUNTIME.md, memory).
DEFAULT_BATCH = 1
# The noise level a noise_map model is given with synthetic images (timing, random checks),
# in normalized units: about 20 HU in a 400 HU CT window, a routine-dose level.
SYNTHETIC_NOISE_LEVEL = 0.05


class ModalityError(ValueError):
    """The model's contract does not list the image's modality."""


def no_stopwatch(stage: str) -> ContextManager[object]:
    """The stopwatch used when none is passed: times nothing."""
    return contextlib.nullcontext()


def open_model(
    model: str | Path | None = None, backend: str = "auto", *, threads: int | None = None,
    cuda_graphs: bool = False, cpu_only: bool = False, ort_optimization: str = "all",
    server: TritonTarget | None = None, task: str | None = None,
) -> Backend:
    """An opened backend for ``model`` (if None: the default model of ``task``, default
    ``denoise``): its contract read, a TensorRT engine's sidecar checked against this machine,
    or (``server``) a model on a Triton server. BackendError (one line) otherwise, also when
    ``task`` is given and the model's contract is of another task (its scale)."""
    opened = select_backend(model, backend, threads, cuda_graphs, cpu_only=cpu_only,
                            ort_optimization=ort_optimization, server=server, task=task or DEFAULT_TASK)
    opened.open()
    try:
        if task is not None:
            check_task(opened.contract, task, opened.source)
    except BackendError:
        opened.close()
        raise
    return opened


def tile_plan(
    backend: Backend, *, tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP, batch: int | None = None
) -> TilePlan:
    """Tiling and batching within what the model accepts (a TensorRT profile bounds both).
    ``batch`` None: what the backend prefers (Triton: its requests in flight), else DEFAULT_BATCH."""
    if batch is None:  # duck-typed backends (tests' recorders) may not say
        batch = getattr(backend, "preferred_batch", None) or DEFAULT_BATCH
    limits = backend.constraints
    if limits.max_side is not None:
        tile = min(tile, limits.max_side) if tile else limits.max_side
    if limits.max_batch is not None:
        batch = min(batch, limits.max_batch)
    contract = getattr(backend, "contract", None)
    return TilePlan(size_multiple=limits.size_multiple, tile=tile, overlap=overlap, batch=batch,
                    min_side=limits.min_side, scale=getattr(contract, "scale", 1))


def check_modality(contract: ModelContract, modality: str) -> str:
    """``modality`` (upper case) if the contract lists it or ``*``; ModalityError otherwise."""
    key = (modality or "OT").strip().upper() or "OT"
    if not contract.covers(key):
        raise ModalityError(f"modality {key} is not one the model {contract.model_name} was trained for "
                            f"({', '.join(contract.modalities)})")
    return key


def noise_map_level(
    contract: ModelContract, normalized: np.ndarray, states: list[NormalizationState], modality: str,
    padding: np.ndarray | None = None,
) -> float | None:
    """The noise level a ``noise_map`` model is given with these normalized frames
    (:func:`runtime.noise.normalized_noise_level`); None for a blind model."""
    if contract.noise_conditioning != NOISE_MAP:
        return None
    return normalized_noise_level(normalized, states, modality, padding)


def prepared_level(contract: ModelContract, noise: MeasuredNoise) -> float | None:
    """The level a ``noise_map`` model is given for an image whose noise was measured
    (:func:`runtime.noise.prepared_noise`); None for a blind model."""
    return noise.normalized if contract.noise_conditioning == NOISE_MAP else None


def add_noise_map(batch: np.ndarray, level: float | None) -> np.ndarray:
    """An image batch ``[N, 1, H, W]`` as a model input: with ``level`` as a constant second
    channel (``[N, 2, H, W]``, a ``noise_map`` model's), unchanged when ``level`` is None."""
    if level is None:
        return batch
    image = np.asarray(batch, dtype=np.float32)
    return np.concatenate([image, np.full_like(image, level)], axis=1)


def synthetic_input(images: np.ndarray, channels: int) -> np.ndarray:
    """Synthetic images ``[N, 1, H, W]`` as the input of a model with ``channels`` input
    channels: a ``noise_map`` model's (2) with the constant SYNTHETIC_NOISE_LEVEL as its map."""
    return add_noise_map(images, SYNTHETIC_NOISE_LEVEL if channels == 2 else None)


def with_noise_map(infer: InferFn, level: float | None) -> InferFn:
    """``infer`` given :func:`add_noise_map` batches; ``infer`` itself when ``level`` is None."""
    if level is None:
        return infer
    return lambda batch: infer(add_noise_map(batch, level))


def enhance_normalized(
    normalized: np.ndarray, infer: InferFn, plan: TilePlan, strength: float = DEFAULT_STRENGTH,
    noise_level: float | None = None,
) -> np.ndarray:
    """The model over normalized frames ``(frames, rows, cols)`` (padded, batched, tiled),
    blended with them at ``strength``; float32, ``plan.scale`` times the rows and columns. At
    strength 0 the model is not run. A super-resolution model blends with the bicubic
    upsampled input (:mod:`runtime.strength`). ``noise_level`` (a ``noise_map`` model's, from
    :func:`noise_map_level`) is fed to the model as its second channel."""
    check_strength(strength, plan.scale)
    infer = with_noise_map(infer, noise_level)
    if strength == 1:
        return enhance_frames(normalized, infer, plan)
    base = np.asarray(normalized, dtype=np.float32) if plan.scale == 1 else bicubic(normalized, plan.scale)
    if strength == 0:
        return np.array(base, dtype=np.float32)
    return apply_strength(base, enhance_frames(normalized, infer, plan), strength)


def enhance_prepared(
    prepared: PreparedImage, infer: InferFn, plan: TilePlan, strength: float = DEFAULT_STRENGTH,
    noise_level: float | None = None,
) -> np.ndarray:
    """:func:`enhance_normalized` on a prepared image (``noise_level``: its
    :func:`prepared_level`); normalized float32 for ``restore``."""
    return enhance_normalized(prepared.normalized, infer, plan, strength, noise_level)


@dataclass
class EnhancedImage:
    """A dataset's prepared input, the model's normalized output and the input's noise."""

    prepared: PreparedImage
    enhanced: np.ndarray  # normalized float32 (frames, rows, cols)
    noise: NoiseLevel

    def stored(self) -> np.ndarray:
        """The output as stored values in the source's encoding (padding kept)."""
        return restore(self.enhanced, self.prepared)

    def values(self) -> np.ndarray:
        """The output in modality values (HU for CT), float32 ``(frames, rows, cols)``."""
        return modality_values(self.enhanced, self.prepared)


def enhance_dataset(
    backend: Backend, ds: Dataset, *, strength: float = DEFAULT_STRENGTH, plan: TilePlan | None = None,
    stopwatch: Stopwatch = no_stopwatch,
) -> EnhancedImage:
    """A decoded DICOM dataset through the model: prepared by the contract's normalization for
    its Modality (ModalityError if not covered), noise estimated (and fed to a ``noise_map``
    model), enhanced at ``strength``."""
    modality = check_modality(backend.contract, str(ds.get("Modality", "OT")))
    with stopwatch("prepare"):
        prepared = prepare(ds, backend.contract.normalization_for(modality))
        noise = prepared_noise(prepared)
        level = prepared_level(backend.contract, noise)
    with stopwatch("infer"):
        enhanced = enhance_prepared(prepared, backend.infer, plan or tile_plan(backend), strength, level)
    return EnhancedImage(prepared, enhanced, noise.reported)


def enhance_values(
    backend: Backend, values: np.ndarray, modality: str, *, strength: float = DEFAULT_STRENGTH,
    plan: TilePlan | None = None, padding: np.ndarray | None = None, stopwatch: Stopwatch = no_stopwatch,
) -> np.ndarray:
    """Modality values (HU for CT), ``(rows, cols)`` or ``(frames, rows, cols)``, through the
    model; float32 modality values of the same shape (a super-resolution model: its scale
    times the rows and columns). ``padding`` (bool, same shape) marks pixels that are ignored
    when fitting the normalization and come back unchanged (upscaled: repeated); so do a CT
    image's out-of-field pixels (:func:`runtime.image_contract.excluded_pixels`)."""
    frames = np.asarray(values, dtype=np.float32)
    if frames.ndim not in (2, 3):
        raise ValueError(f"values must be (rows, cols) or (frames, rows, cols), got shape {frames.shape}")
    single = frames.ndim == 2
    frames = frames[np.newaxis] if single else frames
    mask = None if padding is None else np.asarray(padding, dtype=bool).reshape(frames.shape)
    key = check_modality(backend.contract, modality)
    with stopwatch("prepare"):
        spec = backend.contract.normalization_for(key)
        mask = excluded_pixels(frames, spec, mask)
        normalized, states = normalize_frames(frames, spec, mask)
        level = noise_map_level(backend.contract, normalized, states, key, mask)
    plan = plan or tile_plan(backend)
    with stopwatch("infer"):
        enhanced = enhance_normalized(normalized, backend.infer, plan, strength, level)
    with stopwatch("restore"):
        out = keep_excluded(denormalize_frames(enhanced, states), frames, mask)
    return out[0] if single else out
