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
    padding: np.ndarray | None  # bool, (frames, rows, columns): not image (excluded_pixels); None if none
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


# CT pixels below this are no patient, air (-1000 HU) or noise: scanners fill the corners outside
# their reconstruction circle with -2000, -3024 or the like, often without declaring a Pixel
# Padding Value that matches. Fed as they are, the fill is a 1000-2000 HU edge that no training
# image has, and the model rings along it (docs/RUNTIME.md).
OUT_OF_FIELD_HU = -1500.0
AIR_HU = -1000.0  # what a CT model sees in place of padding and out-of-field pixels


def feeds_air(spec: NormalizationSpec) -> bool:
    """Whether a model normalized by ``spec`` (CT's fixed HU window, ``hu_linear``) is fed air in
    place of the pixels that are not image."""
    return spec.kind == "hu_linear"


def excluded_pixels(values: np.ndarray, spec: NormalizationSpec, padding: np.ndarray | None = None) -> np.ndarray | None:
    """Pixels that are not image, ``(frames, rows, cols)`` bool or None if there are none:
    declared ``padding`` and, where :func:`feeds_air`, finite values below OUT_OF_FIELD_HU.
    They are ignored when fitting, fed to a CT model as air and come back unchanged
    (:func:`keep_excluded`). Non-finite values are left to the caller's check."""
    if not feeds_air(spec):
        return padding
    values = np.asarray(values)
    outside = np.isfinite(values) & (values < OUT_OF_FIELD_HU)
    if not outside.any():
        return padding
    return outside if padding is None else (outside | padding)


def keep_excluded(output: np.ndarray, source: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """``output`` (modality or stored values, the source's size or an integer multiple of it) with the
    ``mask``ed pixels set back to ``source``'s values (upscaled: each pixel's block); in place."""
    if mask is not None:
        scale = output.shape[-1] // source.shape[-1]
        upscaled = nearest(np.asarray(mask, dtype=bool), scale)
        output[upscaled] = nearest(np.asarray(source, dtype=output.dtype), scale)[upscaled]
    return output


def normalize_frames(
    values: np.ndarray, spec: NormalizationSpec, mask: np.ndarray | None = None
) -> tuple[np.ndarray, list[NormalizationState]]:
    """Modality values ``(frames, rows, cols)`` -> normalized float32 frames and each frame's
    state; ``mask`` marks pixels that are not image (:func:`excluded_pixels`), ignored when
    fitting and, for CT, normalized as air."""
    states: list[NormalizationState] = []
    frames = np.empty(values.shape, dtype=np.float32)
    for index, frame in enumerate(values):
        frame_mask = mask[index] if mask is not None else None
        state = fit_normalization(frame, spec, frame_mask)
        states.append(state)
        if frame_mask is not None and feeds_air(spec):
            frame = np.where(frame_mask, np.float32(AIR_HU), frame)
        frames[index] = normalize(frame, state)
    return frames, states


def denormalize_frames(normalized: np.ndarray, states: list[NormalizationState]) -> np.ndarray:
    """Normalized frames ``(frames, rows, cols)`` -> modality values, float32 (inverse of
    :func:`normalize_frames`)."""
    return np.stack([denormalize(f, s) for f, s in zip(normalized, states)]).astype(np.float32)


def prepare(ds: Dataset, spec: NormalizationSpec) -> PreparedImage:
    """Decode ``ds`` and normalize each frame with ``spec`` (pixels that are not image,
    :func:`excluded_pixels`, ignored in fitting and restored unchanged)."""
    encoding = read_encoding(ds)
    stored = stored_values(ds, encoding)
    values = to_modality(stored, encoding)
    mask = excluded_pixels(values, spec, padding_mask(stored, encoding))
    frames, states = normalize_frames(values, spec, mask)
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
    """Normalized frames (the input or the model's output, at any scale) -> modality values,
    float32, the pixels that are not image (``prepared.padding``) as the source holds them."""
    values = denormalize_frames(output_frames(normalized, prepared)[0], prepared.states)
    if prepared.padding is None:
        return values
    return keep_excluded(values, to_modality(prepared.original_stored, prepared.encoding), prepared.padding)


def restore(enhanced: np.ndarray, prepared: PreparedImage) -> np.ndarray:
    """The model's normalized output -> stored values in the source's encoding.

    Values are clipped to the range Bits Stored and Pixel Representation can hold, and
    the pixels that are not image (``prepared.padding``) keep their original stored value (a
    super-resolution output: each one's ``s x s`` block).
    """
    enhanced = output_frames(enhanced, prepared)[0]
    stored = np.empty(enhanced.shape, dtype=prepared.encoding.numpy_dtype)
    for index, frame in enumerate(enhanced):
        stored[index] = from_modality(denormalize(frame, prepared.states[index]), prepared.encoding)
    return keep_excluded(stored, prepared.original_stored, prepared.padding)
