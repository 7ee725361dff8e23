"""Paired augmentations: the same geometry for both images, extra noise on the input only."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class AugmentSettings:
    """The seed's augmentations: rotation, elastic deformation, Gaussian noise, flips."""

    rotation_degrees: float = 15.0
    elastic_prob: float = 0.3
    elastic_alpha: float = 8.0
    elastic_sigma: float = 6.0
    noise_prob: float = 0.5
    noise_sigma: tuple[float, float] = (0.01, 0.05)


def crop_margin(patch_size: int, settings: AugmentSettings) -> int:
    """Extra border to crop around a patch so rotation/elastic warps never sample outside."""
    rotation = np.deg2rad(settings.rotation_degrees)
    grow = patch_size * (abs(np.cos(rotation)) + abs(np.sin(rotation)) - 1.0) / 2.0
    return int(np.ceil(grow + settings.elastic_alpha)) + 1


def _warp(images: list[np.ndarray], coords: np.ndarray) -> list[np.ndarray]:
    return [ndimage.map_coordinates(img, coords, order=1, mode="reflect").astype(np.float32) for img in images]


def augment_pair(
    degraded: np.ndarray, clean: np.ndarray, patch_size: int, settings: AugmentSettings, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Augment a pair cropped with :func:`crop_margin` and return the central ``patch_size`` patch.

    Rotation (uniform in ±rotation_degrees) and an optional elastic field are applied as one
    coordinate map to both images, then flips; Gaussian noise is added to the degraded input.
    """
    size = degraded.shape[0]
    center = (size - 1) / 2.0
    grid = np.mgrid[:patch_size, :patch_size].astype(np.float64) - (patch_size - 1) / 2.0
    angle = np.deg2rad(rng.uniform(-settings.rotation_degrees, settings.rotation_degrees))
    cos, sin = np.cos(angle), np.sin(angle)
    rows = cos * grid[0] - sin * grid[1] + center
    cols = sin * grid[0] + cos * grid[1] + center
    if rng.random() < settings.elastic_prob:
        shape = (patch_size, patch_size)
        for axis in (rows, cols):
            field = ndimage.gaussian_filter(rng.uniform(-1.0, 1.0, shape), settings.elastic_sigma)
            field *= settings.elastic_alpha / max(float(np.abs(field).max()), 1e-6)
            axis += field
    degraded, clean = _warp([degraded, clean], np.stack([rows, cols]))
    if rng.random() < 0.5:
        degraded, clean = degraded[:, ::-1], clean[:, ::-1]
    if rng.random() < 0.5:
        degraded, clean = degraded[::-1, :], clean[::-1, :]
    if rng.random() < settings.noise_prob:
        sigma = rng.uniform(*settings.noise_sigma)
        degraded = degraded + rng.normal(0.0, sigma, degraded.shape).astype(np.float32)
    return np.ascontiguousarray(degraded), np.ascontiguousarray(clean)


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The central ``size`` x ``size`` patch of ``image``."""
    top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
    return image[top : top + size, left : left + size]
