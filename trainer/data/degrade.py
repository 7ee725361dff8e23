"""Degradations: projection-domain low-dose CT, MR/X-ray noise, blur and downsampling.

All functions work in modality values (HU for CT) on 2-D float arrays and take an explicit
``numpy.random.Generator`` so results are reproducible. The maths is written out in
docs/DATA.md.
"""

from __future__ import annotations

import copy

import numpy as np
from scipy import ndimage
from skimage.transform import iradon, radon, resize

# A slice's own noise is measured the way the runtime measures a scan's (one estimator):
# soft-tissue pixels, finest diagonal Haar band, median absolute value / 0.6745.
from runtime.noise import haar_mad_sigma as noise_sigma_hu
from runtime.noise import soft_tissue_mask

__all__ = ["noise_sigma_hu", "soft_tissue_mask"]  # re-exported for the trainer's callers

MU_WATER_PER_MM = 0.0192  # linear attenuation of water at ~70 keV effective energy, 1/mm
REFERENCE_VIEWS = 1000  # ct_photons is stated for a scan of this many views
# Reconstruction kernels: skimage.transform.iradon's filters, from sharp (ramp) to smooth (hann).
CT_KERNELS = ("ramp", "shepp-logan", "cosine", "hamming", "hann")


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
        self.photons_per_bin = self._per_bin(photons)
        # Fraction of a full-dose scan's noise variance the slice already holds (0: noiseless).
        self.own_variance_fraction = 0.0
        if match_own_noise:
            self._match_own_noise()

    def with_photons(self, photons: float) -> LowDoseCT:
        """This slice's simulator at another full-dose I0 (``photons`` as the constructor takes
        them), reusing its forward projection (the arrays are shared, read-only). Noiseless slices
        only: a slice's own noise was matched to its I0, which a new I0 would contradict."""
        if self.own_variance_fraction:
            raise ValueError("with_photons needs a noiseless slice (match_own_noise=False): its own noise fixes its I0")
        other = copy.copy(self)
        other.photons_per_bin = self._per_bin(photons)
        return other

    def _per_bin(self, photons: float) -> float:
        """Photons per detector bin for a full-dose I0 of ``photons`` stated for REFERENCE_VIEWS."""
        return float(photons) * REFERENCE_VIEWS / len(self.theta)

    def _match_own_noise(self) -> None:
        mask = soft_tissue_mask(self.hu)
        own = noise_sigma_hu(self.hu, mask)
        # A fixed generator and the sharp kernel: the matched I0 is a property of the slice
        # (its scan's dose), not of a draw or of the kernel simulated afterwards.
        simulated = noise_sigma_hu(self._fbp_noise(self.photons_per_bin, np.random.default_rng(0)), mask)
        if not (np.isfinite(own) and np.isfinite(simulated) and simulated > 0):
            return  # too little soft tissue to measure: treat the slice as noiseless
        if own > simulated:
            self.photons_per_bin *= (simulated / own) ** 2  # noise sigma ~ 1/sqrt(I0)
        self.own_variance_fraction = min(1.0, (own / simulated) ** 2)

    def noise(self, dose: float, rng: np.random.Generator, kernel: str = "ramp") -> np.ndarray:
        """The HU noise image to add for a scan at ``dose`` (fraction of full dose),
        reconstructed with ``kernel`` (one of CT_KERNELS)."""
        if not 0 < dose <= 1:
            raise ValueError(f"dose {dose} must be in (0, 1]")
        noise = self._fbp_noise(self.photons_per_bin * dose, rng, kernel)
        # Insert only the variance the slice lacks: sigma_dose^2 - sigma_own^2.
        keep = max(0.0, 1.0 - dose * self.own_variance_fraction)
        return noise if keep == 1.0 else (noise * np.float32(np.sqrt(keep)))

    def unit_noise(self, rng: np.random.Generator, kernel: str = "ramp", reference_dose: float = 0.25) -> np.ndarray:
        """A noise image to scale to any dose: ``unit_noise * dose_noise_scale(d, own)`` (own =
        ``own_variance_fraction``) is the noise :meth:`noise` inserts at dose ``d``.

        In the high-count regime FBP noise scales as ``1/sqrt(dose)``, so one Poisson draw at
        ``reference_dose`` serves every dose near it; training draws a fresh dose per patch
        this way (validation and test images use :meth:`noise` at each level exactly).
        """
        return self._fbp_noise(self.photons_per_bin * reference_dose, rng, kernel) * np.float32(np.sqrt(reference_dose))

    def _fbp_noise(self, incident: float, rng: np.random.Generator, kernel: str = "ramp") -> np.ndarray:
        """FBP of the Poisson noise of ``incident`` photons per bin, in HU (cropped to the slice)."""
        if kernel not in CT_KERNELS:
            raise ValueError(f"unknown CT reconstruction kernel {kernel!r}; choose from {', '.join(CT_KERNELS)}")
        counts = rng.poisson(incident * np.exp(-self.sinogram))
        noisy = -np.log(np.maximum(counts, 1) / incident)  # one count floor: no log(0)
        side = self.sinogram.shape[0]
        delta_mu = iradon(noisy - self.sinogram, self.theta, output_size=side, filter_name=kernel, circle=True)
        delta_hu = delta_mu / self.pixel_mm / MU_WATER_PER_MM * 1000.0
        return delta_hu[self._crop].astype(np.float32)

    def degrade(self, dose: float, rng: np.random.Generator, kernel: str = "ramp") -> np.ndarray:
        """The slice as scanned at ``dose``: original + reconstructed dose noise (HU)."""
        return self.hu + self.noise(dose, rng, kernel)

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


def dose_noise_scale(dose: float, own_variance_fraction: float) -> float:
    """Factor on :meth:`LowDoseCT.unit_noise` for a scan at ``dose``, the slice's own noise
    variance (a fraction of the full-dose variance) already being there."""
    return float(np.sqrt(max(0.0, 1.0 / dose - own_variance_fraction)))


def low_dose_ct(
    hu: np.ndarray, dose: float, rng: np.random.Generator, *, pixel_mm: float, angles: int, photons: float
) -> np.ndarray:
    """One low-dose realization of a real CT slice, matched to its own noise (see :class:`LowDoseCT`)."""
    return LowDoseCT(hu, pixel_mm, angles, photons, match_own_noise=True).degrade(dose, rng)


def xray_quantum_noise(
    attenuation: np.ndarray, photons: float, rng: np.random.Generator, contrast: float = 3.0, electronic: float = 2.0
) -> np.ndarray:
    """Poisson-Gaussian quantum noise of a radiograph, on its normalized image (brighter = more
    attenuating, as the image contract presents MONOCHROME1 and MONOCHROME2 alike).

    A pixel of normalized value ``x`` received ``photons * exp(-contrast * x)`` quanta (``x``
    clipped to [-0.25, 1.25] for this); the detector adds Gaussian electronic noise of
    ``electronic`` quanta; the log of the noisy count is mapped back. Only the difference to
    the noiseless value is added, so values outside the clip keep their exact offset. Noise is
    therefore signal dependent: about ``exp(contrast * x / 2) / (contrast * sqrt(photons))``,
    larger behind bone than in the open field.
    """
    values = np.asarray(attenuation, dtype=np.float64)
    x = np.clip(values, -0.25, 1.25)
    counts = rng.poisson(photons * np.exp(-contrast * x)) + rng.normal(0.0, electronic, size=x.shape)
    noisy = -np.log(np.maximum(counts, 0.5) / photons) / contrast
    return (values + (noisy - x)).astype(np.float32)


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
