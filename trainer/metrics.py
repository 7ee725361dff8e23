"""Image quality metrics on numpy images: PSNR, SSIM, FSIM and the CT reporting conventions.

Every metric takes an explicit ``data_range``: PSNR and SSIM depend on it, and a CT number
quoted without its range is meaningless (the same image scores ~20 dB apart between the full
HU range and a soft-tissue window). ``image_quality`` reports the full range and two display
windows (soft tissue, lung) for CT.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from functools import lru_cache

import numpy as np
from skimage.metrics import structural_similarity

from runtime.normalization import NormalizationSpec, denormalize, fit_normalization

HU_FULL = (-1024.0, 3071.0)  # data range 4095 HU
SOFT_TISSUE_WINDOW = (40.0, 400.0)  # level, width -> [-160, 240] HU, data range 400
LUNG_WINDOW = (-600.0, 1500.0)  # level, width -> [-1350, 150] HU, data range 1500
# Key suffix -> display window (level, width) that image_quality scores CT in.
CT_WINDOWS = {"_window": SOFT_TISSUE_WINDOW, "_lung": LUNG_WINDOW}


def _pair(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, ref = np.asarray(pred, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if pred.shape != ref.shape:
        raise ValueError(f"shapes differ: prediction {pred.shape} vs reference {ref.shape}")
    return pred, ref


def psnr(pred: np.ndarray, ref: np.ndarray, data_range: float) -> float:
    """Peak signal-to-noise ratio in dB: ``10 log10(data_range^2 / MSE)`` (inf when equal)."""
    if data_range <= 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    pred, ref = _pair(pred, ref)
    mse = float(np.mean((pred - ref) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(data_range**2 / mse))


def ssim(pred: np.ndarray, ref: np.ndarray, data_range: float) -> float:
    """Mean SSIM of 2-D images (Wang et al. 2004 settings).

    ``skimage.metrics.structural_similarity`` with an 11x11 Gaussian window of sigma 1.5,
    K1 = 0.01, K2 = 0.03 and the sample covariance (``use_sample_covariance=False``).
    """
    if data_range <= 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    pred, ref = _pair(pred, ref)
    return float(
        structural_similarity(
            ref, pred, data_range=data_range, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
        )
    )


@lru_cache(maxsize=1)
def _piq_fsim():
    """``piq.fsim``; when ``piq/__init__`` fails (it imports torchvision for FID only), the
    package is registered without running it and its ``fsim`` module imported directly."""
    if "piq" not in sys.modules:
        try:
            importlib.import_module("piq")
        except ImportError:
            spec = importlib.util.find_spec("piq")
            if spec is None or not spec.submodule_search_locations:
                raise ImportError("FSIM needs the 'piq' package (pip install --no-deps piq)") from None
            package = types.ModuleType("piq")
            package.__path__ = list(spec.submodule_search_locations)
            sys.modules["piq"] = package
    return importlib.import_module("piq.fsim").fsim


def fsim(pred: np.ndarray, ref: np.ndarray, data_range: float) -> float:
    """Feature similarity (Zhang et al. 2011, greyscale FSIM) via ``piq.fsim``.

    Both images are clipped to ``[0, data_range]`` first (shift them there before calling).
    """
    import torch

    if data_range <= 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    pred, ref = _pair(pred, ref)
    if pred.ndim != 2:
        raise ValueError(f"fsim needs 2-D images, got shape {pred.shape}")
    to_tensor = lambda a: torch.from_numpy(np.clip(a, 0.0, data_range)).float()[None, None]  # noqa: E731
    return float(_piq_fsim()(to_tensor(pred), to_tensor(ref), data_range=float(data_range), chromatic=False))


def texture_ratio(pred: np.ndarray, ref: np.ndarray, cutoff: float = 0.25) -> float:
    """A perceptual-realism proxy: the power of ``pred`` above ``cutoff`` cycles per pixel over
    that of ``ref`` (Hann-windowed spectra). 1: as much fine texture as the reference; below 1:
    smoother (what L1/SSIM training tends to give); above 1: invented texture or noise. It says
    nothing about where the texture is: read it beside PSNR/SSIM."""
    pred, ref = _pair(pred, ref)
    window = np.outer(np.hanning(ref.shape[0]), np.hanning(ref.shape[1]))
    fy, fx = np.fft.fftfreq(ref.shape[0])[:, None], np.fft.fftfreq(ref.shape[1])[None, :]
    high = np.hypot(fy, fx) > cutoff

    def power(image: np.ndarray) -> float:
        spectrum = np.fft.fft2((image - image.mean()) * window)
        return float(np.sum(np.abs(spectrum[high]) ** 2))

    reference = power(ref)
    return power(pred) / reference if reference > 0 else float("nan")


def _scores(pred: np.ndarray, ref: np.ndarray, data_range: float, suffix: str, with_fsim: bool,
            with_ssim: bool = True, with_texture: bool = False) -> dict[str, float]:
    scores = {f"psnr{suffix}": psnr(pred, ref, data_range)}
    if with_texture:
        scores[f"texture{suffix}"] = texture_ratio(pred, ref)
    if with_ssim:
        scores[f"ssim{suffix}"] = ssim(pred, ref, data_range)
    if with_fsim:
        scores[f"fsim{suffix}"] = fsim(pred, ref, data_range)
    return scores


def window_bounds(level: float, width: float) -> tuple[float, float]:
    """The HU interval a display window (level, width) shows."""
    return level - width / 2.0, level + width / 2.0


def image_quality(
    pred: np.ndarray, ref: np.ndarray, modality: str, spec: NormalizationSpec, *, with_fsim: bool = True,
    with_ssim: bool = True, with_texture: bool = False,
) -> dict[str, float]:
    """Quality of a normalized prediction against its normalized reference.

    CT (hu_linear): back to HU, then ``*_full`` over [-1024, 3071] HU (data range 4095),
    ``*_window`` in the soft-tissue window W400/L40 ([-160, 240] HU, range 400) and ``*_lung``
    in the lung window W1500/L-600 ([-1350, 150] HU, range 1500); both images are clipped to
    the range first. Other modalities: ``psnr``, ``ssim``, ``fsim`` on the normalized images
    clipped to [0, 1]. ``with_texture`` adds ``texture*`` (:func:`texture_ratio`). FSIM costs
    ~1-4 s per 512² image on a CPU; ``with_fsim=False`` leaves the ``fsim*`` keys out,
    ``with_ssim=False`` the ``ssim*`` keys (PSNR only: cheap).
    """
    pred, ref = _pair(pred, ref)
    if modality.upper() == "CT" and spec.kind == "hu_linear":
        state = fit_normalization(ref, spec)  # hu_linear: a fixed map, no fitting
        pred_hu, ref_hu = denormalize(pred, state), denormalize(ref, state)
        ranges = {"_full": HU_FULL, **{suffix: window_bounds(*window) for suffix, window in CT_WINDOWS.items()}}
        scores: dict[str, float] = {}
        for suffix, (low, high) in ranges.items():
            clipped = (np.clip(a, low, high) - low for a in (pred_hu, ref_hu))
            scores.update(_scores(*clipped, high - low, suffix, with_fsim, with_ssim, with_texture))
        return scores
    return _scores(np.clip(pred, 0.0, 1.0), np.clip(ref, 0.0, 1.0), 1.0, "", with_fsim, with_ssim, with_texture)
