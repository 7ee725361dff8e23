"""Training references must be cleaner than the noise the model learns to remove.

Real MR and radiograph frames carry their own scanner noise (the packaged MR frames hold
1.6-4.4 % of their signal range); a model trained to map "reference + 1 % noise" back to such a
reference learns to keep noise. Each non-CT real source is therefore screened: its own noise
(masked Haar MAD, runtime.noise) relative to its signal range must be at most
``max_noise_fraction``; a noisier frame is binned 2x2 (averaging halves the noise) until it
passes, and dropped if it would fall below ``min_side`` pixels.

CT: the low-dose simulator accounts for a real slice's own noise in the *input* (degrade.LowDoseCT
match_own_noise), but the reference still holds it. A slice whose own soft-tissue noise exceeds
``max_ct_noise_hu`` is dropped (binning does not clean a CT slice: its noise is correlated over
several pixels; measured on the packaged slices, 2x2 binning left 9.6 HU at 9.5 HU). Otherwise a
denoiser is scored on how much of the reference's noise it keeps: at dose 0.5 with a smooth
kernel the noise inserted (4-8 HU) is below such a slice's own.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from runtime.noise import estimate_noise, haar_mad_sigma
from trainer.data.sources import SourceImage


def own_noise_fraction(values: np.ndarray) -> float:
    """Noise standard deviation of an image over its 0.5-99.5 percentile range (signal pixels:
    above the 30th percentile, so that air and padding do not count)."""
    values = np.asarray(values, dtype=np.float64)
    low, high = np.percentile(values, [0.5, 99.5])
    if high <= low:
        return 0.0
    return float(haar_mad_sigma(values, values > np.percentile(values, 30)) / (high - low))


def bin2(values: np.ndarray) -> np.ndarray:
    """2x2 mean binning (odd last row/column dropped), float32."""
    rows, cols = (values.shape[0] // 2) * 2, (values.shape[1] // 2) * 2
    v = np.asarray(values[:rows, :cols], dtype=np.float32)
    return 0.25 * (v[0::2, 0::2] + v[1::2, 0::2] + v[0::2, 1::2] + v[1::2, 1::2])


def clean_reference(
    image: SourceImage, max_noise_fraction: float, min_side: int, max_ct_noise_hu: float = 0.0
) -> SourceImage | None:
    """``image`` itself, a binned copy that is clean enough, or None (too noisy to be a reference)."""
    # Only a scan's own noise is screened. Phantoms have none; the MNI template (source "atlas")
    # averages 152 scans, so it holds about a twelfth of one scan's noise, plus its 8-bit storage's
    # 0.13 % RMS, and the Haar MAD reads its quantization steps and fine anatomy as 0.3-1.0 %
    # "noise" (trainer/data/atlas.py), as it reads the photographs' texture (trainer/data/natural.py,
    # chosen by eye).
    if not image.scanned or image.low_dose is not None:
        return image
    if image.modality == "CT":
        return None if 0 < max_ct_noise_hu < ct_own_noise_hu(image.values) else image
    if max_noise_fraction <= 0:
        return image
    values, pixel_mm, factor = image.values, image.pixel_mm, 1
    while own_noise_fraction(values) > max_noise_fraction:
        if min(values.shape) // 2 < min_side:
            return None
        values, pixel_mm, factor = bin2(values), pixel_mm * 2, factor * 2
    if factor == 1:
        return image
    return dataclasses.replace(image, name=f"{image.name}@bin{factor}", values=values, pixel_mm=pixel_mm)


def ct_own_noise_hu(hu: np.ndarray) -> float:
    """A CT slice's own noise in HU, measured as the runtime measures it (soft tissue; 0 when
    there is too little soft tissue to measure)."""
    sigma = estimate_noise(hu, "CT")
    return sigma if np.isfinite(sigma) else 0.0
