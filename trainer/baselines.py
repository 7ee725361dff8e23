"""Classical denoisers from scikit-image, on normalized 2-D images, for comparison.

Each takes the noisy normalized image and, optionally, the noise standard deviation ``sigma``
in the same normalized units, and returns a denoised float32 image of the same shape. With
``sigma=None`` the level is estimated from the image itself (``skimage.restoration.
estimate_sigma``, wavelet MAD), so no baseline sees the clean reference; a benchmark that knows
the true level (an "oracle" filter) passes it. NLM's ``h`` and TV's weight are multiples of
sigma: ``h_per_sigma`` / ``weight_per_sigma`` (default: the module constants below).

``upscale`` is the classical side of x2 super-resolution (nearest, bicubic, Lanczos, and for MR
zero-filled k-space interpolation).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
from skimage.restoration import denoise_nl_means, denoise_tv_chambolle, denoise_wavelet, estimate_sigma

from runtime.resample import UPSAMPLERS

NLM_H_PER_SIGMA = 0.8  # skimage's guidance for fast_mode: h a little below sigma
TV_WEIGHT_PER_SIGMA = 1.0
# The h / sigma an oracle comparison tries per image, keeping NLM's best (the shipped-model gate,
# benchmarks.noisy_reference): a stronger baseline than any one tuned setting.
NLM_ORACLE_H_PER_SIGMA = (0.6, 0.8, 1.0, 1.3, 1.6)


def _image(noisy: np.ndarray) -> np.ndarray:
    image = np.asarray(noisy, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"baselines need a 2-D image, got shape {image.shape}")
    return image


def noise_sigma(noisy: np.ndarray) -> float:
    """Estimated standard deviation of Gaussian noise in ``noisy`` (robust wavelet MAD)."""
    return float(estimate_sigma(_image(noisy)))


def _sigma(image: np.ndarray, sigma: float | None) -> float:
    if sigma is None:
        return noise_sigma(image)
    if not np.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma}")
    return float(sigma)


def nlm(noisy: np.ndarray, sigma: float | None = None, *, h_per_sigma: float | None = None) -> np.ndarray:
    """Non-local means: 5x5 patches, 13x13 search (distance 6), h = 0.8 sigma, fast mode."""
    image = _image(noisy)
    sigma = _sigma(image, sigma)
    factor = NLM_H_PER_SIGMA if h_per_sigma is None else h_per_sigma
    out = denoise_nl_means(image, patch_size=5, patch_distance=6, h=factor * sigma, sigma=sigma, fast_mode=True)
    return out.astype(np.float32)


def tv(noisy: np.ndarray, sigma: float | None = None, *, weight_per_sigma: float | None = None) -> np.ndarray:
    """Total-variation (Chambolle) with weight = sigma (the fidelity/smoothness balance)."""
    image = _image(noisy)
    factor = TV_WEIGHT_PER_SIGMA if weight_per_sigma is None else weight_per_sigma
    return denoise_tv_chambolle(image, weight=factor * _sigma(image, sigma)).astype(np.float32)


def wavelet(noisy: np.ndarray, sigma: float | None = None) -> np.ndarray:
    """Wavelet shrinkage: BayesShrink soft thresholds per sub-band, db1 (sigma estimated if None)."""
    image = _image(noisy)
    # rescale_sigma=True keeps the estimate consistent after the internal range handling.
    return denoise_wavelet(image, sigma=None if sigma is None else _sigma(image, sigma), method="BayesShrink",
                           mode="soft", rescale_sigma=True).astype(np.float32)


BASELINES: dict[str, Callable[..., np.ndarray]] = {"nlm": nlm, "tv": tv, "wavelet": wavelet}
# The keyword each baseline's strength (a multiple of sigma) is set by; wavelet has none.
STRENGTH_KEYWORDS: dict[str, str] = {"nlm": "h_per_sigma", "tv": "weight_per_sigma"}


def _zero_fill(image: np.ndarray, scale: int, kspace: str = "dft") -> np.ndarray:
    # Imported here: trainer.data pulls in torch, and the reader study uses these baselines without it.
    from trainer.data.super_resolution import MR_KSPACE, SCALE

    if scale != SCALE:
        raise ValueError(f"zero-filled k-space interpolation is x{SCALE} here, not x{scale}")
    return MR_KSPACE[kspace][1](image)


# Classical x2 methods: runtime.resample's (nearest, bicubic, Lanczos-3) and zero-filled
# k-space interpolation, the exact inverse of the MR degradation for a band-limited image: of
# the image's DFT ("zero-fill", the inverse of data.sr_mr_kspace "dft") and of its DCT-II
# ("zero-fill-dct": the image mirrored about its edges, the inverse of "dct").
CLASSICAL_UPSAMPLERS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    **UPSAMPLERS, "zero-fill": _zero_fill, "zero-fill-dct": partial(_zero_fill, kspace="dct")}
UPSCALERS = tuple(CLASSICAL_UPSAMPLERS)


def upscale(image: np.ndarray, method: str = "bicubic", scale: int = 2) -> np.ndarray:
    """Classical ``scale``x upsampling of a 2-D image (runtime.resample: nearest, Pillow's bicubic
    or Lanczos-3; or zero-filled k-space), on the SR models' area-aligned grid, float32."""
    if method not in CLASSICAL_UPSAMPLERS:
        raise ValueError(f"upscale method must be one of {', '.join(UPSCALERS)}, got {method!r}")
    return np.asarray(CLASSICAL_UPSAMPLERS[method](_image(image).astype(np.float32), scale), dtype=np.float32)
