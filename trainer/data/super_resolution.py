"""Training and held-out pairs for x2 super-resolution: (low-resolution, high-resolution).

A clean high-resolution image (the denoiser's sources, references screened the same way) is
degraded to half its matrix the way the modality really loses resolution (docs/DATA.md):

- MR: k-space truncation, the central half of the spatial frequencies in each direction: what
  a low-resolution acquisition is, Gibbs ringing included. ``sr_mr_kspace`` "dft" truncates the
  image's DFT (periodic: a non-periodic DICOM image wraps, and its wrapped edge rings); "dct"
  truncates its DCT-II, which is the DFT truncation of the image mirrored about its edges (no
  wrap-around jump), on the same grid.
- CT, CR, DX: a Gaussian blur (detector and reconstruction kernel, ``sr_blur_sigma``
  high-resolution pixels) followed by 2x2 area averaging.

Both keep one grid convention: low-resolution pixel ``i`` covers high-resolution pixels ``2i``
and ``2i + 1`` (its centre at ``2i + 0.5``), the convention of the SR models' fixed nearest
upsampling and of the runtime's output geometry. ``sr_noise_range`` optionally adds Gaussian
noise to the low-resolution input (normalized units, drawn per patch) so that the model also
tolerates noise. ``sr_mr_phantom_band`` band-limits MR phantoms before they serve as
high-resolution references (``kspace_lowpass``), as an acquisition band-limits a real MR image.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from scipy import fft as scipy_fft
from scipy import ndimage

from runtime.normalization import NormalizationState, fit_normalization, normalize
from trainer.data.config import DataConfig
from trainer.data.datasets import (
    HeldoutImage,
    SeededPatches,
    _log_uniform,
    crop_to,
    load_sources,
    spec_for,
    split_sources,
)
from trainer.data.kspace import band_fraction, kspace_lowpass
from trainer.data.sources import SourceImage
from trainer.data.split import stable_seed

SCALE = 2


def _even(image: np.ndarray) -> np.ndarray:
    """Crop the last row/column where a side is odd, so that it halves exactly."""
    rows, cols = image.shape
    return image[: rows - rows % SCALE, : cols - cols % SCALE]


def kspace_downsample(image: np.ndarray) -> np.ndarray:
    """Half the matrix by keeping the central half of k-space in each direction.

    A phase ramp first shifts the image by half a high-resolution pixel, so that the kept
    samples fall at ``2i + 0.5`` (the area convention) instead of on every second pixel.
    """
    image = _even(np.asarray(image, dtype=np.float64))
    rows, cols = image.shape
    small_rows, small_cols = rows // SCALE, cols // SCALE
    spectrum = np.fft.fft2(image) * _half_pixel_shift(rows, cols)  # f(x + 1/2)
    kept = spectrum[_low_band(small_rows, small_cols, rows, cols)] * (small_rows * small_cols / (rows * cols))
    # Real part: the lone Nyquist bin of an even low-resolution side is not conjugate-paired.
    return np.fft.ifft2(kept).real.astype(np.float32)


def kspace_upsample(image: np.ndarray) -> np.ndarray:
    """Double the matrix by zero-filling k-space (zero-filled interpolation, as MR scanners do):
    the exact inverse of :func:`kspace_downsample` for an image whose frequencies lie strictly
    inside half its band (the low-resolution Nyquist line itself is not conjugate-paired), on
    the same area-aligned grid; float32. The classical x2 baseline for MR."""
    image = np.asarray(image, dtype=np.float64)
    small_rows, small_cols = image.shape
    rows, cols = small_rows * SCALE, small_cols * SCALE
    spectrum = np.zeros((rows, cols), dtype=np.complex128)
    spectrum[_low_band(small_rows, small_cols, rows, cols)] = np.fft.fft2(image) * (rows * cols / (small_rows * small_cols))
    return np.fft.ifft2(spectrum / _half_pixel_shift(rows, cols)).real.astype(np.float32)


def dct_downsample(image: np.ndarray) -> np.ndarray:
    """Half the matrix by keeping the lowest half of the DCT-II coefficients along each axis: the
    k-space truncation of the image mirrored about its edges (what :func:`kspace_downsample` does
    to a periodic image, without the jump where a non-periodic one wraps). The DCT-II's samples
    sit at pixel centres, so the kept low-resolution pixel ``i`` lands at ``2i + 0.5``."""
    image = _even(np.asarray(image, dtype=np.float64))
    rows, cols = image.shape
    spectrum = scipy_fft.dctn(image, type=2, norm="ortho")[: rows // SCALE, : cols // SCALE]
    # Orthonormal transforms: a constant keeps its value when each axis's size is halved.
    return (scipy_fft.idctn(spectrum, type=2, norm="ortho") / SCALE).astype(np.float32)


@functools.lru_cache(maxsize=32)
def dct_upsample_matrix(size: int) -> np.ndarray:
    """``[2 size, size]`` float64, one axis of :func:`dct_upsample`: DCT-II, zero-padded to twice
    the length, inverse DCT-II (orthonormal; sqrt(2) per axis keeps a constant). Read-only."""
    forward = scipy_fft.dct(np.eye(size), type=2, norm="ortho", axis=0)  # [size, size]
    inverse = scipy_fft.idct(np.eye(SCALE * size), type=2, norm="ortho", axis=0)[:, :size]  # [2 size, size]
    matrix = inverse @ forward * np.sqrt(SCALE)
    matrix.setflags(write=False)
    return matrix


def dct_upsample(image: np.ndarray) -> np.ndarray:
    """Double the matrix by zero-padding the DCT-II: zero-filled k-space interpolation of the
    mirrored image, the exact inverse of :func:`dct_downsample` for an image whose DCT lies in
    the lowest half of each axis; float32."""
    image = np.asarray(image, dtype=np.float64)
    rows, cols = (dct_upsample_matrix(size) for size in image.shape)
    return (rows @ image @ cols.T).astype(np.float32)


MR_KSPACE = {"dft": (kspace_downsample, kspace_upsample), "dct": (dct_downsample, dct_upsample)}


def _half_pixel_shift(rows: int, cols: int) -> np.ndarray:
    """The phase ramp that moves a ``rows`` x ``cols`` image by half a pixel along both axes."""
    ky, kx = np.fft.fftfreq(rows)[:, None], np.fft.fftfreq(cols)[None, :]
    return np.exp(1j * np.pi * (ky + kx))


def _low_band(small_rows: int, small_cols: int, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Where a ``small_rows`` x ``small_cols`` grid's frequencies, in its own FFT order, sit in
    the full grid's spectrum (an ``np.ix_`` index)."""
    keep_r = np.rint(np.fft.fftfreq(small_rows) * small_rows).astype(int) % rows
    keep_c = np.rint(np.fft.fftfreq(small_cols) * small_cols).astype(int) % cols
    return np.ix_(keep_r, keep_c)


def reference_values(image: SourceImage, cfg: DataConfig) -> np.ndarray:
    """The values an x2 pair's high-resolution side is made from: MR phantoms band-limited by
    ``sr_mr_phantom_band`` (a fraction drawn from the image's name), everything else as it is."""
    if cfg.sr_mr_phantom_band is None or image.source != "phantom" or image.modality.upper() != "MR":
        return image.values
    return kspace_lowpass(image.values, band_fraction(image.name, cfg.sr_mr_phantom_band, "sr_band"))


def blur_area_downsample(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of ``sigma`` pixels (0: none), then the mean of each 2x2 block."""
    image = _even(np.asarray(image, dtype=np.float64))
    if sigma > 0:
        image = ndimage.gaussian_filter(image, sigma, mode="reflect")
    rows, cols = image.shape
    blocks = image.reshape(rows // SCALE, SCALE, cols // SCALE, SCALE)
    return blocks.mean(axis=(1, 3)).astype(np.float32)


def downsample(image: np.ndarray, modality: str, cfg: DataConfig) -> np.ndarray:
    """The modality's x2 degradation of a (normalized) high-resolution image."""
    if modality.upper() == "MR":
        return MR_KSPACE[cfg.sr_mr_kspace][0](image)
    return blur_area_downsample(image, cfg.sr_blur_sigma)


def degradation_label(modality: str, cfg: DataConfig) -> str:
    """How ``modality`` was degraded, for records (e.g. ``sr2_kspace``, ``sr2_blur0.6_area``)."""
    if modality.upper() == "MR":
        return "sr2_kspace" if cfg.sr_mr_kspace == "dft" else f"sr2_kspace_{cfg.sr_mr_kspace}"
    return f"sr2_blur{cfg.sr_blur_sigma:g}_area"


@dataclass
class _SRPoolImage:
    highres: np.ndarray  # normalized, even sides
    lowres: np.ndarray  # normalized, half the sides
    state: NormalizationState
    modality: str
    real: bool = False  # from a scan, not a phantom (data.real_image_share)


def _pool_image(image: SourceImage, cfg: DataConfig) -> _SRPoolImage:
    values = reference_values(image, cfg)
    state = fit_normalization(values, spec_for(image.modality, cfg))
    highres = _even(normalize(values, state))
    return _SRPoolImage(highres, downsample(highres, image.modality, cfg), state, image.modality, image.scanned)


def _dihedral(array: np.ndarray, code: int) -> np.ndarray:
    """One of the 8 flips/rotations (they keep the 2x2 block grid, so pairs stay aligned)."""
    array = np.rot90(array, code % 4)
    return np.ascontiguousarray(array[:, ::-1] if code >= 4 else array)


class SRPatchDataset(SeededPatches):
    """Random ``(low-res [1, p/2, p/2], high-res [1, p, p])`` pairs (:class:`SeededPatches`)."""

    def __init__(self, images: list[_SRPoolImage], cfg: DataConfig) -> None:
        if cfg.patch_size % SCALE:
            raise ValueError(f"patch_size {cfg.patch_size} must be even for x{SCALE} super-resolution")
        super().__init__(images, cfg)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng, pool = self.draw(index)
        small = self.cfg.patch_size // SCALE
        rows, cols = pool.lowres.shape
        top, left = rng.integers(0, rows - small + 1), rng.integers(0, cols - small + 1)
        lowres = pool.lowres[top : top + small, left : left + small]
        highres = pool.highres[SCALE * top : SCALE * (top + small), SCALE * left : SCALE * (left + small)]
        if self.cfg.sr_noise_range is not None:
            sigma = _log_uniform(tuple(self.cfg.sr_noise_range), rng)
            lowres = lowres + rng.normal(0.0, sigma, lowres.shape).astype(np.float32)
        if self.cfg.augment:
            code = int(rng.integers(8))
            lowres, highres = _dihedral(lowres, code), _dihedral(highres, code)
        return (torch.from_numpy(np.ascontiguousarray(lowres, dtype=np.float32))[None],
                torch.from_numpy(np.ascontiguousarray(highres, dtype=np.float32))[None])


def build_sr_training_set(cfg: DataConfig) -> SRPatchDataset:
    """Training pairs from the training split's images (never a held-out image)."""
    training, _ = split_sources(load_sources(cfg), cfg)
    usable = [image for image in training if min(image.values.shape) >= cfg.patch_size]
    return SRPatchDataset([_pool_image(image, cfg) for image in usable], cfg)


def eval_pairs(image: SourceImage, cfg: DataConfig) -> list[HeldoutImage]:
    """A held-out image's SR pair (``trainer.data.build_heldout_set`` with task "sr2"):
    ``degraded`` the low-resolution image, ``clean`` the original (twice the rows and columns);
    none for an image too small to halve."""
    if min(image.values.shape) < 2 * SCALE:
        return []
    spec = spec_for(image.modality, cfg)
    cropped = _even(crop_to(reference_values(image, cfg), cfg.heldout_max_side))
    state = fit_normalization(cropped, spec)
    highres = normalize(cropped, state)
    lowres = downsample(highres, image.modality, cfg)
    label = degradation_label(image.modality, cfg)
    if cfg.sr_noise_range is not None:  # the middle of the range, seeded by the name
        rng = np.random.default_rng(stable_seed("heldout", image.name, label))
        sigma = float(np.sqrt(cfg.sr_noise_range[0] * cfg.sr_noise_range[1]))
        lowres = lowres + rng.normal(0.0, sigma, lowres.shape).astype(np.float32)
        label += f"_noise{sigma:.3g}"
    for array in (lowres, highres):
        array.setflags(write=False)
    return [HeldoutImage(image.name, image.modality, lowres, highres, spec, label, state=state)]
