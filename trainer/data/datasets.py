"""The training set (random paired patches) and the fixed held-out set (full slices).

Images are normalized with the runtime's image contract (CT: hu_linear, others: percentile
fitted on the clean slice and applied to both images of a pair).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from runtime.noise import normalized_noise_level
from runtime.pipeline import add_noise_map
from runtime.normalization import (
    PERCENTILE_DEFAULT,
    NormalizationSpec,
    NormalizationState,
    fit_normalization,
    normalize,
)
from trainer.data import degrade
from trainer.data.augment import AugmentSettings, augment_pair, center_crop, crop_margin
from trainer.data.config import DataConfig
from trainer.data.kspace import band_limited_phantoms
from trainer.data.noise_levels import LevelTable, level_table
from trainer.data.pairing import find_dose_dirs
from trainer.data.reference import clean_reference
from trainer.data.sources import (
    SourceImage,
    atlas_images,
    directory_images,
    flat_phantom_images,
    head_phantom_images,
    invesalius_images,
    mr_phantom_images,
    natural_ct_images,
    natural_images,
    offline_images,
    paired_images,
    phantom_images,
    xray_phantom_images,
)
from trainer.data.split import SPLIT_SALT, split_of, stable_seed

# Sources whose image names are safe to record: packaged or synthetic, no patient's (a user
# folder's paths may carry patient IDs).
PACKAGED_SOURCES = ("offline", "phantom", "atlas", "natural", "natural_ct", "invesalius")


def spec_for(modality: str, cfg: DataConfig) -> NormalizationSpec:
    """The normalization a modality uses: CT hu_linear over ``cfg.ct_hu_range``, everything
    else percentile."""
    if modality.upper() == "CT":
        hu_min, hu_max = cfg.ct_hu_range
        return NormalizationSpec(kind="hu_linear", hu_min=float(hu_min), hu_max=float(hu_max))
    return PERCENTILE_DEFAULT


def normalization_table(cfg: DataConfig) -> dict[str, dict]:
    """Modality -> NormalizationSpec dict, with a ``"*"`` fallback (the checkpoint's field)."""
    table = {m: spec_for(m, cfg).to_dict() for m in cfg.modalities}
    table["*"] = PERCENTILE_DEFAULT.to_dict()
    return table


log = logging.getLogger(__name__)

# Sources that hold no test image, and the one modality each gives: skipped when only the test
# split is wanted (nilearn, which "atlas" reads, is then not needed either) or that modality is not.
_NO_TEST_IMAGES = {"atlas": "MR", "natural": "MR", "natural_ct": "CT", "invesalius": "CT"}


def load_sources(cfg: DataConfig, test_only: bool = False) -> list[SourceImage]:
    """Every clean source image the config names (training and held-out together); with
    ``test_only``, sources that hold no test image are left out."""
    modalities, images = tuple(cfg.modalities), []
    for source in cfg.sources:
        if source in _NO_TEST_IMAGES and (test_only or _NO_TEST_IMAGES[source] not in modalities):
            if not test_only:
                log.warning("data source %r gives %s images only, and %s is not among the modalities: it adds nothing",
                            source, _NO_TEST_IMAGES[source], _NO_TEST_IMAGES[source])
            continue
        if source == "offline":
            images += offline_images(modalities, cfg.min_image_side)
        elif source == "phantom":
            if "CT" in modalities:
                images += phantom_images(cfg.phantom_count, cfg.phantom_size, cfg.heldout_phantoms,
                                         cfg.validation_phantoms, cfg.ct_phantom_texture, cfg.ct_phantom_air_structure)
                images += head_phantom_images(cfg.head_phantoms, cfg.phantom_size, cfg.head_phantom_grain,
                                              cfg.head_validation_phantoms)
                images += flat_phantom_images(cfg.ct_flat_phantoms, cfg.phantom_size)
            if "MR" in modalities:
                images += band_limited_phantoms(mr_phantom_images(cfg.mr_phantoms, cfg.phantom_size,
                                                                  cfg.mr_validation_phantoms, cfg.mr_phantom_texture),
                                                cfg.mr_phantom_band)
            if "DX" in modalities:
                images += xray_phantom_images(cfg.xray_phantoms, cfg.phantom_size, cfg.xray_validation_phantoms,
                                              cfg.xray_train_saturated_share)
        elif source == "atlas":
            images += atlas_images(cfg.mr_atlas_slices, cfg.mr_atlas_validation_slices)
        elif source == "natural":
            images += natural_images()
        elif source == "natural_ct":
            images += natural_ct_images(cfg.phantom_size)
        elif source == "invesalius":
            images += invesalius_images(cfg.ct_invesalius_slices, cfg.ct_invesalius_upsample)
        elif (dose_dirs := find_dose_dirs(source)) is not None:
            images += paired_images(*dose_dirs, modalities, cfg.min_image_side)
        else:
            images += directory_images(source, modalities, cfg.min_image_side)
    if cfg.paired_low_dir is not None:
        images += paired_images(cfg.paired_low_dir, cfg.paired_full_dir, modalities, cfg.min_image_side)
    screened = (clean_reference(image, cfg.max_reference_noise, cfg.min_image_side, cfg.max_ct_reference_noise_hu)
                for image in images)
    return [image for image in screened if image is not None]


def split_sources(images: list[SourceImage], cfg: DataConfig, split: str = "test") -> tuple[list[SourceImage], list[SourceImage]]:
    """``(training, images of split)`` by the fixed rule of trainer/data/split.py; ``split`` is
    ``"test"`` (the held-out set) or ``"validation"``."""
    if split not in ("test", "validation"):
        raise ValueError(f"split must be 'test' or 'validation', got {split!r}")

    def of(image: SourceImage) -> str:
        return split_of(image.group, cfg.heldout_fraction, cfg.validation_fraction)

    return [i for i in images if of(i) == "train"], [i for i in images if of(i) == split]


def _log_uniform(bounds: tuple[float, float], rng: np.random.Generator) -> float:
    low, high = bounds
    return float(np.exp(rng.uniform(np.log(low), np.log(high)))) if high > low else float(low)


@dataclass
class _Variant:
    """One way an image is degraded: a fixed degraded slice, or noise drawn per patch at a
    level drawn log-uniformly from ``levels`` (CT: dose; MR: sigma; X-ray: quanta)."""

    label: str
    degraded: np.ndarray | None = None  # normalized, fixed; None: drawn per patch
    noise: str | None = None  # per patch: "ct" | "rician" | "gaussian" | "quantum"
    levels: tuple[float, float] = (0.0, 0.0)
    unit_noise: np.ndarray | None = None  # "ct": normalized noise image at full dose (LowDoseCT.unit_noise)
    own_fraction: float = 0.0  # "ct": LowDoseCT.own_variance_fraction
    reference: np.ndarray | None = None  # normalized; None: the pool image's clean slice
    level_table: LevelTable | None = None  # data.noise_map: the whole image's measured level per parameter


@dataclass
class _PoolImage:
    clean: np.ndarray  # normalized float32
    state: NormalizationState
    variants: list[_Variant]
    modality: str = "CT"
    limits: tuple[float, float] | None = None  # normalized detector range (_detector_limits)
    real: bool = False  # from a scan, not a phantom (data.real_image_share)


def _noise_levels(modality: str, cfg: DataConfig) -> tuple[str, list[float], list[float] | None]:
    """(noise kind, evaluation levels, training range) for a non-CT modality."""
    if modality == "MR":
        return cfg.mr_noise, cfg.mr_noise_sigmas, cfg.train_mr_sigma_range
    if cfg.xray_noise == "quantum":
        return "quantum", cfg.xray_photons, cfg.train_xray_photon_range
    return "gaussian", [cfg.xray_noise_sigma], None


def _level_label(modality: str, kind: str, level: float) -> str:
    return f"{modality.lower()}_{kind}_{level:g}"


def _detector_limits(image: SourceImage, state: NormalizationState, cfg: DataConfig) -> tuple[float, float] | None:
    """The normalized range a degraded radiograph is clipped to (``clip_xray_to_detector``), or None."""
    if not cfg.clip_xray_to_detector or _family(image.modality) != "XRAY" or image.detector_range is None:
        return None
    low, high = normalize(np.array(image.detector_range), state)
    return float(low), float(high)


def _draw_noise(
    clean: np.ndarray, state: NormalizationState, kind: str, level: float, rng: np.random.Generator,
    limits: tuple[float, float] | None = None,
) -> np.ndarray:
    """Noise drawn in modality values (Rician needs the true zero), returned normalized;
    ``quantum`` noise is drawn on the normalized image (``level`` = quanta per pixel). The
    result is clipped to the detector's normalized ``limits`` where given."""
    if kind == "quantum":
        noisy = degrade.xray_quantum_noise(clean, level, rng)
    else:
        values = clean.astype(np.float64) * state.scale + state.offset
        draw = degrade.rician_noise if kind == "rician" else degrade.gaussian_noise
        noisy = normalize(draw(values, level * state.scale, rng), state)
    return noisy if limits is None else np.clip(noisy, *limits).astype(np.float32)


def _extra(degraded: np.ndarray, cfg: DataConfig) -> np.ndarray:
    if cfg.blur_sigma > 0:
        degraded = degrade.blur(degraded, cfg.blur_sigma)
    return degrade.downsample(degraded, cfg.downsample_factor) if cfg.downsample_factor > 1 else degraded


def _extra_label(cfg: DataConfig) -> str:
    blurred = f"+blur{cfg.blur_sigma:g}" if cfg.blur_sigma > 0 else ""
    return blurred + (f"+down{cfg.downsample_factor}" if cfg.downsample_factor > 1 else "")


def ct_label(dose: float, kernel: str) -> str:
    """Degradation label of a simulated low-dose CT image, e.g. ``ct_dose_0.25_ramp``."""
    return f"ct_dose_{dose:g}_{kernel}"


def _simulator(image: SourceImage, cfg: DataConfig) -> degrade.LowDoseCT:
    # Phantoms are noiseless by construction; real slices already hold their own scan's noise.
    return degrade.LowDoseCT(
        image.values, image.pixel_mm, cfg.ct_angles, cfg.ct_photons, match_own_noise=image.scanned
    )


def _ct_training_variants(image: SourceImage, state: NormalizationState, cfg: DataConfig) -> list[_Variant]:
    simulator = _simulator(image, cfg)
    seed_parts = ("train", cfg.seed, image.name)
    if cfg.ct_full_dose_reference:  # fixed pairs at the evaluation doses, nested like real pairs
        variants = []
        for dose in cfg.dose_fractions:
            for index in range(cfg.ct_noise_realizations):
                rng = np.random.default_rng(stable_seed(*seed_parts, dose, index))
                full, low = simulator.scan_pair(dose, rng)
                variants.append(_Variant(ct_label(dose, "ramp"), normalize(low, state), reference=normalize(full, state)))
        return variants
    levels = tuple(cfg.train_dose_range) if cfg.train_dose_range else None
    if levels and image.scanned:  # a scan cannot be made quieter than itself: its noise is in the reference
        levels = (min(levels[0], 1.0), min(levels[1], 1.0))
    variants = []
    for kernel in cfg.ct_kernels:
        for index in range(cfg.ct_noise_realizations):
            rng = np.random.default_rng(stable_seed(*seed_parts, kernel, index))
            unit = (simulator.unit_noise(rng, kernel) / state.scale).astype(np.float32)
            for low, high in [levels] if levels else [(d, d) for d in cfg.dose_fractions]:
                label = ct_label(low, kernel) if low == high else f"ct_dose_{low:g}-{high:g}_{kernel}"
                variants.append(_Variant(label, None, "ct", (low, high), unit, simulator.own_variance_fraction))
    return variants


def _pool_image(image: SourceImage, cfg: DataConfig) -> _PoolImage:
    state = fit_normalization(image.values, spec_for(image.modality, cfg))
    clean = normalize(image.values, state)
    if image.low_dose is not None:
        variants = [_Variant(image.low_dose_label or "paired", normalize(image.low_dose, state))]
    elif image.modality == "CT":
        variants = _ct_training_variants(image, state, cfg)
    else:
        kind, levels, train_range = _noise_levels(image.modality, cfg)
        ranges = [tuple(train_range)] if train_range else [(level, level) for level in levels]
        variants = [_Variant(f"{image.modality.lower()}_{kind}", None, kind, bounds) for bounds in ranges]
    limits = _detector_limits(image, state, cfg)
    if cfg.noise_map:
        for variant in variants:
            variant.level_table = _variant_levels(image, variant, clean, state, cfg, limits)
    return _PoolImage(clean, state, variants, image.modality, limits, real=image.scanned)


def _variant_levels(
    image: SourceImage, variant: _Variant, clean: np.ndarray, state: NormalizationState, cfg: DataConfig,
    limits: tuple[float, float] | None = None,
) -> LevelTable:
    """What the runtime measures on the whole image of ``variant`` across its noise parameters
    (trainer/data/noise_levels.py); a fixed degraded image has one parameter, 1. With
    ``data.runtime_normalization`` also the runtime's normalization of that image."""
    spec = spec_for(image.modality, cfg) if cfg.runtime_normalization else None
    if variant.degraded is not None:
        return level_table((1.0, 1.0), lambda _: _extra(variant.degraded, cfg), state, image.modality, spec)
    if variant.noise == "ct":
        def degrade_at(dose: float) -> np.ndarray:
            return _extra(clean + variant.unit_noise * np.float32(degrade.dose_noise_scale(dose, variant.own_fraction)), cfg)
    else:
        rng = np.random.default_rng(stable_seed("noise-map level", image.name, variant.label))

        def degrade_at(level: float) -> np.ndarray:
            return _extra(_draw_noise(clean, state, variant.noise, level, rng, limits), cfg)
    return level_table(variant.levels, degrade_at, state, image.modality, spec)


def _reflect_crop(image: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
    """``size`` x ``size`` window at (top, left), mirrored where it leaves the image."""

    def indices(start: int, length: int) -> np.ndarray:
        idx = np.abs(np.arange(start, start + size))
        idx = np.where(idx >= length, 2 * (length - 1) - idx, idx)
        return np.clip(idx, 0, length - 1)

    return image[np.ix_(indices(top, image.shape[0]), indices(left, image.shape[1]))]


def _family(modality: str) -> str:
    """CR and DX are one family (radiographs): a weight for either covers both."""
    return "XRAY" if modality in ("CR", "DX") else modality


def _image_probabilities(
    images: list[_PoolImage], weights: dict[str, float] | None, real_share: float | None = None,
) -> np.ndarray | None:
    """Per-image sampling probabilities: each modality gets its weight (None: its share of the
    images), split evenly among its images or, with ``real_share``, that share of it among its
    real images and the rest among its phantoms where it has both. None when both are None."""
    if weights is None and real_share is None:
        return None
    families = [_family(image.modality) for image in images]
    if weights is None:
        family_weight = {family: float(n) for family, n in Counter(families).items()}
    else:
        family_weight = {}
        for modality, weight in weights.items():
            family_weight[_family(modality)] = max(family_weight.get(_family(modality), 0.0), weight)
    groups = Counter((family, image.real) for family, image in zip(families, images))
    probabilities = np.zeros(len(images))
    for index, (family, image) in enumerate(zip(families, images)):
        weight = family_weight.get(family, 0.0)
        if real_share is not None and groups[(family, True)] and groups[(family, False)]:
            probabilities[index] = weight * (real_share if image.real else 1.0 - real_share) / groups[(family, image.real)]
        else:
            probabilities[index] = weight / (groups[(family, True)] + groups[(family, False)])
    if probabilities.sum() <= 0:
        modalities = dict(Counter(image.modality for image in images))
        raise ValueError(f"modality_weights {weights} give no weight to any training image ({modalities})")
    return probabilities / probabilities.sum()


class SeededPatches(Dataset):
    """``patches_per_epoch`` random training items. Item ``i`` is drawn with a numpy Generator
    seeded by ``(seed, epoch, i)``, so DataLoader workers and reruns give the same patches; call
    :meth:`set_epoch` for fresh ones. Images are drawn with their modality's weight."""

    def __init__(self, images: list, cfg: DataConfig) -> None:
        if not images:
            raise ValueError("no training images (check sources, modalities and min_image_side)")
        self.images, self.cfg, self.epoch = images, cfg, 0
        self.image_probabilities = _image_probabilities(images, cfg.modality_weights, cfg.real_image_share)

    def set_epoch(self, epoch: int) -> None:
        """Draw a different (still reproducible) set of patches."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.cfg.patches_per_epoch

    def draw(self, index: int) -> tuple[np.random.Generator, object]:
        """Item ``index``'s generator and the image it is cut from."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        rng = np.random.default_rng([self.cfg.seed, self.epoch, index])
        if self.image_probabilities is None:
            return rng, self.images[rng.integers(len(self.images))]
        return rng, self.images[rng.choice(len(self.images), p=self.image_probabilities)]


class PatchDataset(SeededPatches):
    """``patches_per_epoch`` random ``(degraded, clean)`` patch pairs, float32 ``[1, p, p]``
    (:class:`SeededPatches`)."""

    def __init__(self, images: list[_PoolImage], cfg: DataConfig) -> None:
        super().__init__(images, cfg)
        self.settings = AugmentSettings(
            cfg.rotation_degrees,
            cfg.elastic_prob,
            cfg.elastic_alpha,
            cfg.elastic_sigma,
            cfg.noise_aug_prob,
            tuple(cfg.noise_aug_sigma),
        )
        self.margin = crop_margin(cfg.patch_size, self.settings) if cfg.augment else 0

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng, pool = self.draw(index)
        variant = pool.variants[rng.integers(len(pool.variants))]
        p, m = self.cfg.patch_size, self.margin
        rows, cols = pool.clean.shape
        top, left = rng.integers(0, max(rows - p, 0) + 1) - m, rng.integers(0, max(cols - p, 0) + 1) - m
        reference = pool.clean if variant.reference is None else variant.reference
        clean = _reflect_crop(reference, top, left, p + 2 * m)
        parameter = 1.0  # a fixed degraded image's; else the dose, sigma or quanta drawn
        if variant.degraded is not None:
            degraded = _reflect_crop(variant.degraded, top, left, p + 2 * m)
        elif variant.noise == "ct":
            parameter = _log_uniform(variant.levels, rng)
            unit = _reflect_crop(variant.unit_noise, top, left, p + 2 * m)
            degraded = clean + unit * np.float32(degrade.dose_noise_scale(parameter, variant.own_fraction))
        else:
            parameter = _log_uniform(variant.levels, rng)
            degraded = _draw_noise(clean, pool.state, variant.noise, parameter, rng, pool.limits)
        degraded = _extra(degraded, self.cfg)
        affine = variant.level_table.affine_at(parameter) if variant.level_table is not None else None
        if affine is not None:  # data.runtime_normalization: as the runtime normalizes this image
            gain, offset = np.float32(affine[0]), np.float32(affine[1])
            degraded, clean = gain * degraded + offset, gain * clean + offset
        if self.cfg.augment:
            degraded, clean = augment_pair(degraded, clean, p, self.settings, rng)
        else:
            degraded, clean = center_crop(degraded, p), center_crop(clean, p)
        level = variant.level_table.at(parameter) if variant.level_table is not None else None
        if level is not None and self.cfg.noise_map_jitter > 0:  # no draw when off: existing configs' patches stay
            spread = np.log1p(self.cfg.noise_map_jitter)
            level *= float(np.exp(rng.uniform(-spread, spread)))
        return (
            torch.from_numpy(model_input(degraded, level)),
            torch.from_numpy(np.ascontiguousarray(clean, dtype=np.float32))[None],
        )


def model_input(degraded: np.ndarray, level: float | None = None) -> np.ndarray:
    """A degraded ``(H, W)`` slice as the model's float32 input: ``[1, H, W]``, or with a noise
    ``level`` ``[2, H, W]`` (the image and a constant map of the level, model contract ``noise_map``)."""
    image = np.array(degraded, dtype=np.float32)[None, None]  # a copy: held-out slices are read-only
    return add_noise_map(image, level)[0]


def heldout_noise_level(image: "HeldoutImage") -> float:
    """The noise level the runtime would give a noise-map model for a validation/test slice."""
    if image.state is None:
        raise ValueError(f"{image.name}: no normalization state, cannot measure its noise level")
    return normalized_noise_level(image.degraded[None], [image.state], image.modality)


def build_training_set(cfg: DataConfig) -> Dataset:
    """The training patches (never from a held-out image); CT noise is precomputed here.
    Task "sr2": (low-resolution, high-resolution) pairs (trainer/data/super_resolution.py)."""
    if cfg.task == "sr2":
        from trainer.data.super_resolution import build_sr_training_set  # noqa: PLC0415 (imports this module)

        return build_sr_training_set(cfg)
    training, _ = split_sources(load_sources(cfg), cfg)
    usable = [image for image in training if min(image.values.shape) >= cfg.patch_size]
    return PatchDataset([_pool_image(image, cfg) for image in usable], cfg)


@dataclass
class HeldoutImage:
    """One validation or test full slice, normalized, with its degraded version."""

    name: str
    modality: str
    degraded: np.ndarray  # float32 (H, W), normalized
    clean: np.ndarray  # float32 (H, W), normalized
    spec: NormalizationSpec
    degradation: str  # e.g. "ct_dose_0.25_ramp", "mr_rician_0.03", "ct_paired_quarter_dose"
    level: float = float("nan")  # CT dose fraction, MR sigma, X-ray quanta (NaN: paired)
    kernel: str | None = None  # CT reconstruction kernel
    # True noise standard deviation, normalized units, where it is measured (CT: soft tissue):
    # the RMS of degraded - clean, i.e. the noise that separates the input from its reference
    # (a real slice's own noise is in both). What an oracle classical filter is given.
    noise_sigma: float = float("nan")
    state: NormalizationState | None = None  # the affine map of ``clean`` (to modality values)


def crop_to(values: np.ndarray, side: int) -> np.ndarray:
    """The centered crop of at most ``side`` pixels per side (how evaluation slices are cut)."""
    top, left = max(0, (values.shape[0] - side) // 2), max(0, (values.shape[1] - side) // 2)
    return values[top : top + side, left : left + side]


def _true_sigma(degraded: np.ndarray, clean: np.ndarray, mask: np.ndarray | None) -> float:
    """RMS of ``degraded - clean`` over ``mask`` (all pixels when None or too small)."""
    difference = np.asarray(degraded, dtype=np.float64) - clean
    inside = difference[mask] if mask is not None and mask.sum() >= 100 else difference
    return float(np.sqrt(np.mean(inside**2)))


def _eval_pairs(image: SourceImage, cfg: DataConfig) -> list[HeldoutImage]:
    spec = spec_for(image.modality, cfg)
    cropped = crop_to(image.values, cfg.heldout_max_side)
    state = fit_normalization(cropped, spec)
    clean = normalize(cropped, state)
    # (label, degraded, level, kernel, true sigma in normalized units)
    variants: list[tuple[str, np.ndarray, float, str | None, float]] = []
    if image.low_dose is not None:
        low_dose = normalize(crop_to(image.low_dose, cfg.heldout_max_side), state)
        variants.append((image.low_dose_label or "paired", low_dose, float("nan"), None, float("nan")))
    elif image.modality == "CT":
        crop = SourceImage(image.name, "CT", cropped, image.pixel_mm, image.group, image.source)
        simulator = _simulator(crop, cfg)
        mask = degrade.soft_tissue_mask(cropped)
        for dose in cfg.dose_fractions:
            for kernel in cfg.eval_kernels:
                rng = np.random.default_rng(stable_seed("heldout", image.name, dose, kernel))
                degraded = normalize(simulator.degrade(dose, rng, kernel), state)
                sigma = _true_sigma(degraded, clean, mask)
                variants.append((ct_label(dose, kernel), degraded, dose, kernel, sigma))
    else:
        kind, levels, _ = _noise_levels(image.modality, cfg)
        limits = _detector_limits(image, state, cfg)
        for level in levels:
            label = _level_label(image.modality, kind, level)
            rng = np.random.default_rng(stable_seed("heldout", image.name, label))
            degraded = _draw_noise(clean, state, kind, level, rng, limits)
            variants.append((label, degraded, level, None, _true_sigma(degraded, clean, None)))
    pairs = []
    for label, degraded, level, kernel, sigma in variants:
        degraded = np.ascontiguousarray(_extra(degraded, cfg), dtype=np.float32)
        degraded.setflags(write=False)
        pairs.append(HeldoutImage(image.name, image.modality, degraded, clean, spec, label + _extra_label(cfg),
                                  level, kernel, sigma, state))
    clean.setflags(write=False)
    return pairs


@lru_cache(maxsize=4)
def _eval_cached(key: str, split: str) -> tuple[HeldoutImage, ...]:
    cfg = DataConfig.from_dict(json.loads(key))
    _, chosen = split_sources(load_sources(cfg, test_only=split == "test"), cfg, split)
    pairs_of = _eval_pairs
    if cfg.task == "sr2":
        from trainer.data.super_resolution import eval_pairs as pairs_of  # noqa: PLC0415 (imports this module)
    return tuple(pair for image in chosen for pair in pairs_of(image, cfg))


def build_heldout_set(cfg: DataConfig, split: str = "test") -> list[HeldoutImage]:
    """The fixed ``"test"`` (default) or ``"validation"`` slices at every evaluation level
    (CT doses x kernels, MR sigmas, X-ray quanta), degraded once with seeds from their names
    (cached in memory). Task "sr2": the low-resolution / high-resolution pairs instead
    (``trainer.data.super_resolution.eval_pairs``)."""
    return list(_eval_cached(cfg.key(), split))


def _named(image: SourceImage) -> bool:
    return image.source in PACKAGED_SOURCES


def data_summary(cfg: DataConfig) -> dict:
    """Plain-JSON description of the data a model was trained and evaluated on."""
    images = load_sources(cfg)
    training, heldout = split_sources(images, cfg)
    _, validation = split_sources(images, cfg, "validation")
    training = [image for image in training if min(image.values.shape) >= cfg.patch_size]

    def describe(images: list[SourceImage]) -> dict:
        return {
            "images": len(images),
            "by_source": dict(sorted(Counter(i.source for i in images).items())),
            "by_modality": dict(sorted(Counter(i.modality for i in images).items())),
            "names": [i.name for i in images if _named(i)],
        }

    return {
        "task": cfg.task,
        "seed": cfg.seed,
        "sources": [s if s in PACKAGED_SOURCES else f"dir:{Path(s).name}" for s in cfg.sources]
        + (["paired"] if cfg.paired_low_dir else []),
        "modalities": list(cfg.modalities),
        "training": describe(training),
        "validation": describe(validation),
        "heldout": describe(heldout),
        "split": {"rule": "v = sha256(salt/group); test v < heldout_fraction; validation below "
                  "heldout_fraction + validation_fraction; phantoms, atlas slices, photographs and the InVesalius volume by name", "salt": SPLIT_SALT,
                  "fraction": cfg.heldout_fraction, "validation_fraction": cfg.validation_fraction},
        "degradation": {
            "ct": {"dose_fractions": list(cfg.dose_fractions), "train_dose_range": cfg.train_dose_range,
                   "kernels": list(cfg.ct_kernels), "eval_kernels": cfg.eval_kernels, "angles": cfg.ct_angles,
                   "photons": cfg.ct_photons, "full_dose_reference": cfg.ct_full_dose_reference},
            "mr": {"noise": cfg.mr_noise, "sigmas": list(cfg.mr_noise_sigmas),
                   "train_sigma_range": cfg.train_mr_sigma_range, "phantom_band": cfg.mr_phantom_band},
            "xray": {"noise": cfg.xray_noise, "sigma": cfg.xray_noise_sigma, "photons": list(cfg.xray_photons),
                     "train_photon_range": cfg.train_xray_photon_range},
            "extra": _extra_label(cfg) or None,
            **({"sr2": {"mr": f"k-space truncation to half the matrix ({cfg.sr_mr_kspace.upper()})",
                        "ct_xray": "gaussian blur then 2x2 area mean",
                        "blur_sigma": cfg.sr_blur_sigma, "noise_range": cfg.sr_noise_range}}
               if cfg.task == "sr2" else {}),
        },
        "normalization": normalization_table(cfg),
        "patch_size": cfg.patch_size,
    }
