"""Synthetic phantoms: CT in HU (random ellipse/texture bodies and heads, Shepp-Logan), their MR-like
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


def random_phantom(size: int, rng: np.random.Generator, flat: bool = False) -> np.ndarray:
    """A random body-like phantom in HU, float32 ``(size, size)``.

    Air outside (-1000), a fat layer (~-100), soft-tissue organs (20-60), low-contrast lesions
    (5-20 HU from their organ), lungs (-850..-750) with vessels, bones (400-1500), small bright
    vessels and calcifications (150-600), and a smooth tissue texture of a few HU, left out when
    ``flat`` (piecewise constant, like a QA phantom or Shepp-Logan; the draws are the same).
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
    if not flat:
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


HEAD_FOV_RANGE_MM = (200.0, 300.0)  # head scans use a smaller field of view than bodies


def _polar_layers(size: int, rng: np.random.Generator, radii: tuple[float, float]) -> np.ndarray:
    """Elliptical radius (1 on a random, slightly irregular head outline of ``radii`` pixels)
    at every pixel of a ``(size, size)`` grid: layers of the head are bands of this value."""
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5 - size / 2.0
    angle = rng.uniform(-0.3, 0.3)
    u = (rows * np.cos(angle) + cols * np.sin(angle)) / radii[0]
    v = (-rows * np.sin(angle) + cols * np.cos(angle)) / radii[1]
    theta = np.arctan2(u, v)
    wobble = sum(rng.normal(0.0, 0.015 / k) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in range(2, 6))
    return np.sqrt(u * u + v * v) / (1.0 + wobble)


def random_head_phantom(size: int, rng: np.random.Generator, grain: bool = True) -> np.ndarray:
    """A random axial head-like phantom in HU, float32 ``(size, size)``, with partial-volume edges.

    Scalp (soft tissue), a skull of dense cortical bone around a less dense diploe, a thin CSF
    rim, grey matter with blobby white matter, ventricles, sulci, a falx, small calcifications,
    an optional lesion, a fine grain of 0.5-2 HU and sometimes a curved head-rest shell. The
    body phantoms have neither a bone ring next to soft tissue nor sub-noise brain detail, which
    real head slices are full of; rendered at twice the size and averaged down, so edges are
    partial-volume ramps as a scanner records them. ``grain`` False leaves the grain out (the same
    head; the grain's amplitude is not drawn, so whatever the caller draws next from ``rng``, such
    as the field of view, differs), so every region is one value apart from its partial-volume edges."""
    fine = 2 * size
    radii = (fine * rng.uniform(0.36, 0.44), fine * rng.uniform(0.29, 0.37))
    rho = _polar_layers(fine, rng, radii)
    mm = 1.0 / 80.0  # one mm in units of the outline radius (a head is ~160 mm wide)
    px_per_mm = radii[1] * mm
    scalp, table, diploe_frac = rng.uniform(3, 6) * mm, rng.uniform(4, 9) * mm, rng.uniform(0.3, 0.5)
    image = np.full((fine, fine), AIR_HU)
    image[rho < 1.0] = rng.uniform(20, 60)  # scalp
    skull_out, skull_in = 1.0 - scalp, 1.0 - scalp - table
    bone = (rho < skull_out) & (rho >= skull_in)
    image[bone] = rng.uniform(1000, 1800)
    diploe_mid = (skull_out + skull_in) / 2
    image[bone & (np.abs(rho - diploe_mid) < table * diploe_frac / 2)] = rng.uniform(350, 800)
    brain = rho < skull_in
    image[brain] = rng.uniform(0, 15)  # CSF rim
    grey, white = rng.uniform(34, 46), rng.uniform(22, 32)
    cortex = rho < skull_in - rng.uniform(1, 3) * mm
    field = ndimage.gaussian_filter(rng.normal(size=(fine, fine)), fine / 40.0)
    field /= max(float(field.std()), 1e-12)
    image[cortex] = grey
    image[cortex & (rho < skull_in * rng.uniform(0.6, 0.8)) & (field > rng.uniform(-0.8, 0.2))] = white
    sulci = ndimage.gaussian_filter(rng.normal(size=(fine, fine)), fine / 90.0)
    sulci = np.abs(sulci) < 0.08 * float(sulci.std())  # thin contour lines of a smooth field
    image[cortex & sulci & (rho > skull_in * 0.75)] = rng.uniform(0, 15)
    rows, cols = np.mgrid[0:fine, 0:fine] - fine / 2.0
    for side in (-1, 1):  # lateral ventricles
        center = (rng.uniform(-0.1, 0.05) * radii[0], side * rng.uniform(0.06, 0.14) * radii[1])
        rr, cc = ellipse(fine / 2 + center[0], fine / 2 + center[1], radii[0] * rng.uniform(0.1, 0.3),
                         radii[1] * rng.uniform(0.04, 0.1), shape=image.shape, rotation=rng.uniform(-0.3, 0.3))
        image[rr, cc] = rng.uniform(0, 15)
    falx = (np.abs(cols) < rng.uniform(0.5, 1.5) * px_per_mm) & cortex & (np.abs(rows) > 0.2 * radii[0])
    image[falx] = rng.uniform(45, 90)
    for _ in range(rng.integers(0, 4)):  # calcifications
        center = fine / 2 + rng.uniform(-0.5, 0.5, size=2) * np.array(radii)
        rr, cc = ellipse(center[0], center[1], *(fine * rng.uniform(0.003, 0.01, size=2)), shape=image.shape)
        keep = cortex[rr, cc]
        image[rr[keep], cc[keep]] = rng.uniform(100, 400)
    if rng.random() < 0.5:  # a bleed (brighter) or an infarct (darker)
        center = fine / 2 + rng.uniform(-0.5, 0.5, size=2) * np.array(radii)
        rr, cc = ellipse(center[0], center[1], *(fine * rng.uniform(0.02, 0.08, size=2)), shape=image.shape,
                         rotation=rng.uniform(-np.pi, np.pi))
        keep = cortex[rr, cc]
        image[rr[keep], cc[keep]] = rng.choice([rng.uniform(55, 85), rng.uniform(8, 20)])
    if rng.random() < 0.5:  # a curved head-rest shell below the head
        shell = (np.abs(_polar_layers(fine, rng, (radii[0] * 1.15, radii[1] * 1.2)) - 1.0) < 0.006) & (rows > 0)
        image[shell & (image == AIR_HU)] = rng.uniform(0, 300)
    field = sum(w * ndimage.gaussian_filter(rng.normal(size=(fine, fine)), s)
                for s, w in zip((1.4, 2.8), rng.uniform(0.3, 1.0, size=2)))
    grain_hu = rng.uniform(0.5, 2.0) if grain else 0.0
    image[cortex] += (field * grain_hu / max(float(field.std()), 1e-12))[cortex]
    return image.reshape(size, 2, size, 2).mean(axis=(1, 3)).astype(np.float32)


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


def air_structure(hu: np.ndarray, rng: np.random.Generator, max_hu: float) -> np.ndarray:
    """``hu`` (a phantom, HU) with structure in its air (exactly ``AIR_HU``), as a real scan's air has
    it: a smooth field (calibration- and beam-hardening-like, up to ``max_hu`` / 4 RMS), a scatter halo that
    rises toward the body (up to ``max_hu``, decaying over 4-30 px) and up to two foam pads (a
    head-holder's or mattress's -960..-880 HU with a fine grain) filling the air around a random body
    pixel (one drawn deep inside the body leaves no mark). Tissue is unchanged, so the body reads
    as before; the model learns that air is not flat."""
    air = hu <= AIR_HU
    if not air.any() or air.all() or max_hu <= 0:
        return hu
    size = hu.shape[0]
    field = ndimage.gaussian_filter(rng.normal(size=hu.shape), sigma=size / rng.uniform(4.0, 12.0))
    field *= rng.uniform(0.0, max_hu / 4.0) / max(float(field.std()), 1e-12)
    distance = ndimage.distance_transform_edt(air)
    field += rng.uniform(0.0, max_hu) * np.exp(-distance / rng.uniform(4.0, 30.0))
    out = hu.astype(np.float64)
    out[air] += field[air]
    body_rows, body_cols = np.nonzero(~air)
    for _ in range(rng.integers(0, 3)):  # foam pads touching the body
        index = rng.integers(len(body_rows))
        radii = size * rng.uniform(0.05, 0.2, size=2)
        rows, cols = ellipse(body_rows[index], body_cols[index], radii[0], radii[1], shape=hu.shape,
                             rotation=rng.uniform(-np.pi, np.pi))
        keep = air[rows, cols]
        grain = ndimage.gaussian_filter(rng.normal(size=hu.shape), sigma=rng.uniform(0.7, 2.0))
        grain *= rng.uniform(3.0, 15.0) / max(float(grain.std()), 1e-12)
        out[rows[keep], cols[keep]] = rng.uniform(-960.0, -880.0) + grain[rows[keep], cols[keep]]
    return out.astype(np.float32)


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
