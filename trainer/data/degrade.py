"""Degradations: projection-domain low-dose CT, MR/X-ray noise, blur and downsampling.

All functions work in modality values (HU for CT) on 2-D float arrays and take an explicit
``numpy.random.Generator`` so results are reproducible. The maths is written out in
docs/DATA.md.
"""

from __future__ import annotations

import numpy as np
import pywt
from scipy import ndimage
from skimage.transform import iradon, radon, resize

MU_WATER_PER_MM = 0.0192  # linear attenuation of water at ~70 keV effective energy, 1/mm
REFERENCE_VIEWS = 1000  # ct_photons is stated for a scan of this many views
SOFT_TISSUE_HU = (-150.0, 250.0)  # where a CT slice's own noise is measured
_MAD_TO_SIGMA = 0.6745  # median(|N(0, 1)|)


def soft_tissue_mask(hu: np.ndarray) -> np.ndarray:
    """Soft-tissue pixels away from edges (eroded 3 px), where noise dominates fine detail."""
    tissue = (hu > SOFT_TISSUE_HU[0]) & (hu < SOFT_TISSUE_HU[1])
    return ndimage.binary_erosion(tissue, iterations=3)


def noise_sigma_hu(image: np.ndarray, mask: np.ndarray) -> float:
    """Robust noise level (HU) of ``image`` over ``mask``: the median absolute value of the
    finest diagonal Haar wavelet band / 0.6745 (Donoho's estimator), restricted to the mask.
    NaN when the mask has fewer than 100 wavelet coefficients."""
    _, (_, _, diagonal) = pywt.dwt2(np.asarray(image, dtype=np.float64), "haar")
    rows, cols = diagonal.shape
    inside = mask[: 2 * rows : 2, : 2 * cols : 2] & mask[1 : 2 * rows : 2, 1 : 2 * cols : 2]
    if inside.sum() < 100:
        return float("nan")
    return float(np.median(np.abs(diagonal[inside])) / _MAD_TO_SIGMA)


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

    ``match_own_noise=True`` (for real scans, not phantoms) makes the result a scan at ``dose``
    of *this* slice, which already carries noise: a scan cannot have been acquired with
    more photons than its own soft-tissue noise allows, so I0 is lowered until the simulated
    full-dose noise equals the slice's own (never raised), and only the missing noise variance
    is inserted, ``sigma_dose^2 - sigma_own^2`` (Yu et al. 2012's noise insertion). Without it
    (phantoms, noiseless by construction) the slice gets the full ``1/dose`` noise of I0.
    docs/DATA.md has the numbers.
    """

    def __init__(
        self, hu: np.ndarray, pixel_mm: float, angles: int, photons: float, match_own_noise: bool = False
    ) -> None:
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
        # Fraction of a full-dose scan's noise variance the slice already holds (0: noiseless).
        self.own_variance_fraction = 0.0
        if match_own_noise:
            self._match_own_noise()

    def _match_own_noise(self) -> None:
        mask = soft_tissue_mask(self.hu)
        own = noise_sigma_hu(self.hu, mask)
        # A fixed generator: the matched I0 is a property of the slice, not of a draw.
        simulated = noise_sigma_hu(self._fbp_noise(self.photons_per_bin, np.random.default_rng(0)), mask)
        if not (np.isfinite(own) and np.isfinite(simulated) and simulated > 0):
            return  # too little soft tissue to measure: treat the slice as noiseless
        if own > simulated:
            self.photons_per_bin *= (simulated / own) ** 2  # noise sigma ~ 1/sqrt(I0)
        self.own_variance_fraction = min(1.0, (own / simulated) ** 2)

    def noise(self, dose: float, rng: np.random.Generator) -> np.ndarray:
        """The HU noise image to add for a scan at ``dose`` (fraction of full dose)."""
        if not 0 < dose <= 1:
            raise ValueError(f"dose {dose} must be in (0, 1]")
        noise = self._fbp_noise(self.photons_per_bin * dose, rng)
        # Insert only the variance the slice lacks: sigma_dose^2 - sigma_own^2.
        keep = max(0.0, 1.0 - dose * self.own_variance_fraction)
        return noise if keep == 1.0 else (noise * np.float32(np.sqrt(keep)))

    def _fbp_noise(self, incident: float, rng: np.random.Generator) -> np.ndarray:
        """FBP of the Poisson noise of ``incident`` photons per bin, in HU (cropped to the slice)."""
        counts = rng.poisson(incident * np.exp(-self.sinogram))
        noisy = -np.log(np.maximum(counts, 1) / incident)  # one count floor: no log(0)
        side = self.sinogram.shape[0]
        delta_mu = iradon(noisy - self.sinogram, self.theta, output_size=side, filter_name="ramp", circle=True)
        delta_hu = delta_mu / self.pixel_mm / MU_WATER_PER_MM * 1000.0
        return delta_hu[self._crop].astype(np.float32)

    def degrade(self, dose: float, rng: np.random.Generator) -> np.ndarray:
        """The slice as scanned at ``dose``: original + reconstructed dose noise (HU)."""
        return self.hu + self.noise(dose, rng)

    def scan_pair(self, dose: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``(full_dose, low_dose)`` scans of the slice, the way real pairs come (HU).

        The full-dose scan gets the noise of I0 that the slice lacks (none for a slice that is
        already as noisy as its matched I0); the low-dose scan is the full-dose scan plus the
        noise a scan at ``dose`` has beyond it, so their noise is nested like a real pair's.
        """
        if not 0 < dose <= 1:
            raise ValueError(f"dose {dose} must be in (0, 1]")
        full_keep = max(0.0, 1.0 - self.own_variance_fraction)
        full = self.hu + self._fbp_noise(self.photons_per_bin, rng) * np.float32(np.sqrt(full_keep))
        extra = self._fbp_noise(self.photons_per_bin * dose, rng) * np.float32(np.sqrt(1.0 - dose))
        return full, full + extra


def low_dose_ct(
    hu: np.ndarray, dose: float, rng: np.random.Generator, *, pixel_mm: float, angles: int, photons: float
) -> np.ndarray:
    """One low-dose realization of a real CT slice, matched to its own noise (see :class:`LowDoseCT`)."""
    return LowDoseCT(hu, pixel_mm, angles, photons, match_own_noise=True).degrade(dose, rng)


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
