"""PSNR/SSIM/FSIM against closed forms and known properties; the CT reporting conventions."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.data import camera

from runtime.normalization import CT_DEFAULT, PERCENTILE_DEFAULT, NormalizationSpec
from trainer.metrics import fsim, image_quality, psnr, ssim


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return camera()[::4, ::4].astype(np.float64) / 255.0  # 128 x 128 in [0, 1]


def test_psnr_of_a_constant_offset_has_a_closed_form(image):
    for offset, data_range in ((0.01, 1.0), (5.0, 4095.0), (5.0, 400.0)):
        assert psnr(image + offset, image, data_range) == pytest.approx(20 * np.log10(data_range / offset), abs=1e-9)
    assert psnr(image, image, 1.0) == float("inf")


def test_data_range_is_required_and_checked(image):
    with pytest.raises(TypeError):
        psnr(image, image)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        ssim(image, image)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="data_range"):
        psnr(image, image, 0.0)
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(image, image[1:], 1.0)


def test_ssim_identical_is_one_and_falls_with_noise(image):
    rng = np.random.default_rng(0)
    assert ssim(image, image, 1.0) == pytest.approx(1.0)
    scores = [ssim(image + rng.normal(0, s, image.shape), image, 1.0) for s in (0.01, 0.05, 0.1)]
    assert 1.0 > scores[0] > scores[1] > scores[2] > 0.0


def test_ssim_of_constant_images_matches_the_luminance_formula():
    # Constant images: the contrast-structure term is C2/C2 = 1, so SSIM is the luminance term.
    a, b, data_range = 0.3, 0.5, 1.0
    c1 = (0.01 * data_range) ** 2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    assert ssim(np.full((32, 32), b), np.full((32, 32), a), data_range) == pytest.approx(expected, rel=1e-9)


def test_ssim_depends_on_the_stated_range(image):
    noisy = image + np.random.default_rng(1).normal(0, 0.05, image.shape)
    assert ssim(noisy, image, 10.0) > ssim(noisy, image, 1.0)


def test_fsim_identical_is_one_and_falls_with_noise(image):
    rng = np.random.default_rng(0)
    assert fsim(image, image, 1.0) == pytest.approx(1.0, abs=1e-6)
    scores = [fsim(np.clip(image + rng.normal(0, s, image.shape), 0, 1), image, 1.0) for s in (0.02, 0.1)]
    assert 1.0 > scores[0] > scores[1] > 0.5


def test_fsim_is_invariant_to_the_stated_scale(image):
    noisy = np.clip(image + np.random.default_rng(0).normal(0, 0.05, image.shape), 0, 1)
    assert fsim(noisy * 400, image * 400, 400.0) == pytest.approx(fsim(noisy, image, 1.0), abs=1e-4)


def test_ct_conventions_differ_by_about_20_db():
    rng = np.random.default_rng(0)
    hu = rng.uniform(0.0, 80.0, size=(96, 96))  # soft tissue, inside the W400/L40 window
    noisy = hu + rng.normal(0.0, 10.0, hu.shape)
    to_norm = lambda v: ((v + 1024.0) / 4095.0).astype(np.float32)  # noqa: E731
    scores = image_quality(to_norm(noisy), to_norm(hu), "CT", CT_DEFAULT)
    assert set(scores) == {f"{m}_{w}" for m in ("psnr", "ssim", "fsim") for w in ("full", "window", "lung")}
    # No pixel is clipped by the window, so the gap is exactly 20 log10(4095 / 400) = 20.2 dB.
    assert scores["psnr_full"] - scores["psnr_window"] == pytest.approx(20 * np.log10(4095 / 400), abs=0.01)
    assert scores["psnr_full"] == pytest.approx(psnr(noisy, hu, 4095.0), abs=0.01)  # float32 rounding
    assert scores["ssim_full"] > scores["ssim_window"]


def test_lung_window_scores_w1500_l600_with_clipping():
    rng = np.random.default_rng(0)
    hu = rng.uniform(-900.0, -200.0, size=(64, 64))  # lung, inside W1500/L-600 = [-1350, 150]
    pred = hu + 15.0  # a constant 15 HU error
    hu[:8], pred[:8] = -2000.0, -1400.0  # below the window in both: clipped, no error counted
    spec = NormalizationSpec(kind="hu_linear", hu_min=-160.0, hu_max=240.0)  # the shipped CT normalization
    to_norm = lambda v: ((v + 160.0) / 400.0).astype(np.float32)  # noqa: E731
    scores = image_quality(to_norm(pred), to_norm(hu), "CT", spec, with_fsim=False)
    inside = 1.0 - 8 / 64  # share of pixels with the 15 HU error
    assert scores["psnr_lung"] == pytest.approx(20 * np.log10(1500 / 15.0) - 10 * np.log10(inside), abs=0.01)
    assert scores["psnr_window"] == float("inf")  # all below -160 HU: clipped alike
    assert set(image_quality(to_norm(pred), to_norm(hu), "CT", spec, with_fsim=False, with_ssim=False)) == {
        "psnr_full", "psnr_window", "psnr_lung"}


def test_non_ct_uses_the_normalized_unit_range(image):
    noisy = image + np.random.default_rng(0).normal(0, 0.03, image.shape)
    scores = image_quality(noisy, image, "MR", PERCENTILE_DEFAULT)
    assert set(scores) == {"psnr", "ssim", "fsim"}
    assert scores["psnr"] == pytest.approx(psnr(np.clip(noisy, 0, 1), image, 1.0))
    assert set(image_quality(noisy, image, "MR", PERCENTILE_DEFAULT, with_fsim=False)) == {"psnr", "ssim"}


def test_fsim_scores_structure_not_brightness(image):
    """FSIM compares phase congruency and gradients, which a uniform offset leaves alone: an
    offset and Gaussian noise of the same PSNR (34 dB) score near 1 and clearly below it, where
    a pixel-wise metric could not tell them apart."""
    inner = 0.1 + 0.8 * image  # room for the offset without clipping
    offset = inner + 0.02
    noisy = inner + np.random.default_rng(3).normal(0, 0.02, image.shape)
    assert psnr(offset, inner, 1.0) == pytest.approx(psnr(noisy, inner, 1.0), abs=0.1)
    assert fsim(offset, inner, 1.0) > 0.999
    assert fsim(noisy, inner, 1.0) < 0.97
