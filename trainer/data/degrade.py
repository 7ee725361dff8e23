"""Degradations: projection-domain low-dose CT, MR/X-ray noise, blur and downsampling.

All functions work in modality values (HU for CT) on 2-D float arrays and take an explicit
``numpy.random.Generator`` so results are reproducible. The maths is written out in
docs/DATA.md.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.transform import iradon, radon, resize

MU_WATER_PER_MM = 0.0192  # linear attenuation of water at ~70 keV effective energy, 1/mm
REFERENCE_VIEWS = 1000  # ct_photons is stated for a scan of this many views


def hu_to_mu(hu: np.ndarray) -> np.ndarray:
    """HU -> linear attenuation (1/mm); anything below air is air (mu = 0)."""
    return np.clip(MU_WATER_PER_MM * (1.0 + np.asarray(hu, dtype=np.float64) / 1000.0), 0.0, None)


def _square(image: np.ndarray, fill: float) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Pad to a square (radon needs one); return the padded image and the crop back."""
    rows, cols = image.shape
    side = max(rows, cols)
    top, left = (side - rows) // 2, (side - cols) // 2
    padded = np.full((side, side), fill, dtype=np.float64)
    padded[top : top + rows, left : left + cols] = image
    return padded, (slice(top, top + rows), slice(left, left + cols))


class LowDoseCT:
    """Projection-domain low-dose simulation for one CT slice (HU in, HU out).

    The clean slice is forward projected once (``skimage.transform.radon``); each call draws
    Poisson counts ``I0 * dose * exp(-p)`` per detector bin, takes the log, reconstructs the
    difference from the noiseless sinogram by filtered back-projection (ramp filter) and adds
    that noise image to the original slice. The reference stays the original image, so the
    pair differs only by dose noise, not by discretisation error of the simulator.
    """

    def __init__(self, hu: np.ndarray, pixel_mm: float, angles: int, photons: float) -> None:
        if hu.ndim != 2:
            raise ValueError(f"LowDoseCT needs a 2-D slice, got shape {hu.shape}")
        self.hu = np.asarray(hu, dtype=np.float32)
        self.pixel_mm = float(pixel_mm)
        self.theta = np.linspace(0.0, 180.0, int(angles), endpoint=False)
        mu, self._crop = _square(hu_to_mu(hu), 0.0)
        side = mu.shape[0]
        yy, xx = np.mgrid[:side, :side] - (side - 1) / 2.0
        mu[yy**2 + xx**2 > (side / 2.0 - 1.0) ** 2] = 0.0  # the scan's circular field of view
        self.sinogram = radon(mu * self.pixel_mm, self.theta, circle=True)
        # Fewer simulated views than a real scan get proportionally more photons each, so
        # the image noise does not depend on the number of views chosen.
        self.photons_per_bin = float(photons) * REFERENCE_VIEWS / len(self.theta)

    def noise(self, dose: float, rng: np.random.Generator) -> np.ndarray:
        """The HU noise image of a scan at ``dose`` (fraction of full dose)."""
        if not 0 < dose <= 1:
            raise ValueError(f"dose {dose} must be in (0, 1]")
        incident = self.photons_per_bin * dose
        counts = rng.poisson(incident * np.exp(-self.sinogram))
        noisy = -np.log(np.maximum(counts, 1) / incident)  # one count floor: no log(0)
        side = self.sinogram.shape[0]
        delta_mu = iradon(noisy - self.sinogram, self.theta, output_size=side, filter_name="ramp", circle=True)
        delta_hu = delta_mu / self.pixel_mm / MU_WATER_PER_MM * 1000.0
        return delta_hu[self._crop].astype(np.float32)

    def degrade(self, dose: float, rng: np.random.Generator) -> np.ndarray:
        """The slice as scanned at ``dose``: original + reconstructed dose noise (HU)."""
        return self.hu + self.noise(dose, rng)


def low_dose_ct(
    hu: np.ndarray, dose: float, rng: np.random.Generator, *, pixel_mm: float, angles: int, photons: float
) -> np.ndarray:
    """One low-dose realization of a CT slice (see :class:`LowDoseCT`)."""
    return LowDoseCT(hu, pixel_mm, angles, photons).degrade(dose, rng)


def gaussian_noise(values: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Additive white Gaussian noise of standard deviation ``sigma`` (same units as values)."""
    return (values + rng.normal(0.0, sigma, size=values.shape)).astype(np.float32)


def rician_noise(values: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """MR magnitude noise: ``|values + n_re + i n_im|`` with n ~ N(0, sigma^2) per channel."""
    real = values + rng.normal(0.0, sigma, size=values.shape)
    imag = rng.normal(0.0, sigma, size=values.shape)
    return np.hypot(real, imag).astype(np.float32)


def blur(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of ``sigma`` pixels (reflecting borders)."""
    return ndimage.gaussian_filter(np.asarray(values, dtype=np.float32), sigma, mode="reflect")


def downsample(values: np.ndarray, factor: int) -> np.ndarray:
    """Area-downsample by ``factor`` and cubic-upsample back to the same shape."""
    if factor <= 1:
        return np.asarray(values, dtype=np.float32)
    small_shape = tuple(max(1, s // factor) for s in values.shape)
    small = resize(values, small_shape, order=1, anti_aliasing=True, preserve_range=True)
    return resize(small, values.shape, order=3, preserve_range=True).astype(np.float32)
