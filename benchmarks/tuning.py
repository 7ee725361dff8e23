"""Fair classical baselines: a small sweep of each denoiser's strength on tuning images that
are never test images.

NLM's ``h`` and TV's weight are multiples of the noise sigma (trainer.baselines); the sweep
tries several multiples per modality and degradation (dose/noise level) and keeps the best by
PSNR: for CT in the soft-tissue window (``psnr_window``) and, separately, the lung window
(``psnr_lung``), otherwise on the normalized image (``psnr``). Tuning images are the
**validation** split's images of that modality and degradation (all of them, mean PSNR);
where the validation split has none (X-ray has no validation radiograph in the packages, and
configs without a validation split), the first training image by name, centre-cropped to
256², degraded the same way. Wavelet (BayesShrink) has no strength knob and runs as is.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable

import numpy as np

import trainer.baselines as baselines
from trainer.data import DataConfig, HeldoutImage, build_heldout_set
from trainer.metrics import image_quality

# baseline -> multiples of sigma tried (around the defaults 0.8 and 1.0)
SWEEPS: dict[str, tuple[float, ...]] = {
    "nlm": (0.3, 0.4, 0.6, 0.8, 1.0, 1.2, 1.6, 2.0, 2.5, 3.2),
    "tv": (0.125, 0.25, 0.5, 1.0, 2.0, 4.0),
}
TUNING_SIDE = 256  # centre crop of a training image used where no validation image exists
TRAINING_FALLBACK = "train (no validation image of this modality and degradation; centre crop {side}²)"


def tuning_metrics(image: HeldoutImage) -> tuple[str, ...]:
    """The PSNR keys of trainer.metrics.image_quality a strength is tuned for; the first is the primary."""
    if image.modality.upper() == "CT" and image.spec.kind == "hu_linear":
        return ("psnr_window", "psnr_lung")
    return ("psnr",)


def run_baseline(name: str, image: np.ndarray, value: float | None = None, sigma: float | None = None) -> np.ndarray:
    """trainer.baselines' ``name`` denoiser at strength ``value`` (None: its default) given the
    noise level ``sigma`` in normalized units (None: estimated from the image)."""
    keyword = baselines.STRENGTH_KEYWORDS.get(name)
    options = {keyword: value} if keyword and value is not None else {}
    return baselines.BASELINES[name](image, sigma, **options)


def true_sigma(image: HeldoutImage) -> float | None:
    """The image's true noise sigma (normalized units); None where unknown (real low/full-dose pairs)."""
    return float(image.noise_sigma) if np.isfinite(image.noise_sigma) else None


def tuning_sets(
    cfg: DataConfig, wanted: Iterable[tuple[str, str]], test_names: set[str]
) -> dict[tuple[str, str], tuple[str, list[HeldoutImage]]]:
    """``(modality, degradation) -> (split, images)`` for every wanted key that has tuning images."""
    validation = build_heldout_set(cfg, "validation")
    chosen: dict[tuple[str, str], list[HeldoutImage]] = defaultdict(list)
    for image in validation:
        chosen[(image.modality, image.degradation)].append(image)
    result = {key: ("validation", images) for key, images in chosen.items()}
    excluded = test_names | {image.name for image in validation}
    for modality in sorted({m for m, d in wanted if (m, d) not in result}):
        sources = [s for s in cfg.sources if s != "phantom"] or cfg.sources
        fallback = DataConfig.from_dict({**cfg.to_dict(), "sources": sources, "modalities": [modality],
                                         "heldout_fraction": 0.99, "validation_fraction": 0.0,
                                         "heldout_max_side": TUNING_SIDE})
        for image in sorted(build_heldout_set(fallback), key=lambda i: i.name):
            key = (image.modality, image.degradation)
            if image.name not in excluded and key not in result and min(image.clean.shape) >= 64:
                result[key] = (TRAINING_FALLBACK.format(side=TUNING_SIDE), [image])
    return result


def sweep(name: str, split: str, images: list[HeldoutImage], oracle: bool) -> dict:
    """Mean PSNR of each strength over ``images`` (given the true sigma when ``oracle``) and
    the best strength per tuning metric."""
    metrics = tuning_metrics(images[0])
    scores: dict[str, dict[float, float]] = {metric: {} for metric in metrics}
    for value in SWEEPS[name]:
        results = [image_quality(run_baseline(name, i.degraded, value, true_sigma(i) if oracle else None), i.clean,
                                 i.modality, i.spec, with_fsim=False, with_ssim=False) for i in images]
        for metric in metrics:
            scores[metric][value] = float(np.mean([r[metric] for r in results]))
    best = {metric: max(by_value, key=by_value.get) for metric, by_value in scores.items()}
    edges = (SWEEPS[name][0], SWEEPS[name][-1])
    return {"parameter": baselines.STRENGTH_KEYWORDS[name], "sigma": "true" if oracle else "estimated",
            "best": best, "at_grid_edge": {m: v in edges for m, v in best.items()},
            "scores": {m: {f"{v:g}": s for v, s in by_value.items()} for m, by_value in scores.items()},
            "tuning_split": split, "tuning_images": sorted({i.name for i in images})}


def tune_all(
    cfg: DataConfig, evaluated: list[HeldoutImage], progress: Callable[[str], None], *,
    names: Iterable[str] = tuple(baselines.BASELINES), oracle: bool = False,
) -> dict:
    """Best strengths per ``"MODALITY/degradation"`` of ``evaluated`` and baseline in ``names``."""
    wanted = sorted({(image.modality, image.degradation) for image in evaluated})
    sets = tuning_sets(cfg, wanted, {image.name for image in evaluated})
    result = {}
    for key in wanted:
        entry = {}
        for name in names:
            if name not in SWEEPS:
                entry[name] = {"best": None, "note": "no strength parameter in trainer.baselines"}
            elif key not in sets:
                entry[name] = {"best": None, "note": "no tuning image outside the evaluated images; default used"}
            else:
                entry[name] = sweep(name, *sets[key], oracle)
                best = ", ".join(f"{m}: {v:g}" for m, v in entry[name]["best"].items())
                progress(f"tuned {name} for {'/'.join(key)} on {len(sets[key][1])} {sets[key][0].split()[0]} "
                         f"image(s): {entry[name]['parameter']} {best}")
        result["/".join(key)] = entry
    return result


def best_strengths(tuned: dict, image: HeldoutImage, name: str) -> dict[str, float | None]:
    """Tuned strength per tuning metric (primary first) for ``image``; None values: the default."""
    best = tuned.get(f"{image.modality}/{image.degradation}", {}).get(name, {}).get("best")
    return dict(best) if best else {tuning_metrics(image)[0]: None}
