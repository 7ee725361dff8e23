"""Synthetic phantoms: CT in HU (random ellipse/texture bodies, Shepp-Logan), their MR-like
contrasts, and radiographs of random ellipsoids."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.data import shepp_logan_phantom
from skimage.draw import ellipse
from skimage.transform import resize

AIR_HU = -1000.0
PHANTOM_FOV_MM = 350.0  # a body field of view; pixel size is this over the phantom side
# Random phantoms draw their field of view from this range: a child's to a large adult's
# body. With the matrix fixed, a larger body has larger pixels and longer, more attenuating
# paths, which changes the simulated noise level and texture.
PHANTOM_FOV_RANGE_MM = (250.0, 450.0)


def phantom_pixel_mm(size: int, fov_mm: float = PHANTOM_FOV_MM) -> float:
    """Pixel size of a phantom of ``size`` pixels over ``fov_mm``, in mm."""
    return fov_mm / size


def random_fov_mm(rng: np.random.Generator) -> float:
    """A body field of view (mm) from PHANTOM_FOV_RANGE_MM."""
    return float(rng.uniform(*PHANTOM_FOV_RANGE_MM))


def _fill(image: np.ndarray, rng: np.random.Generator, center, radii, value: float, inside=None) -> None:
    angle = rng.uniform(-np.pi, np.pi)
    rows, cols = ellipse(center[0], center[1], radii[0], radii[1], shape=image.shape, rotation=angle)
    if inside is not None:
        keep = inside[rows, cols]
        rows, cols = rows[keep], cols[keep]
    image[rows, cols] = value


def random_phantom(size: int, rng: np.random.Generator) -> np.ndarray:
    """A random body-like phantom in HU, float32 ``(size, size)``.

    Air outside (-1000), a fat layer (~-100), soft-tissue organs (20-60), low-contrast lesions
    (5-20 HU from their organ), lungs (-850..-750) with vessels, bones (400-1500), small bright
    vessels and calcifications (150-600), and a smooth tissue texture of a few HU.
    """
    image = np.full((size, size), AIR_HU, dtype=np.float32)
    c = size / 2.0
    body_radii = (size * rng.uniform(0.30, 0.42), size * rng.uniform(0.38, 0.47))
    _fill(image, rng, (c, c), body_radii, rng.uniform(-120, -80))  # fat
    body = image > AIR_HU
    inner = (body_radii[0] * rng.uniform(0.85, 0.93), body_radii[1] * rng.uniform(0.85, 0.93))
    _fill(image, rng, (c, c), inner, rng.uniform(30, 50), body)  # muscle/soft tissue
    soft = image > -50
    for _ in range(rng.integers(0, 3)):  # lungs
        center = (c + rng.uniform(-0.2, 0.2) * size, c + rng.choice([-1, 1]) * rng.uniform(0.1, 0.2) * size)
        radii = (size * rng.uniform(0.08, 0.18), size * rng.uniform(0.06, 0.12))
        _fill(image, rng, center, radii, rng.uniform(-850, -750), soft)
    for _ in range(rng.integers(2, 7)):  # organs and lesions
        center = c + rng.uniform(-0.25, 0.25, size=2) * size
        _fill(image, rng, center, size * rng.uniform(0.02, 0.12, size=2), rng.uniform(20, 60), soft)
    for _ in range(rng.integers(0, 4)):  # low-contrast lesions: what low-dose noise hides first
        center = c + rng.uniform(-0.25, 0.25, size=2) * size
        base = float(image[int(center[0]), int(center[1])])
        if -50 < base < 100:
            _fill(image, rng, center, size * rng.uniform(0.01, 0.04, size=2), base + rng.choice([-1, 1]) * rng.uniform(5, 20), soft)
    lungs = (image > -900) & (image < -700)
    for _ in range(rng.integers(0, 12)):  # vessels (in the lungs too) and calcifications
        center = c + rng.uniform(-0.35, 0.35, size=2) * size
        _fill(image, rng, center, size * rng.uniform(0.003, 0.012, size=2), rng.uniform(150, 600), soft | lungs)
    for _ in range(rng.integers(1, 5)):  # bones
        center = c + rng.uniform(-0.3, 0.3, size=2) * size
        _fill(image, rng, center, size * rng.uniform(0.015, 0.06, size=2), rng.uniform(400, 1500), soft)
    texture = ndimage.gaussian_filter(rng.normal(0.0, 1.0, size=(size, size)), sigma=size / 64.0)
    texture *= rng.uniform(3.0, 10.0) / max(float(texture.std()), 1e-6)
    tissue = (image > -200) & (image < 200)
    image[tissue] += texture[tissue].astype(np.float32)
    return image


def shepp_logan_hu(size: int) -> np.ndarray:
    """``skimage.data.shepp_logan_phantom`` resized to ``size`` and mapped to HU.

    Its grey levels map to air (0 outside the head), CSF (0 inside, 10 HU), soft tissue
    (0.1-0.4 -> 20-60 HU) and skull (1.0 -> 1000 HU).
    """
    grey = resize(shepp_logan_phantom(), (size, size), order=1, anti_aliasing=True)
    hu = np.interp(grey, [0.0, 0.05, 0.1, 0.4, 1.0], [AIR_HU, -100.0, 20.0, 60.0, 1000.0])
    head = ndimage.binary_fill_holes(grey > 0.05)
    hu[head & (grey <= 0.05)] = 10.0
    return hu.astype(np.float32)


# HU knots of the MR contrast map: air, lung, fat, water, soft tissue, vessel, bone, dense bone.
_MR_KNOTS_HU = [-1000.0, -800.0, -100.0, 0.0, 50.0, 300.0, 700.0, 1500.0]


def mr_contrast(hu: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random MR-like contrast of a CT phantom: a piecewise-linear map of its HU onto signal
    0-1000 (air and lung dark, each tissue class its own random brightness, bone dark or
    mid-grey as in T1/T2/PD images), float32. Noiseless, so a clean MR training reference."""
    tissue = rng.uniform(150.0, 1000.0, size=4)  # fat, water, soft tissue, vessel
    bone = rng.uniform(20.0, 300.0, size=2)
    levels = [0.0, rng.uniform(0.0, 40.0), *tissue, *bone]
    return np.interp(hu, _MR_KNOTS_HU, levels).astype(np.float32)


# Texture scales (Gaussian sigma, pixels): from a pixel-scale grain to small structures.
_TEXTURE_SIGMAS_PX = (0.7, 1.4, 2.8)


def tissue_texture(shape: tuple[int, int], rng: np.random.Generator, max_rms: float) -> np.ndarray:
    """A multiplicative tissue texture, float32 around 1: a random mix of band-limited Gaussian
    fields at ``_TEXTURE_SIGMAS_PX``, relative RMS drawn uniformly in [0, ``max_rms``].

    Real tissue is not piecewise constant: MR shows fine structure (vessels, sulci, grain) at the
    amplitude of low noise. Every field is smoothed over at least 0.7 pixels, so it is spatially
    correlated and stays distinguishable from white (Rician) noise."""
    field_sum = np.zeros(shape, dtype=np.float64)
    for sigma, weight in zip(_TEXTURE_SIGMAS_PX, rng.uniform(0.2, 1.0, size=len(_TEXTURE_SIGMAS_PX))):
        band = ndimage.gaussian_filter(rng.normal(0.0, 1.0, size=shape), sigma=sigma)
        field_sum += weight * band / max(float(band.std()), 1e-12)
    field_sum *= rng.uniform(0.0, max_rms) / max(float(field_sum.std()), 1e-12)
    return (1.0 + field_sum).astype(np.float32)


RADIOGRAPH_FIELD_MM = 400.0  # the detector field a radiograph phantom spans; pixel size is this over its side
# Linear attenuation at ~60 keV (1/mm): soft tissue, and what lung and bone add to it.
_MU_SOFT, _MU_LUNG_DELTA, _MU_BONE_DELTA = 0.020, -0.016, 0.030


def _ellipsoid_chords(shape: tuple[int, int], center, radii, depth: float, angle: float) -> np.ndarray:
    """Path length through an ellipsoid (in-plane ``radii`` rotated by ``angle``, half-depth
    ``depth``) along the beam, at every detector pixel: 2 d sqrt(1 - u^2 - v^2)."""
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    dy, dx = rows - center[0], cols - center[1]
    u = (dy * np.cos(angle) + dx * np.sin(angle)) / radii[0]
    v = (-dy * np.sin(angle) + dx * np.cos(angle)) / radii[1]
    return 2.0 * depth * np.sqrt(np.clip(1.0 - u * u - v * v, 0.0, None))


def random_radiograph(size: int, rng: np.random.Generator) -> np.ndarray:
    """A noiseless chest/abdomen-like radiograph (a digitally reconstructed radiograph of random
    ellipsoids, projected analytically): the attenuation line integral (brighter = more
    attenuating, as MONOCHROME2 radiographs show), float32 ``(size, size)``.

    A body of soft tissue, two lungs, a spine, ribs and other bones, organs and small dense
    vessels, with a mild detector blur: a radiograph reference without noise of its own, for
    validation (the packaged radiographs are few and all in the training or test split)."""
    mm = RADIOGRAPH_FIELD_MM / size
    c = size / 2.0

    def add(mu: float, center, radii_px, depth_mm: float, angle: float = 0.0) -> None:
        nonlocal image
        image += mu * _ellipsoid_chords((size, size), center, radii_px, depth_mm, angle)

    image = np.zeros((size, size))
    add(_MU_SOFT, (c, c), (size * rng.uniform(0.55, 0.7), size * rng.uniform(0.33, 0.45)), rng.uniform(100, 160))
    for side in (-1, 1):  # lungs
        center = (c - size * rng.uniform(0.05, 0.15), c + side * size * rng.uniform(0.14, 0.2))
        add(_MU_LUNG_DELTA, center, (size * rng.uniform(0.2, 0.3), size * rng.uniform(0.09, 0.13)),
            rng.uniform(50, 80), rng.uniform(-0.15, 0.15))
    add(_MU_BONE_DELTA, (c, c), (size * 0.7, size * rng.uniform(0.025, 0.035)), rng.uniform(15, 25))  # spine
    for _ in range(rng.integers(4, 10)):  # ribs: thin tilted bones
        center = (c + size * rng.uniform(-0.35, 0.1), c + rng.choice([-1, 1]) * size * rng.uniform(0.1, 0.25))
        add(_MU_BONE_DELTA, center, (size * rng.uniform(0.006, 0.012), size * rng.uniform(0.1, 0.18)),
            rng.uniform(5, 10), rng.uniform(-0.5, 0.5))
    for _ in range(rng.integers(2, 6)):  # organs, slightly denser than fat-laden tissue
        center = c + rng.uniform(-0.3, 0.3, size=2) * size
        add(0.002, center, size * rng.uniform(0.05, 0.15, size=2), rng.uniform(30, 70), rng.uniform(-np.pi, np.pi))
    for _ in range(rng.integers(3, 15)):  # vessels and calcifications
        center = c + rng.uniform(-0.35, 0.35, size=2) * size
        add(0.01, center, size * rng.uniform(0.003, 0.01, size=2), rng.uniform(2, 8), rng.uniform(-np.pi, np.pi))
    image = ndimage.gaussian_filter(image, 0.35 / mm)  # detector blur, 0.35 mm
    return image.astype(np.float32)
