"""Degradations and phantoms: low-dose CT physics, MR/X-ray noise, blur, downsampling."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.data.degrade import (
    LowDoseCT,
    blur,
    downsample,
    gaussian_noise,
    hu_to_mu,
    noise_sigma_hu,
    rician_noise,
    soft_tissue_mask,
)
from trainer.data.phantoms import phantom_pixel_mm, random_phantom, shepp_logan_hu
from trainer.metrics import psnr


@pytest.fixture(scope="module")
def phantom() -> np.ndarray:
    return random_phantom(64, np.random.default_rng(3))


def test_low_dose_psnr_falls_monotonically_with_dose(phantom):
    simulator = LowDoseCT(phantom, phantom_pixel_mm(64), angles=48, photons=3e6)
    scores = [psnr(simulator.degrade(d, np.random.default_rng(11)), phantom, 4095.0) for d in (1.0, 0.5, 0.25, 0.1)]
    assert all(a > b for a, b in zip(scores, scores[1:])), scores
    assert np.isfinite(scores).all()


def test_low_dose_noise_scales_as_inverse_sqrt_dose(phantom):
    simulator = LowDoseCT(phantom, phantom_pixel_mm(64), angles=48, photons=3e6)
    body = (phantom > -200) & (phantom < 200)
    full = np.std([simulator.noise(1.0, np.random.default_rng(s))[body] for s in range(4)])
    quarter = np.std([simulator.noise(0.25, np.random.default_rng(s))[body] for s in range(4)])
    assert quarter / full == pytest.approx(2.0, rel=0.15)  # Poisson: sigma ~ 1/sqrt(dose)


def test_low_dose_is_reproducible_and_keeps_the_reference(phantom):
    simulator = LowDoseCT(phantom, phantom_pixel_mm(64), angles=32, photons=3e6)
    a = simulator.degrade(0.25, np.random.default_rng(5))
    b = simulator.degrade(0.25, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, phantom)
    # Noise has no mean offset: the reference is the original image, not a blurred FBP.
    assert abs(float(np.mean(a - phantom))) < 5.0


def _tissue_phantom(side: int = 128) -> np.ndarray:
    """A water disc with a few soft-tissue and bone inserts: plenty of soft tissue to measure."""
    yy, xx = np.mgrid[:side, :side] - (side - 1) / 2
    hu = np.full((side, side), -1000.0, dtype=np.float32)
    hu[yy**2 + xx**2 < (0.42 * side) ** 2] = 40.0
    hu[(yy - side / 6) ** 2 + xx**2 < (side / 12) ** 2] = 700.0
    hu[yy**2 + (xx - side / 5) ** 2 < (side / 14) ** 2] = -80.0
    return hu


def test_a_smooth_slice_keeps_the_photon_count():
    clean = _tissue_phantom()
    matched = LowDoseCT(clean, 2.0, angles=32, photons=3e6, match_own_noise=True)
    plain = LowDoseCT(clean, 2.0, angles=32, photons=3e6)
    assert matched.photons_per_bin == plain.photons_per_bin
    assert matched.own_variance_fraction < 0.05


def test_a_noisy_scan_gets_the_noise_of_its_own_quarter_dose():
    # A "real" full-dose scan: the tissue phantom plus the noise of a scan at 1/8 of 3e6 photons.
    clean = _tissue_phantom()
    pixel_mm = 2.0
    scan = LowDoseCT(clean, pixel_mm, angles=90, photons=3e6).degrade(0.125, np.random.default_rng(1))
    mask = soft_tissue_mask(clean)
    own = noise_sigma_hu(scan, mask)
    simulator = LowDoseCT(scan, pixel_mm, angles=90, photons=3e6, match_own_noise=True)
    # Its own noise says it was acquired with ~1/8 of the photons: I0 is lowered to match.
    assert simulator.photons_per_bin == pytest.approx(3e6 * 1000 / 90 / 8, rel=0.3)
    assert simulator.own_variance_fraction == 1.0
    quarter = simulator.degrade(0.25, np.random.default_rng(2))
    # Quarter dose of this scan: total noise 2x its own (variance 1/dose), not own + a fixed amount.
    assert noise_sigma_hu(quarter, mask) == pytest.approx(2.0 * own, rel=0.15)


def test_scan_pair_nests_noise_like_a_real_low_full_dose_pair():
    clean = _tissue_phantom()
    simulator = LowDoseCT(clean, 2.0, angles=90, photons=3e6)
    mask = soft_tissue_mask(clean)
    one_dose = noise_sigma_hu(simulator.degrade(1.0, np.random.default_rng(3)), mask)
    full, low = simulator.scan_pair(0.25, np.random.default_rng(4))
    # The reference is a full-dose scan (noisy), the low-dose scan adds 3x its noise variance.
    assert noise_sigma_hu(full, mask) == pytest.approx(one_dose, rel=0.15)
    assert noise_sigma_hu(low - full, mask) == pytest.approx(np.sqrt(3.0) * one_dose, rel=0.15)
    assert noise_sigma_hu(low, mask) == pytest.approx(2.0 * one_dose, rel=0.15)


def test_with_photons_is_the_same_slice_scanned_at_another_i0():
    clean = _tissue_phantom()
    simulator = LowDoseCT(clean, 2.0, angles=90, photons=3e6)
    quieter = simulator.with_photons(12e6)
    rebuilt = LowDoseCT(clean, 2.0, angles=90, photons=12e6)
    np.testing.assert_array_equal(quieter.degrade(0.5, np.random.default_rng(5)),
                                  rebuilt.degrade(0.5, np.random.default_rng(5)))
    # Four times the photons halve the noise; the original simulator is left as it was.
    mask = soft_tissue_mask(clean)
    loud = noise_sigma_hu(simulator.noise(1.0, np.random.default_rng(6)), mask)
    assert noise_sigma_hu(quieter.noise(1.0, np.random.default_rng(6)), mask) == pytest.approx(loud / 2, rel=0.15)
    assert simulator.photons_per_bin == rebuilt.photons_per_bin / 4


def test_with_photons_refuses_a_slice_with_its_own_noise():
    clean = _tissue_phantom()
    scan = LowDoseCT(clean, 2.0, angles=32, photons=3e6).degrade(0.125, np.random.default_rng(1))
    matched = LowDoseCT(scan, 2.0, angles=32, photons=3e6, match_own_noise=True)
    assert matched.own_variance_fraction > 0
    with pytest.raises(ValueError, match="noiseless slice"):
        matched.with_photons(12e6)


def test_low_dose_handles_non_square_slices():
    slice_ = np.full((40, 56), -1000.0, dtype=np.float32)
    slice_[10:30, 10:46] = 40.0
    out = LowDoseCT(slice_, 0.7, angles=24, photons=1e6).degrade(0.5, np.random.default_rng(0))
    assert out.shape == slice_.shape and out.dtype == np.float32


def test_low_dose_rejects_bad_dose(phantom):
    with pytest.raises(ValueError, match="dose"):
        LowDoseCT(phantom, 1.0, angles=8, photons=1e5).noise(0.0, np.random.default_rng(0))


def test_hu_to_mu_anchors():
    mu = hu_to_mu(np.array([-1000.0, 0.0, 1000.0, -3024.0]))
    assert mu[0] == 0 and mu[3] == 0 and mu[2] == pytest.approx(2 * mu[1])


def test_random_phantom_has_realistic_hu():
    image = random_phantom(128, np.random.default_rng(0))
    assert image.shape == (128, 128) and image.dtype == np.float32
    assert image[0, 0] == -1000.0  # air outside the body
    assert np.any((image > -130) & (image < -70))  # fat
    assert np.any((image > 15) & (image < 65))  # soft tissue
    assert np.any((image >= 400) & (image <= 1500))  # bone
    assert image.max() <= 1500 + 20 and image.min() >= -1000


def test_random_phantoms_differ_by_seed_and_repeat_by_seed():
    a = random_phantom(64, np.random.default_rng(1))
    np.testing.assert_array_equal(a, random_phantom(64, np.random.default_rng(1)))
    assert not np.array_equal(a, random_phantom(64, np.random.default_rng(2)))


def test_shepp_logan_in_hu():
    image = shepp_logan_hu(128)
    assert image[0, 0] == -1000.0
    assert image.max() == pytest.approx(1000.0, abs=5)  # skull
    centre = image[48:80, 48:80]
    assert np.median(centre) > 0 and np.median(centre) < 100  # brain soft tissue


def test_gaussian_and_rician_noise_statistics():
    rng = np.random.default_rng(0)
    zeros = np.zeros((256, 256))
    assert np.std(gaussian_noise(zeros, 2.0, rng)) == pytest.approx(2.0, rel=0.03)
    background = rician_noise(zeros, 2.0, rng)
    assert background.min() >= 0  # magnitude images are non-negative
    assert np.mean(background) == pytest.approx(2.0 * np.sqrt(np.pi / 2), rel=0.03)  # Rayleigh mean
    bright = rician_noise(np.full((256, 256), 100.0), 2.0, rng)
    assert np.mean(bright) == pytest.approx(100.0, rel=0.01)  # ~Gaussian at high SNR


def test_blur_and_downsample_remove_detail():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(64, 64)).astype(np.float32)
    for out in (blur(image, 1.5), downsample(image, 2)):
        assert out.shape == image.shape
        assert np.std(out) < 0.7 * np.std(image)
    np.testing.assert_array_equal(downsample(image, 1), image)
