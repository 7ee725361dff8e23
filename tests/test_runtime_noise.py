"""runtime.noise: Donoho's Haar/MAD estimate, its masks, and known-sigma phantoms (CT, MR, X-ray)."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.noise import (
    NoiseLevel,
    erode,
    estimate_noise,
    frame_noise,
    haar_mad_sigma,
    image_noise,
    sample_frames,
    signal_mask,
    soft_tissue_mask,
)


def _disc(shape, center, radius_y, radius_x=None) -> np.ndarray:
    y, x = np.mgrid[: shape[0], : shape[1]]
    radius_x = radius_x or radius_y
    return ((y - center[0]) / radius_y) ** 2 + ((x - center[1]) / radius_x) ** 2 < 1


def ct_phantom(side: int = 384) -> np.ndarray:
    """A noiseless CT-like slice in HU: air around a soft-tissue body with fat, organ and bone."""
    shape, middle = (side, side), (side / 2, side / 2)
    hu = np.full(shape, -1000.0)
    hu[_disc(shape, middle, 0.32 * side, 0.42 * side)] = 40.0
    hu[_disc(shape, (middle[0], 0.35 * side), 0.08 * side)] = -100.0
    hu[_disc(shape, (middle[0], 0.65 * side), 0.06 * side)] = 700.0
    hu[_disc(shape, (0.65 * side, middle[1]), 0.05 * side)] = 80.0
    return hu


def mr_phantom(side: int = 256) -> np.ndarray:
    """A noiseless MR-like magnitude image (0..1000) with a zero-signal background."""
    shape, middle = (side, side), (side / 2, side / 2)
    signal = np.zeros(shape)
    signal[_disc(shape, middle, 0.45 * side, 0.38 * side)] = 600.0
    signal[_disc(shape, middle, 0.37 * side, 0.30 * side)] = 900.0
    signal[_disc(shape, (0.4 * side, middle[1]), 0.08 * side)] = 300.0
    signal[_disc(shape, (0.6 * side, 0.6 * side), 0.05 * side)] = 1000.0
    return signal


def rician(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """The magnitude of complex data with Gaussian noise ``sigma`` in both channels."""
    return np.hypot(signal + rng.normal(0, sigma, signal.shape), rng.normal(0, sigma, signal.shape))


def test_haar_mad_sigma_is_pywt_diagonal_band_over_blocks_inside_the_mask():
    import pywt
    rng = np.random.default_rng(0)
    image = rng.normal(0, 7.0, (121, 96)) + np.linspace(0, 300, 96)  # odd rows: last one left out
    mask = rng.random(image.shape) > 0.1
    _, (_, _, diagonal) = pywt.dwt2(image[:120], "haar")
    blocks = mask[0:120:2, 0::2] & mask[0:120:2, 1::2] & mask[1:120:2, 0::2] & mask[1:120:2, 1::2]
    expected = np.median(np.abs(diagonal[blocks])) / 0.6745
    assert haar_mad_sigma(image, mask) == pytest.approx(expected, rel=1e-12)
    assert haar_mad_sigma(image, mask) == pytest.approx(7.0, rel=0.1)


def test_haar_mad_sigma_needs_100_blocks():
    image = np.random.default_rng(2).normal(size=(64, 64))
    mask = np.zeros(image.shape, dtype=bool)
    mask[:20, :20] = True  # 100 blocks
    assert np.isfinite(haar_mad_sigma(image, mask))
    mask[19, 19] = False  # 99
    assert np.isnan(haar_mad_sigma(image, mask))
    with pytest.raises(ValueError, match="2-D"):
        haar_mad_sigma(image[None], mask[None])


def test_erode_is_scipys_binary_erosion():
    from scipy import ndimage
    rng = np.random.default_rng(3)
    mask = ndimage.binary_dilation(rng.random((41, 57)) > 0.7, iterations=2)
    for iterations in (1, 2, 3):
        np.testing.assert_array_equal(erode(mask, iterations), ndimage.binary_erosion(mask, iterations=iterations))


def test_soft_tissue_mask_is_scipys_erosion_of_the_hu_band():
    from scipy import ndimage
    image = ct_phantom(128) + np.random.default_rng(4).normal(0, 30.0, (128, 128))
    band = (image > -150) & (image < 250)
    np.testing.assert_array_equal(soft_tissue_mask(image), ndimage.binary_erosion(band, iterations=3))


@pytest.mark.parametrize("sigma", [10.0, 40.0, 80.0])
def test_ct_phantom_noise_is_estimated_within_15_percent(sigma):
    noisy = ct_phantom() + np.random.default_rng(int(sigma)).normal(0, sigma, (384, 384))
    assert estimate_noise(noisy, "CT", None) == pytest.approx(sigma, rel=0.15)
    level = frame_noise(noisy, "CT")
    assert level.unit == "HU" and level.describe() == f"noise ~{level.value:.1f} HU"


def test_ct_air_and_padding_do_not_change_the_estimate():
    rng = np.random.default_rng(5)
    noisy = ct_phantom() + rng.normal(0, 30.0, (384, 384))
    reference = estimate_noise(noisy, "CT", None)
    canvas = rng.normal(-1000.0, 30.0, (512, 640))  # much more air around the same slice
    canvas[64:448, 128:512] = noisy
    assert estimate_noise(canvas, "CT", None) == pytest.approx(reference, rel=0.01)
    padded = noisy.copy()
    padding = np.zeros(noisy.shape, dtype=bool)
    padding[100:300, 60:300] = True  # a flat fill inside the tissue range, declared as padding
    padded[padding] = 40.0
    assert estimate_noise(padded, "CT", padding) == pytest.approx(reference, rel=0.05)
    assert estimate_noise(padded, "CT", None) < 0.8 * reference  # undeclared, it would fool the estimate


@pytest.mark.parametrize("percent", [1.0, 4.0, 8.0])
def test_mr_rician_noise_with_zero_background(percent):
    rng = np.random.default_rng(int(percent * 10))
    sigma = percent / 100 * 1000
    image = rician(mr_phantom(), sigma, rng)
    assert estimate_noise(image, "MR", None) == pytest.approx(sigma, rel=0.15)
    image[:, :48] = 0.0  # a zero-filled band outside the field of view, not declared as padding
    assert estimate_noise(image, "MR", None) == pytest.approx(sigma, rel=0.15)
    assert haar_mad_sigma(image, np.ones(image.shape, bool)) < 0.7 * sigma  # the whole image is fooled
    level = frame_noise(image, "MR")
    assert level.unit == "%" and level.value == pytest.approx(percent * 1000 / 1000, rel=0.25)
    assert level.describe().endswith("% of the p0.5-p99.5 range")


def test_xray_collimator_and_padding_are_left_out():
    rng = np.random.default_rng(6)
    y, x = np.mgrid[:400, :360]
    anatomy = 800 + 1500 * np.exp(-(((x - 180) / 90.0) ** 2)) + 2 * y  # soft tissue and a bone-like ridge
    image = np.round(anatomy + rng.normal(0, 12.0, anatomy.shape))
    image[:, :40] = 4095.0  # collimated band, saturated
    image[:30, :] = 0.0  # zero border
    padding = np.zeros(image.shape, dtype=bool)
    padding[-50:, :] = True
    image[padding] = 2000.0  # declared padding inside the value range
    mask = signal_mask(image, padding)
    assert not (mask[:, :43].any() or mask[:33].any() or mask[-53:].any())
    assert estimate_noise(image, "DX", padding) == pytest.approx(12.0, rel=0.15)
    assert estimate_noise(image, "CR", padding) == estimate_noise(image, "DX", padding)


def test_flat_and_tiny_images_are_handled():
    assert estimate_noise(np.full((64, 64), 40.0), "CT") == 0.0
    assert np.isnan(estimate_noise(np.full((64, 64), 300.0), "MR"))
    assert np.isnan(estimate_noise(np.zeros((3, 5)), "CT"))
    everything = np.ones((64, 64), dtype=bool)
    assert np.isnan(estimate_noise(np.random.default_rng(7).normal(size=(64, 64)), "MR", everything))
    assert frame_noise(np.full((64, 64), 300.0), "MR").describe() == "noise not measurable"
    with pytest.raises(ValueError, match="2-D"):
        estimate_noise(np.zeros((2, 8, 8)), "CT")


def test_image_noise_is_the_median_over_sampled_frames():
    assert sample_frames(1) == [0] and sample_frames(3) == [0, 1, 2]
    picks = sample_frames(100)
    assert len(picks) == 8 and picks[0] == 0 and picks[-1] == 99
    rng = np.random.default_rng(8)
    frames = np.stack([ct_phantom(256) + rng.normal(0, s, (256, 256)) for s in (10.0, 20.0, 40.0)])
    assert image_noise(frames, "CT").value == pytest.approx(20.0, rel=0.15)
    flat = np.full((2, 64, 64), 300.0)
    assert np.isnan(image_noise(flat, "MR").value) and image_noise(flat, "MR").unit == "%"
    assert NoiseLevel(float("nan"), "HU").describe() == "noise not measurable"
