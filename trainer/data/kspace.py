"""Band-limiting an image as an MR acquisition of part of its k-space would: used for
the x2 model's MR references (``sr_mr_phantom_band``) and the denoiser's MR phantoms
(``mr_phantom_band``)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from trainer.data.split import stable_seed

if TYPE_CHECKING:  # sources pulls in pydicom; kspace_lowpass needs numpy only
    from trainer.data.sources import SourceImage

TAPER = 0.2  # share of the kept band over which kspace_lowpass tapers to zero (scanner apodization)


def kspace_lowpass(image: np.ndarray, fraction: float) -> np.ndarray:
    """``image`` as an MR acquisition of ``fraction`` (0-1] of its Nyquist band would record it:
    k-space kept up to ``fraction`` x Nyquist along each axis, the outer ``TAPER`` of that band
    tapered by a raised cosine (Gibbs ringing softened as by a scanner's filter); float32."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction {fraction} must be in (0, 1]")
    image = np.asarray(image, dtype=np.float64)

    def window(size: int) -> np.ndarray:
        k = np.abs(np.fft.fftfreq(size)) / 0.5  # 0 .. 1 (Nyquist)
        ramp = np.clip((fraction - k) / (TAPER * fraction), 0.0, 1.0)
        return 0.5 - 0.5 * np.cos(np.pi * ramp)

    rows, cols = image.shape
    spectrum = np.fft.fft2(image) * window(rows)[:, None] * window(cols)[None, :]
    return np.fft.ifft2(spectrum).real.astype(np.float32)


def band_fraction(name: str, band: list[float], salt: str) -> float:
    """The share of its Nyquist band a phantom named ``name`` keeps: drawn in ``band`` from its
    name (and ``salt``, so that two uses draw apart), the same on every run."""
    return float(np.random.default_rng(stable_seed(salt, name)).uniform(*band))


def band_limited_phantoms(images: list[SourceImage], band: list[float] | None) -> list[SourceImage]:
    """``images`` with every phantom's values band-limited to a fraction of Nyquist drawn in
    ``band`` (seeded by its name), as the magnitude of that acquisition; other images and
    ``band`` None: unchanged."""
    if band is None:
        return images
    limited = []
    for image in images:
        if image.source == "phantom":
            fraction = band_fraction(image.name, band, "mr_band")
            image = replace(image, values=np.abs(kspace_lowpass(image.values, fraction)))
        limited.append(image)
    return limited
