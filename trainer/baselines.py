"""Classical denoisers from scikit-image, on normalized 2-D images, for comparison.

Each takes the noisy normalized image and returns a denoised float32 image of the same shape.
The noise level is estimated from the image itself (``skimage.restoration.estimate_sigma``,
wavelet MAD), so no baseline sees the clean reference.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from skimage.restoration import denoise_nl_means, denoise_tv_chambolle, denoise_wavelet, estimate_sigma

NLM_H_PER_SIGMA = 0.8  # skimage's guidance for fast_mode: h a little below sigma
TV_WEIGHT_PER_SIGMA = 1.0


def _image(noisy: np.ndarray) -> np.ndarray:
    image = np.asarray(noisy, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"baselines need a 2-D image, got shape {image.shape}")
    return image


def noise_sigma(noisy: np.ndarray) -> float:
    """Estimated standard deviation of Gaussian noise in ``noisy`` (robust wavelet MAD)."""
    return float(estimate_sigma(_image(noisy)))


def nlm(noisy: np.ndarray) -> np.ndarray:
    """Non-local means: 5x5 patches, 13x13 search (distance 6), h = 0.8 sigma, fast mode."""
    image = _image(noisy)
    sigma = noise_sigma(image)
    out = denoise_nl_means(
        image, patch_size=5, patch_distance=6, h=NLM_H_PER_SIGMA * sigma, sigma=sigma, fast_mode=True
    )
    return out.astype(np.float32)


def tv(noisy: np.ndarray) -> np.ndarray:
    """Total-variation (Chambolle) with weight = sigma (the fidelity/smoothness balance)."""
    image = _image(noisy)
    return denoise_tv_chambolle(image, weight=TV_WEIGHT_PER_SIGMA * noise_sigma(image)).astype(np.float32)


def wavelet(noisy: np.ndarray) -> np.ndarray:
    """Wavelet shrinkage: BayesShrink soft thresholds per sub-band, db1, sigma estimated."""
    image = _image(noisy)
    # rescale_sigma=True keeps the estimate consistent after the internal range handling.
    return denoise_wavelet(image, method="BayesShrink", mode="soft", rescale_sigma=True).astype(np.float32)


BASELINES: dict[str, Callable[[np.ndarray], np.ndarray]] = {"nlm": nlm, "tv": tv, "wavelet": wavelet}
