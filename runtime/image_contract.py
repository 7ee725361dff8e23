"""The image contract: a DICOM dataset -> the model's normalized image, and exactly back.

Training, compiling and the bedside runtime all prepare images through these two functions,
so a model sees the same numbers everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from runtime.normalization import (
    NormalizationSpec,
    NormalizationState,
    denormalize,
    fit_normalization,
    normalize,
)
from runtime.pixels import PixelEncoding, from_modality, padding_mask, read_encoding, stored_values, to_modality
from runtime.resample import nearest


@dataclass
class PreparedImage:
    """A normalized image plus everything needed to turn the model's output back into DICOM."""

    normalized: np.ndarray  # float32, (frames, rows, columns)
    encoding: PixelEncoding
    states: list[NormalizationState]  # one per frame
    padding: np.ndarray | None  # bool, (frames, rows, columns); None when none declared
    original_stored: np.ndarray  # the source's stored values, for padding restoration

    @property
    def modality(self) -> str:
        """DICOM Modality of the source."""
        return self.encoding.modality


def modality_image(ds: Dataset) -> tuple[np.ndarray, PixelEncoding, np.ndarray | None]:
    """Modality values (HU for CT), float32 ``(frames, rows, cols)``, its encoding and padding mask."""
    encoding = read_encoding(ds)
    stored = stored_values(ds, encoding)
    return to_modality(stored, encoding), encoding, padding_mask(stored, encoding)


def normalize_frames(
    values: np.ndarray, spec: NormalizationSpec, mask: np.ndarray | None = None
) -> tuple[np.ndarray, list[NormalizationState]]:
    """Modality values ``(frames, rows, cols)`` -> normalized float32 frames and each frame's
    state; ``mask`` marks padding pixels, ignored when fitting."""
    states: list[NormalizationState] = []
    frames = np.empty(values.shape, dtype=np.float32)
    for index, frame in enumerate(values):
        frame_mask = mask[index] if mask is not None else None
        state = fit_normalization(frame, spec, frame_mask)
        states.append(state)
        frames[index] = normalize(frame, state)
    return frames, states


def denormalize_frames(normalized: np.ndarray, states: list[NormalizationState]) -> np.ndarray:
    """Normalized frames ``(frames, rows, cols)`` -> modality values, float32 (inverse of
    :func:`normalize_frames`)."""
    return np.stack([denormalize(f, s) for f, s in zip(normalized, states)]).astype(np.float32)


def prepare(ds: Dataset, spec: NormalizationSpec) -> PreparedImage:
    """Decode ``ds`` and normalize each frame with ``spec`` (padding pixels ignored in fitting)."""
    encoding = read_encoding(ds)
    stored = stored_values(ds, encoding)
    mask = padding_mask(stored, encoding)
    frames, states = normalize_frames(to_modality(stored, encoding), spec, mask)
    return PreparedImage(frames, encoding, states, mask, stored)


def output_frames(output: np.ndarray, prepared: PreparedImage) -> tuple[np.ndarray, int]:
    """The model's output (or the input) as ``(frames, s*rows, s*cols)`` and its scale ``s``
    (1 for a denoiser, 2 for x2 super-resolution); ValueError for any other shape."""
    output = np.asarray(output)
    frames, rows, cols = prepared.normalized.shape
    scale = output.shape[-1] // cols if output.ndim >= 2 else 0
    if scale < 1 or output.shape[-2:] != (rows * scale, cols * scale) or output.size != frames * rows * cols * scale**2:
        raise ValueError(f"output shape {list(output.shape)} is not an integer upscaling of {[frames, rows, cols]}")
    return output.reshape(frames, rows * scale, cols * scale), scale


def modality_values(normalized: np.ndarray, prepared: PreparedImage) -> np.ndarray:
    """Normalized frames (the input or the model's output, at any scale) -> modality values, float32."""
    return denormalize_frames(output_frames(normalized, prepared)[0], prepared.states)


def restore(enhanced: np.ndarray, prepared: PreparedImage) -> np.ndarray:
    """The model's normalized output -> stored values in the source's encoding.

    Values are clipped to the range Bits Stored and Pixel Representation can hold, and
    padding pixels keep their original stored value (a super-resolution output: each padding
    pixel's ``s x s`` block).
    """
    enhanced, scale = output_frames(enhanced, prepared)
    stored = np.empty(enhanced.shape, dtype=prepared.encoding.numpy_dtype)
    for index, frame in enumerate(enhanced):
        stored[index] = from_modality(denormalize(frame, prepared.states[index]), prepared.encoding)
    if prepared.padding is not None:
        padding = nearest(prepared.padding, scale)
        stored[padding] = nearest(prepared.original_stored, scale)[padding]
    return stored
