"""Classical baselines improve a noisy phantom and keep shape/dtype."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.baselines import BASELINES, noise_sigma
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
