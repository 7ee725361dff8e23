"""Fair classical baselines: a small sweep of each denoiser's strength on a tuning image that
is not in the held-out set (an image of the training split, same modality and degradation).

trainer.baselines scales NLM's ``h`` and TV's weight by the estimated noise sigma through
module constants; the sweep sets those constants for the duration of a call, so the tuned
baseline is exactly trainer.baselines' function. Wavelet (BayesShrink) has no strength knob
there and runs as is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from unittest import mock

import numpy as np

import trainer.baselines as baselines
from trainer.data import DataConfig, HeldoutImage, build_heldout_set
from trainer.metrics import psnr

# baseline -> (trainer.baselines constant, values tried around the defaults 0.8 and 1.0)
SWEEPS: dict[str, tuple[str, tuple[float, ...]]] = {
    "nlm": ("NLM_H_PER_SIGMA", (0.3, 0.4, 0.6, 0.8, 1.0, 1.2, 1.6, 2.0, 2.5, 3.2)),
    "tv": ("TV_WEIGHT_PER_SIGMA", (0.125, 0.25, 0.5, 1.0, 2.0, 4.0)),
}
TUNING_SIDE = 256


TUNING_METRIC = (
    "psnr over the normalized range [0, 1] (CT: the model's ct_hu_range, [-160, 240] HU = psnr_window "
    "for the shipped model; psnr otherwise)"
)


def tuning_score(denoised: np.ndarray, clean: np.ndarray) -> float:
    """The score the sweep maximizes: PSNR of the clipped normalized images (cheap; no FSIM)."""
    return psnr(np.clip(denoised, 0.0, 1.0), np.clip(clean, 0.0, 1.0), 1.0)


@contextlib.contextmanager
def strength(name: str, value: float | None) -> Iterator[None]:
    """Within the block, baseline ``name`` uses ``value`` for its strength constant."""
    if value is None or name not in SWEEPS:
        yield
        return
    with mock.patch.object(baselines, SWEEPS[name][0], value):
        yield


def run_baseline(name: str, image: np.ndarray, value: float | None) -> np.ndarray:
    """trainer.baselines' ``name`` denoiser at the given strength (None: its default)."""
    with strength(name, value):
        return baselines.BASELINES[name](image)


def tuning_images(cfg: DataConfig, heldout_names: set[str]) -> dict[tuple[str, str], HeldoutImage]:
    """One image per (modality, degradation) from outside the held-out set, degraded the same way."""
    chosen: dict[tuple[str, str], HeldoutImage] = {}
    for modality in cfg.modalities:
        sources = [s for s in cfg.sources if s != "phantom"] or cfg.sources
        tuning_cfg = DataConfig.from_dict({**cfg.to_dict(), "sources": sources, "modalities": [modality],
                                           "heldout_fraction": 0.99, "heldout_max_side": TUNING_SIDE})
        for image in sorted(build_heldout_set(tuning_cfg), key=lambda i: i.name):
            key = (image.modality, image.degradation)
            if image.name not in heldout_names and key not in chosen and min(image.clean.shape) >= 64:
                chosen[key] = image
    return chosen


def sweep(name: str, image: HeldoutImage, progress: Callable[[str], None] = lambda _: None) -> dict:
    """Scores of each strength on ``image`` and the best one."""
    if name not in SWEEPS:
        return {"constant": None, "best": None, "scores": {}, "note": "no strength parameter in trainer.baselines"}
    constant, values = SWEEPS[name]
    scores = {value: tuning_score(run_baseline(name, image.degraded, value), image.clean) for value in values}
    best = max(scores, key=scores.get)
    progress(f"tuned {name} on {image.name} ({image.degradation}): {constant}={best} (PSNR {scores[best]:.2f} dB)")
    return {"constant": constant, "best": best, "metric": TUNING_METRIC, "at_grid_edge": best in (values[0], values[-1]), "scores": {str(k): v for k, v in scores.items()},
            "tuning_image": image.name, "default": getattr(baselines, constant)}


def tune_all(cfg: DataConfig, heldout: list[HeldoutImage], progress: Callable[[str], None]) -> dict:
    """Best strength per (modality, degradation) and baseline; keys are ``"MODALITY/degradation"``."""
    names = {image.name for image in heldout}
    wanted = {(image.modality, image.degradation) for image in heldout}
    images = tuning_images(cfg, names)
    result = {}
    for key in sorted(wanted):
        image = images.get(key)
        result["/".join(key)] = {
            name: sweep(name, image, progress) if image is not None
            else {"best": None, "note": "no tuning image outside the held-out set; default used"}
            for name in baselines.BASELINES
        }
    return result
