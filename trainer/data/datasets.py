"""The training set (random paired patches) and the fixed held-out set (full slices).

Images are normalized with the runtime's image contract (CT: hu_linear, others: percentile
fitted on the clean slice and applied to both images of a pair).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

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
from trainer.data.pairing import find_dose_dirs
from trainer.data.sources import SourceImage, directory_images, offline_images, paired_images, phantom_images
from trainer.data.split import SPLIT_SALT, is_heldout, stable_seed


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


def load_sources(cfg: DataConfig) -> list[SourceImage]:
    """Every clean source image the config names (training and held-out together)."""
    modalities, images = tuple(cfg.modalities), []
    for source in cfg.sources:
        if source == "offline":
            images += offline_images(modalities, cfg.min_image_side)
        elif source == "phantom":
            if "CT" in modalities:
                images += phantom_images(cfg.phantom_count, cfg.phantom_size, cfg.heldout_phantoms)
        elif (dose_dirs := find_dose_dirs(source)) is not None:
            images += paired_images(*dose_dirs, modalities, cfg.min_image_side)
        else:
            images += directory_images(source, modalities, cfg.min_image_side)
    if cfg.paired_low_dir is not None:
        images += paired_images(cfg.paired_low_dir, cfg.paired_full_dir, modalities, cfg.min_image_side)
    return images


def split_sources(images: list[SourceImage], cfg: DataConfig) -> tuple[list[SourceImage], list[SourceImage]]:
    """``(training, heldout)`` by the fixed rule of trainer/data/split.py."""
    heldout = [image for image in images if is_heldout(image.group, cfg.heldout_fraction)]
    training = [image for image in images if not is_heldout(image.group, cfg.heldout_fraction)]
    return training, heldout


@dataclass
class _Variant:
    """One way an image is degraded: a fixed degraded slice, or noise drawn per patch."""

    label: str
    degraded: np.ndarray | None  # normalized, or None for on-the-fly noise
    noise: str | None = None  # "rician" | "gaussian"
    sigma: float = 0.0  # normalized units
    reference: np.ndarray | None = None  # normalized; None: the pool image's clean slice


@dataclass
class _PoolImage:
    clean: np.ndarray  # normalized float32
    state: NormalizationState
    variants: list[_Variant]


def _noise_kind(modality: str, cfg: DataConfig) -> tuple[str, float]:
    return (cfg.mr_noise, cfg.mr_noise_sigma) if modality == "MR" else ("gaussian", cfg.xray_noise_sigma)


def _draw_noise(
    clean: np.ndarray, state: NormalizationState, kind: str, sigma: float, rng: np.random.Generator
) -> np.ndarray:
    """Noise drawn in modality values (Rician needs the true zero), returned normalized."""
    values = clean.astype(np.float64) * state.scale + state.offset
    draw = degrade.rician_noise if kind == "rician" else degrade.gaussian_noise
    noisy = draw(values, sigma * state.scale, rng)
    return normalize(noisy, state)


def _extra(degraded: np.ndarray, cfg: DataConfig) -> np.ndarray:
    if cfg.blur_sigma > 0:
        degraded = degrade.blur(degraded, cfg.blur_sigma)
    return degrade.downsample(degraded, cfg.downsample_factor) if cfg.downsample_factor > 1 else degraded


def _extra_label(cfg: DataConfig) -> str:
    blurred = f"+blur{cfg.blur_sigma:g}" if cfg.blur_sigma > 0 else ""
    return blurred + (f"+down{cfg.downsample_factor}" if cfg.downsample_factor > 1 else "")


def _ct_variants(
    image: SourceImage,
    state: NormalizationState,
    cfg: DataConfig,
    realizations: int,
    seed_parts: tuple,
    full_dose_reference: bool = False,
) -> list[_Variant]:
    # Phantoms are noiseless by construction; real slices already hold their own scan's noise.
    simulator = degrade.LowDoseCT(
        image.values, image.pixel_mm, cfg.ct_angles, cfg.ct_photons, match_own_noise=image.source != "phantom"
    )
    variants = []
    for dose in cfg.dose_fractions:
        for index in range(realizations):
            rng = np.random.default_rng(stable_seed(*seed_parts, image.name, dose, index))
            if full_dose_reference:
                full, low = simulator.scan_pair(dose, rng)
                variants.append(_Variant(f"ct_dose_{dose:g}", normalize(low, state), reference=normalize(full, state)))
            else:
                variants.append(_Variant(f"ct_dose_{dose:g}", normalize(simulator.degrade(dose, rng), state)))
    return variants


def _pool_image(image: SourceImage, cfg: DataConfig) -> _PoolImage:
    state = fit_normalization(image.values, spec_for(image.modality, cfg))
    clean = normalize(image.values, state)
    if image.low_dose is not None:
        variants = [_Variant(image.low_dose_label or "paired", normalize(image.low_dose, state))]
    elif image.modality == "CT":
        variants = _ct_variants(
            image, state, cfg, cfg.ct_noise_realizations, ("train", cfg.seed), cfg.ct_full_dose_reference
        )
    else:
        kind, sigma = _noise_kind(image.modality, cfg)
        variants = [_Variant(f"{image.modality.lower()}_{kind}_{sigma:g}", None, kind, sigma)]
    return _PoolImage(clean, state, variants)


def _reflect_crop(image: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
    """``size`` x ``size`` window at (top, left), mirrored where it leaves the image."""

    def indices(start: int, length: int) -> np.ndarray:
        idx = np.abs(np.arange(start, start + size))
        idx = np.where(idx >= length, 2 * (length - 1) - idx, idx)
        return np.clip(idx, 0, length - 1)

    return image[np.ix_(indices(top, image.shape[0]), indices(left, image.shape[1]))]


class PatchDataset(Dataset):
    """``patches_per_epoch`` random ``(degraded, clean)`` patch pairs, float32 ``[1, p, p]``.

    Item ``i`` is drawn with a numpy Generator seeded by ``(seed, epoch, i)``, so DataLoader
    workers and reruns give the same patches; call :meth:`set_epoch` for fresh ones.
    """

    def __init__(self, images: list[_PoolImage], cfg: DataConfig) -> None:
        if not images:
            raise ValueError("no training images (check sources, modalities and min_image_side)")
        self.images, self.cfg, self.epoch = images, cfg, 0
        self.settings = AugmentSettings(
            cfg.rotation_degrees,
            cfg.elastic_prob,
            cfg.elastic_alpha,
            cfg.elastic_sigma,
            cfg.noise_aug_prob,
            tuple(cfg.noise_aug_sigma),
        )
        self.margin = crop_margin(cfg.patch_size, self.settings) if cfg.augment else 0

    def set_epoch(self, epoch: int) -> None:
        """Draw a different (still reproducible) set of patches."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.cfg.patches_per_epoch

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        rng = np.random.default_rng([self.cfg.seed, self.epoch, index])
        pool = self.images[rng.integers(len(self.images))]
        variant = pool.variants[rng.integers(len(pool.variants))]
        p, m = self.cfg.patch_size, self.margin
        rows, cols = pool.clean.shape
        top, left = rng.integers(0, max(rows - p, 0) + 1) - m, rng.integers(0, max(cols - p, 0) + 1) - m
        reference = pool.clean if variant.reference is None else variant.reference
        clean = _reflect_crop(reference, top, left, p + 2 * m)
        if variant.degraded is not None:
            degraded = _reflect_crop(variant.degraded, top, left, p + 2 * m)
        else:
            degraded = _draw_noise(clean, pool.state, variant.noise, variant.sigma, rng)
        degraded = _extra(degraded, self.cfg)
        if self.cfg.augment:
            degraded, clean = augment_pair(degraded, clean, p, self.settings, rng)
        else:
            degraded, clean = center_crop(degraded, p), center_crop(clean, p)
        return (
            torch.from_numpy(np.ascontiguousarray(degraded, dtype=np.float32))[None],
            torch.from_numpy(np.ascontiguousarray(clean, dtype=np.float32))[None],
        )


def build_training_set(cfg: DataConfig) -> PatchDataset:
    """The training patches (never from a held-out image); CT noise is precomputed here."""
    training, _ = split_sources(load_sources(cfg), cfg)
    usable = [image for image in training if min(image.values.shape) >= cfg.patch_size]
    return PatchDataset([_pool_image(image, cfg) for image in usable], cfg)


@dataclass
class HeldoutImage:
    """One held-out full slice, normalized, with its degraded version."""

    name: str
    modality: str
    degraded: np.ndarray  # float32 (H, W), normalized
    clean: np.ndarray  # float32 (H, W), normalized
    spec: NormalizationSpec
    degradation: str  # e.g. "ct_dose_0.25", "mr_rician_0.03", "ct_paired_quarter_dose"


def _crop_to(values: np.ndarray, side: int) -> np.ndarray:
    top, left = max(0, (values.shape[0] - side) // 2), max(0, (values.shape[1] - side) // 2)
    return values[top : top + side, left : left + side]


def _heldout_pairs(image: SourceImage, cfg: DataConfig) -> list[HeldoutImage]:
    spec = spec_for(image.modality, cfg)
    cropped = _crop_to(image.values, cfg.heldout_max_side)
    state = fit_normalization(cropped, spec)
    clean = normalize(cropped, state)
    if image.low_dose is not None:
        low_dose = normalize(_crop_to(image.low_dose, cfg.heldout_max_side), state)
        variants = [(image.low_dose_label or "paired", low_dose)]
    elif image.modality == "CT":
        crop = SourceImage(image.name, "CT", cropped, image.pixel_mm, image.group, image.source)
        variants = [(v.label, v.degraded) for v in _ct_variants(crop, state, cfg, 1, ("heldout",))]
    else:
        kind, sigma = _noise_kind(image.modality, cfg)
        label = f"{image.modality.lower()}_{kind}_{sigma:g}"
        rng = np.random.default_rng(stable_seed("heldout", image.name, label))
        variants = [(label, _draw_noise(clean, state, kind, sigma, rng))]
    pairs = []
    for label, degraded in variants:
        degraded = np.ascontiguousarray(_extra(degraded, cfg), dtype=np.float32)
        degraded.setflags(write=False)
        pairs.append(HeldoutImage(image.name, image.modality, degraded, clean, spec, label + _extra_label(cfg)))
    clean.setflags(write=False)
    return pairs


@lru_cache(maxsize=4)
def _heldout_cached(key: str) -> tuple[HeldoutImage, ...]:
    cfg = DataConfig.from_dict(json.loads(key))
    _, heldout = split_sources(load_sources(cfg), cfg)
    return tuple(pair for image in heldout for pair in _heldout_pairs(image, cfg))


def build_heldout_set(cfg: DataConfig) -> list[HeldoutImage]:
    """The fixed held-out slices, degraded once with seeds from their names (cached in memory)."""
    return list(_heldout_cached(cfg.key()))


def _named(image: SourceImage) -> bool:
    # User folders' paths may carry patient IDs; only packaged and synthetic images are named.
    return image.source in ("offline", "phantom")


def data_summary(cfg: DataConfig) -> dict:
    """Plain-JSON description of the data a model was trained and evaluated on."""
    training, heldout = split_sources(load_sources(cfg), cfg)
    training = [image for image in training if min(image.values.shape) >= cfg.patch_size]

    def describe(images: list[SourceImage]) -> dict:
        return {
            "images": len(images),
            "by_source": dict(sorted(Counter(i.source for i in images).items())),
            "by_modality": dict(sorted(Counter(i.modality for i in images).items())),
            "names": [i.name for i in images if _named(i)],
        }

    return {
        "seed": cfg.seed,
        "sources": [s if s in ("offline", "phantom") else f"dir:{Path(s).name}" for s in cfg.sources]
        + (["paired"] if cfg.paired_low_dir else []),
        "modalities": list(cfg.modalities),
        "training": describe(training),
        "heldout": describe(heldout),
        "split": {"rule": "sha256(salt/group) < fraction", "salt": SPLIT_SALT, "fraction": cfg.heldout_fraction},
        "degradation": {
            "ct": {"dose_fractions": list(cfg.dose_fractions), "angles": cfg.ct_angles, "photons": cfg.ct_photons,
                   "full_dose_reference": cfg.ct_full_dose_reference},
            "mr": {"noise": cfg.mr_noise, "sigma": cfg.mr_noise_sigma},
            "xray": {"noise": "gaussian", "sigma": cfg.xray_noise_sigma},
            "extra": _extra_label(cfg) or None,
        },
        "normalization": normalization_table(cfg),
        "patch_size": cfg.patch_size,
    }
