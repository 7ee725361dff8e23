"""Fine texture at every amplitude: scikit-image's bundled photographs (``data.sources`` ``"natural"``
as MR, ``"natural_ct"`` as CT attenuation).

A model trained on piecewise-smooth phantoms and a smooth MR template takes any fine detail at
the amplitude of low noise for noise, and removes it from a real scan (the real MR test image at
1 % noise ends below its own input). Photographs hold fine, high-contrast texture at every
amplitude; as MR-like magnitude images (grey values, Rician noise like MR) they teach a denoiser
that such detail can be signal. Which photograph trains and which validates is fixed by name
below (none are test images). Their own noise cannot be told from their texture by the
clean-reference screen's Haar MAD (grass reads 5 %), so the photographs that look noisy (grass,
gravel, the Hubble field) are left out and the rest are not screened.

As CT (``natural_ct``, training only), a photograph's grey values become soft-tissue HU inside an
elliptical body outline, air outside, so that the projection-domain low-dose simulation gives it
CT noise: real CT slices hold fine structure at the amplitude of low-dose noise too, which
piecewise-smooth phantoms never show (the Hann half-dose misses, docs/TRAINING.md).
"""

from __future__ import annotations

import numpy as np

from trainer.data.phantoms import AIR_HU

TRAIN_PHOTOS = ("astronaut", "camera", "cell", "coffee", "coins", "moon", "retina", "rocket")
VALIDATION_PHOTOS = ("brick", "chelsea", "clock")
NATURAL_PIXEL_MM = 1.0  # nominal: MR noise and normalization do not depend on pixel size
NATURAL_SCALE = 1000.0  # grey values 0-1 scaled into MR-like stored values, as trainer/data/atlas.py
# As CT: grey 0-1 onto fat-to-enhanced-tissue HU (every window's soft tissue), air (-1000) outside the body.
NATURAL_CT_HU = (-120.0, 180.0)


def photo(name: str) -> np.ndarray:
    """The bundled photograph ``name`` as float32 grey values in [0, ``NATURAL_SCALE``]."""
    from skimage import data  # noqa: PLC0415 (only when the source is used)
    from skimage.color import rgb2gray  # noqa: PLC0415
    from skimage.util import img_as_float  # noqa: PLC0415

    values = img_as_float(getattr(data, name)())  # [0, 1] whatever the stored integer type
    if values.ndim == 3:
        values = rgb2gray(values[..., :3])
    return (np.asarray(values, dtype=np.float32) * np.float32(NATURAL_SCALE)).astype(np.float32)


def natural_photos() -> list[tuple[str, str, np.ndarray]]:
    """``(name, split, values)`` for every training and validation photograph."""
    return [(name, split, photo(name))
            for split, names in (("train", TRAIN_PHOTOS), ("validation", VALIDATION_PHOTOS)) for name in names]


def ct_slice(grey: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A photograph's grey values (0-1) as a ``size`` x ``size`` CT slice in HU: its central
    square resized, mapped onto ``NATURAL_CT_HU`` inside an ellipse of random axes (a body
    outline inside the scanner's circle, which the forward projection needs), air outside."""
    from skimage.transform import resize  # noqa: PLC0415

    side = min(grey.shape)
    top, left = (grey.shape[0] - side) // 2, (grey.shape[1] - side) // 2
    square = resize(grey[top:top + side, left:left + side], (size, size), anti_aliasing=True)
    low, high = NATURAL_CT_HU
    hu = low + (high - low) * np.clip(square, 0.0, 1.0)
    rows, cols = (np.mgrid[:size, :size] - (size - 1) / 2.0) / (size / 2.0)
    half_axes = rng.uniform(0.7, 0.95, size=2)  # of the scanner circle's radius
    body = (rows / half_axes[0]) ** 2 + (cols / half_axes[1]) ** 2 <= 1.0
    return np.where(body, hu, AIR_HU).astype(np.float32)
