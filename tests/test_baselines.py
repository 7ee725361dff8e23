"""Classical baselines improve a noisy phantom and keep shape/dtype; a given sigma is used as is."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.restoration import denoise_nl_means, denoise_tv_chambolle

from trainer.baselines import BASELINES, nlm, noise_sigma, tv
from trainer.data.phantoms import random_phantom
from trainer.metrics import psnr


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    clean = (random_phantom(96, np.random.default_rng(4)) + 1024.0) / 4095.0 * 3.0  # spread over ~[0, 1]
    noisy = clean + np.random.default_rng(5).normal(0.0, 0.04, clean.shape)
    return noisy.astype(np.float32), clean.astype(np.float32)


def test_registry_names():
    assert set(BASELINES) == {"nlm", "tv", "wavelet"}


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baseline_improves_psnr(pair, name):
    noisy, clean = pair
    out = BASELINES[name](noisy)
    assert out.shape == noisy.shape and out.dtype == np.float32
    assert psnr(out, clean, 1.0) > psnr(noisy, clean, 1.0) + 2.0


def test_noise_estimate_is_close(pair):
    noisy, _ = pair
    assert noise_sigma(noisy) == pytest.approx(0.04, rel=0.2)


def test_baselines_reject_non_2d():
    with pytest.raises(ValueError, match="2-D"):
        BASELINES["tv"](np.zeros((2, 8, 8)))


def test_a_given_sigma_replaces_the_estimate(pair):
    noisy, _ = pair
    estimated = noise_sigma(noisy)
    assert np.array_equal(nlm(noisy), nlm(noisy, estimated))
    assert np.array_equal(tv(noisy), tv(noisy, estimated))
    assert not np.array_equal(nlm(noisy, 2 * estimated), nlm(noisy, estimated))
    expected = denoise_nl_means(noisy.astype(np.float64), patch_size=5, patch_distance=6, h=1.5 * 0.03, sigma=0.03,
                                fast_mode=True)
    assert np.allclose(nlm(noisy, 0.03, h_per_sigma=1.5), expected, atol=1e-6)
    assert np.allclose(tv(noisy, 0.03, weight_per_sigma=2.0), denoise_tv_chambolle(noisy.astype(np.float64), weight=0.06),
                       atol=1e-6)


@pytest.mark.parametrize("sigma", [-0.1, float("nan")])
def test_a_given_sigma_must_be_valid(pair, sigma):
    with pytest.raises(ValueError, match="sigma"):
        nlm(pair[0], sigma)
