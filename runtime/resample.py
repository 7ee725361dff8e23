"""Integer upsampling of frames on the super-resolution grid: nearest, bicubic and Lanczos.

Both keep the grid convention of the SR models, their training data and ``runtime.geometry``:
input pixel ``i`` covers output pixels ``s*i .. s*i + s - 1``. Nearest repeats each pixel
(what a ``base="nearest"`` SR model adds its residual to; the shipped one, ``base="lanczos3"``,
uses Lanczos-3 inside its graph, trainer/models/super_resolution.py); bicubic is Pillow's (mode ``F``, float32), whose
pixel-centre alignment is the same area convention. Bicubic is affine-invariant (its weights
sum to 1), so it gives the same result on normalized values as on modality values.
"""

from __future__ import annotations

import numpy as np


def nearest(frames: np.ndarray, scale: int) -> np.ndarray:
    """Repeat each pixel ``scale`` times along the last two axes (any dtype, any leading axes)."""
    if scale == 1:
        return np.asarray(frames)
    return np.repeat(np.repeat(np.asarray(frames), scale, axis=-2), scale, axis=-1)


def _pillow(frames: np.ndarray, scale: int, resample: int) -> np.ndarray:
    """Pillow (float32, mode ``F``) upsampling of ``(rows, cols)`` or ``(frames, rows, cols)``."""
    from PIL import Image

    array = np.asarray(frames, dtype=np.float32)
    if scale == 1:
        return array.copy()
    flat = array.reshape(-1, *array.shape[-2:])
    rows, cols = flat.shape[-2:]
    out = np.empty((len(flat), rows * scale, cols * scale), dtype=np.float32)
    for index, frame in enumerate(flat):
        image = Image.fromarray(np.ascontiguousarray(frame))  # float32 -> mode "F"
        out[index] = np.asarray(image.resize((cols * scale, rows * scale), resample))
    return out.reshape(*array.shape[:-2], rows * scale, cols * scale)


def bicubic(frames: np.ndarray, scale: int) -> np.ndarray:
    """Bicubic upsampling (Pillow, a = -0.5, float32) of ``(rows, cols)`` or ``(frames, rows, cols)``."""
    from PIL import Image

    return _pillow(frames, scale, Image.Resampling.BICUBIC)


def lanczos(frames: np.ndarray, scale: int) -> np.ndarray:
    """Lanczos-3 upsampling (Pillow, float32): the sharper classical baseline of the SR benchmark."""
    from PIL import Image

    return _pillow(frames, scale, Image.Resampling.LANCZOS)


UPSAMPLERS = {"nearest": nearest, "bicubic": bicubic, "lanczos": lanczos}
