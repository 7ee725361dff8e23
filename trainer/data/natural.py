"""Fine texture at every amplitude: scikit-image's bundled photographs (``data.sources`` ``"natural"``).

A model trained on piecewise-smooth phantoms and a smooth MR template takes any fine detail at
the amplitude of low noise for noise, and removes it from a real scan (the real MR test image at
1 % noise ends below its own input). Photographs hold fine, high-contrast texture at every
amplitude; as MR-like magnitude images (grey values, Rician noise like MR) they teach a denoiser
that such detail can be signal. Which photograph trains and which validates is fixed by name
below (none are test images). Their own noise cannot be told from their texture by the
clean-reference screen's Haar MAD (grass reads 5 %), so the photographs that look noisy (grass,
gravel, the Hubble field) are left out and the rest are not screened.
"""

from __future__ import annotations

import numpy as np

TRAIN_PHOTOS = ("astronaut", "camera", "cell", "coffee", "coins", "moon", "retina", "rocket")
VALIDATION_PHOTOS = ("brick", "chelsea", "clock")
NATURAL_PIXEL_MM = 1.0  # nominal: MR noise and normalization do not depend on pixel size
NATURAL_SCALE = 1000.0  # grey values 0-1 scaled into MR-like stored values, as trainer/data/atlas.py


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
