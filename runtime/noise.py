"""How noisy is an image? A robust per-image noise estimate in modality units (HU for CT).

Donoho's estimator: the finest diagonal Haar wavelet band of an image is almost pure noise
(it cancels every locally constant or linear ramp), so median(|coefficient|) / 0.6745 is the
noise standard deviation, and the median ignores the minority of blocks that sit on edges or
fine texture. It is measured only where noise can be measured:

- CT: soft tissue (HU in (-150, 250)) eroded by 3 px, minus padding. Air, lung, bone and
  padding are left out (air is clipped or flat in many scanners' output).
- Other modalities (MR, CR, DX, ...): :func:`signal_mask`: not padding, not a flat fill at the
  image's extreme values (zero background, saturated collimator, burned-in borders), the upper
  Otsu class of a 5x5-smoothed image (MR: the patient, not Rician/Rayleigh air; X-ray: the
  patient, not direct exposure), away from strong edges, eroded by 3 px. Classes and edges
  are decided on the smoothed image, so the selection does not depend on the noise itself.

It is the finest-scale (pixel-to-pixel) noise: noise a smooth reconstruction kernel or lossy
compression has correlated reads lower than an ROI's standard deviation (docs/RUNTIME.md).
numpy only (no scipy/pywt): the runtime stays lean, and the trainer can measure noise with the
same functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runtime.image_contract import PreparedImage
from runtime.normalization import NormalizationState, denormalize

MAD_TO_SIGMA = 0.6745  # median(|N(0, 1)|)
MIN_COEFFICIENTS = 100  # fewer wavelet coefficients than this: not measurable (NaN)
SOFT_TISSUE_HU = (-150.0, 250.0)  # where a CT slice's noise is measured
EROSION_PX = 3  # keep 3 px away from a mask's border (edges, air, padding)
SMOOTH_RADIUS = 2  # 5x5 box mean for the non-CT masks' class and edge decisions
EDGE_FRACTION = 0.1  # a step of more than 10 % of the 1-99 percentile range over 4 px is an edge
RANGE_PERCENTILES = (0.5, 99.5)  # non-CT noise is reported in percent of this range
SAMPLE_FRAMES = 8  # a multi-frame image is measured on at most this many evenly spaced frames


def haar_mad_sigma(image: np.ndarray, mask: np.ndarray) -> float:
    """Donoho's noise estimate of a 2-D ``image`` over the bool ``mask``.

    The finest diagonal Haar band, ``(a - b - c + d) / 2`` for each 2x2 block ``[[a, b], [c, d]]``
    starting at an even row and column (``pywt.dwt2(x, "haar")``'s diagonal detail; an odd last
    row or column is left out), over the blocks whose four pixels are all in ``mask``:
    ``median(|coefficient|) / 0.6745``. NaN when fewer than 100 blocks qualify.
    """
    x = np.asarray(image, dtype=np.float64)
    inside = np.asarray(mask, dtype=bool)
    if x.ndim != 2 or inside.shape != x.shape:
        raise ValueError(f"haar_mad_sigma needs a 2-D image and a mask of its shape, got {x.shape} and {inside.shape}")
    rows, cols = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
    corners = [(slice(dy, rows, 2), slice(dx, cols, 2)) for dy in (0, 1) for dx in (0, 1)]
    a, b, c, d = (x[corner] for corner in corners)
    blocks = np.logical_and.reduce([inside[corner] for corner in corners])
    if blocks.sum() < MIN_COEFFICIENTS:
        return float("nan")
    diagonal = (a - b - c + d)[blocks] / 2.0
    return float(np.median(np.abs(diagonal)) / MAD_TO_SIGMA)


def erode(mask: np.ndarray, iterations: int) -> np.ndarray:
    """Binary erosion by the 4-neighbour cross, ``iterations`` times; outside the image is False.

    The same as ``scipy.ndimage.binary_erosion(mask, iterations=iterations)``.
    """
    out = np.asarray(mask, dtype=bool)
    for _ in range(iterations):
        core = np.zeros_like(out)
        core[1:-1, 1:-1] = (
            out[1:-1, 1:-1] & out[:-2, 1:-1] & out[2:, 1:-1] & out[1:-1, :-2] & out[1:-1, 2:]
        )
        out = core
    return out


def box_mean(image: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a ``(2 radius + 1)``-square window (edges repeated), float64, same shape."""
    side = 2 * radius + 1
    rows, cols = np.shape(image)
    padded = np.pad(np.asarray(image, dtype=np.float64), radius, mode="edge")
    column_sums = sum(padded[dy : dy + rows] for dy in range(side))
    return sum(column_sums[:, dx : dx + cols] for dx in range(side)) / (side * side)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """The threshold that best splits ``values`` into two classes (Otsu 1979)."""
    counts, edges = np.histogram(values, bins=bins)
    centers = (edges[:-1] + edges[1:]) / 2.0
    below = np.cumsum(counts)[:-1].astype(np.float64)
    above = counts.sum() - below
    sum_below = np.cumsum(counts * centers)[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        gap = sum_below / below - (np.dot(counts, centers) - sum_below) / above
        between = np.where((below > 0) & (above > 0), below * above * gap**2, -1.0)
    return float(edges[int(np.argmax(between)) + 1])


def _valid(values: np.ndarray, padding: np.ndarray | None) -> np.ndarray:
    valid = np.isfinite(values)
    if padding is not None:
        valid &= ~np.asarray(padding, dtype=bool)
    return valid


def soft_tissue_mask(hu: np.ndarray, padding: np.ndarray | None = None) -> np.ndarray:
    """CT pixels with HU in (-150, 250), not padding, eroded by 3 px."""
    hu = np.asarray(hu, dtype=np.float64)
    tissue = _valid(hu, padding) & (hu > SOFT_TISSUE_HU[0]) & (hu < SOFT_TISSUE_HU[1])
    return erode(tissue, EROSION_PX)


def signal_mask(values: np.ndarray, padding: np.ndarray | None = None) -> np.ndarray:
    """Where a non-CT image's noise can be measured (module docstring): the patient, not air,
    flat fills, padding or strong edges."""
    x = np.asarray(values, dtype=np.float64)
    valid = _valid(x, padding)
    if not valid.any():
        return valid
    valid &= (x > x[valid].min()) & (x < x[valid].max())  # flat fills sit at the extremes
    if valid.sum() < 4 * MIN_COEFFICIENTS:
        return valid
    smooth = box_mean(np.where(valid, x, np.median(x[valid])), SMOOTH_RADIUS)
    low, high = np.percentile(smooth[valid], [1, 99])
    r = SMOOTH_RADIUS  # windows 2r apart share one row/column, so noise hardly counts
    jump = np.zeros_like(smooth)
    jump[r:-r, :] = np.abs(smooth[2 * r :, :] - smooth[: -2 * r, :])
    jump[:, r:-r] = np.maximum(jump[:, r:-r], np.abs(smooth[:, 2 * r :] - smooth[:, : -2 * r]))
    calm = valid & (jump <= EDGE_FRACTION * (high - low))
    signal = erode(calm & (smooth > otsu_threshold(smooth[valid])), EROSION_PX)
    return signal if signal.sum() >= 4 * MIN_COEFFICIENTS else erode(calm, EROSION_PX)


def estimate_noise(values: np.ndarray, modality: str, padding: np.ndarray | None = None) -> float:
    """Noise standard deviation of one 2-D frame of modality values (HU for CT); NaN if unmeasurable."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"estimate_noise needs one 2-D frame, got shape {values.shape}")
    if modality.strip().upper() == "CT":
        return haar_mad_sigma(values, soft_tissue_mask(values, padding))
    return haar_mad_sigma(values, signal_mask(values, padding))


def value_range(values: np.ndarray, padding: np.ndarray | None = None) -> float:
    """The 0.5-99.5 percentile range of a frame's non-padding values (the percentile
    normalization's default range), in which non-CT noise is reported."""
    values = np.asarray(values, dtype=np.float64)
    valid = _valid(values, padding)
    if not valid.any():
        return float("nan")
    low, high = np.percentile(values[valid], RANGE_PERCENTILES)
    return float(high - low)


@dataclass(frozen=True)
class NoiseLevel:
    """An image's estimated noise: in HU for CT, else in percent of its 0.5-99.5 percentile range."""

    value: float  # NaN when it could not be measured
    unit: str  # "HU" or "%"

    def describe(self) -> str:
        """E.g. ``noise ~12.3 HU`` or ``noise ~2.1% of the p0.5-p99.5 range``."""
        if not np.isfinite(self.value):
            return "noise not measurable"
        if self.unit == "HU":
            return f"noise ~{self.value:.1f} HU"
        return f"noise ~{self.value:.1f}% of the p0.5-p99.5 range"


def frame_noise(values: np.ndarray, modality: str, padding: np.ndarray | None = None) -> NoiseLevel:
    """One frame's :class:`NoiseLevel` (HU for CT, percent of the percentile range otherwise)."""
    return _reported(estimate_noise(values, modality, padding), values, modality, padding)


def _reported(sigma: float, values: np.ndarray, modality: str, padding: np.ndarray | None) -> NoiseLevel:
    """A frame's measured ``sigma`` (modality units) as reported: HU for CT, else percent of range."""
    if modality.strip().upper() == "CT":
        return NoiseLevel(sigma, "HU")
    spread = value_range(values, padding)
    percent = 100.0 * sigma / spread if np.isfinite(sigma) and spread > 0 else float("nan")
    return NoiseLevel(percent, "%")


def sample_frames(count: int) -> list[int]:
    """Indices of up to 8 evenly spaced frames of ``count``."""
    return sorted({round(i) for i in np.linspace(0, count - 1, min(SAMPLE_FRAMES, count))})


def image_noise(frames: np.ndarray, modality: str, padding: np.ndarray | None = None) -> NoiseLevel:
    """A ``(frames, rows, cols)`` image's noise: the median over up to 8 evenly spaced frames."""
    picks = sample_frames(len(frames))
    levels = [frame_noise(frames[i], modality, None if padding is None else padding[i]) for i in picks]
    return _median_level(levels, "HU")


def _median_level(levels: list[NoiseLevel], unit: str) -> NoiseLevel:
    """The median of the measurable ``levels`` (NaN if none)."""
    measured = [level.value for level in levels if np.isfinite(level.value)]
    return NoiseLevel(float(np.median(measured)) if measured else float("nan"), levels[0].unit if levels else unit)


@dataclass(frozen=True)
class MeasuredNoise:
    """One measurement of an image's noise, in the two forms the runtime needs."""

    reported: NoiseLevel  # what logs and the Derivation Description state (HU or % of range)
    normalized: float  # what a ``noise_map`` model is given (model's normalized units)


def measure_noise(
    normalized: np.ndarray, states: list[NormalizationState], modality: str, padding: np.ndarray | None = None
) -> MeasuredNoise:
    """The noise of normalized frames ``(frames, rows, cols)``, each sampled frame measured once:
    ``reported`` is the median of :func:`frame_noise` over the frames of :func:`_sampled_frames`
    (NaN when none is measurable), ``normalized`` is :func:`normalized_noise_level`."""
    frames = _sampled_frames(normalized, states, modality, padding)
    reported = [_reported(frame.sigma, frame.values, modality, frame.padding) for frame in frames]
    unit = "HU" if modality.strip().upper() == "CT" else "%"
    return MeasuredNoise(_median_level(reported, unit), _normalized_level(frames))


@dataclass(frozen=True)
class _SampledFrame:
    values: np.ndarray  # modality values
    padding: np.ndarray | None
    sigma: float  # estimate_noise of the frame (NaN if unmeasurable)
    scale: float  # its normalization scale


def _sampled_frames(
    normalized: np.ndarray, states: list[NormalizationState], modality: str, padding: np.ndarray | None
) -> list[_SampledFrame]:
    """Up to 8 evenly spaced frames, brought back to modality values and measured like
    :func:`estimate_noise` (CT: soft tissue in HU; other modalities: the signal mask)."""
    frames = np.asarray(normalized)
    if frames.ndim != 3 or len(states) != len(frames):
        raise ValueError(f"need (frames, rows, cols) normalized frames and one state each, got {frames.shape}")
    sampled = []
    for index in sample_frames(len(frames)):
        frame_padding = None if padding is None else padding[index]
        values = denormalize(frames[index], states[index])
        sampled.append(_SampledFrame(values, frame_padding, estimate_noise(values, modality, frame_padding),
                                     states[index].scale))
    return sampled


def _normalized_level(frames: list[_SampledFrame]) -> float:
    """The median of each frame's sigma over its normalization scale; a frame with too little
    tissue falls back to the Haar estimate over all its non-padding pixels; 0.0 when nothing
    can be measured."""
    levels = []
    for frame in frames:
        sigma = frame.sigma
        if not np.isfinite(sigma):
            sigma = haar_mad_sigma(frame.values, _valid(frame.values, frame.padding))
        if np.isfinite(sigma):
            levels.append(sigma / frame.scale)
    return float(np.median(levels)) if levels else 0.0


def prepared_noise(prepared: PreparedImage) -> MeasuredNoise:
    """:func:`measure_noise` of an image prepared by the image contract (its padding left out)."""
    return measure_noise(prepared.normalized, prepared.states, prepared.modality, prepared.padding)


def normalized_noise_level(
    normalized: np.ndarray, states: list[NormalizationState], modality: str, padding: np.ndarray | None = None
) -> float:
    """The noise level a ``noise_map`` model is given (runtime.model_contract): the image's noise
    standard deviation in the model's normalized units (:func:`_normalized_level` of the sampled
    frames; without the reported form's percentiles). Training computes the same number on each
    degraded patch, so a model learns from what the runtime will feed it."""
    return _normalized_level(_sampled_frames(normalized, states, modality, padding))
