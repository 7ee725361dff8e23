"""Modality values <-> the model's normalized float image.

The second half of the image contract. CT is scaled linearly from a fixed HU range so that
an HU value means the same to the model in every slice; MR and X-ray have no absolute scale,
so each image is scaled between two of its own percentiles. The state needed to undo the
scaling travels with the image, so the inverse is exact.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

NormalizationKind = Literal["hu_linear", "percentile"]


@dataclass(frozen=True)
class NormalizationSpec:
    """How to scale modality values into the model's range (roughly [0, 1])."""

    kind: NormalizationKind = "hu_linear"
    hu_min: float = -1024.0
    hu_max: float = 3071.0
    low_percentile: float = 0.5
    high_percentile: float = 99.5

    def to_dict(self) -> dict:
        """Plain-data form, as stored in model metadata."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "NormalizationSpec":
        """Inverse of :meth:`to_dict`; ValueError for unknown keys or values that cannot work."""
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown normalization keys {sorted(map(str, unknown))}")
        spec = cls(**data)
        if spec.kind not in ("hu_linear", "percentile"):
            raise ValueError(f"unknown normalization kind {spec.kind!r}")
        numbers = (spec.hu_min, spec.hu_max, spec.low_percentile, spec.high_percentile)
        if not all(isinstance(n, (int, float)) and not isinstance(n, bool) and math.isfinite(n) for n in numbers):
            raise ValueError("normalization bounds must be finite numbers")
        if not spec.hu_min < spec.hu_max:
            raise ValueError(f"normalization hu_min {spec.hu_min} must be below hu_max {spec.hu_max}")
        if not 0 <= spec.low_percentile < spec.high_percentile <= 100:
            raise ValueError("normalization percentiles must satisfy 0 <= low < high <= 100")
        return spec


CT_DEFAULT = NormalizationSpec(kind="hu_linear")
PERCENTILE_DEFAULT = NormalizationSpec(kind="percentile")


@dataclass(frozen=True)
class NormalizationState:
    """The affine map used for one image: ``normalized = (value - offset) / scale``."""

    offset: float
    scale: float


def fit_normalization(
    values: np.ndarray, spec: NormalizationSpec, mask: np.ndarray | None = None
) -> NormalizationState:
    """Choose the affine map for ``values``; ``mask`` marks padding pixels to ignore."""
    if spec.kind == "hu_linear":
        return NormalizationState(offset=spec.hu_min, scale=spec.hu_max - spec.hu_min)
    sample = values[~mask] if mask is not None and mask.any() and not mask.all() else values
    low, high = np.percentile(sample, [spec.low_percentile, spec.high_percentile])
    if not np.isfinite(high - low) or high - low <= 0:
        # A flat image: any positive scale inverts exactly; 1 keeps values finite.
        return NormalizationState(offset=float(low), scale=1.0)
    return NormalizationState(offset=float(low), scale=float(high - low))


def normalize(values: np.ndarray, state: NormalizationState) -> np.ndarray:
    """Modality values -> normalized float32 (no clipping: the inverse stays exact)."""
    return ((np.asarray(values, dtype=np.float64) - state.offset) / state.scale).astype(np.float32)


def denormalize(normalized: np.ndarray, state: NormalizationState) -> np.ndarray:
    """Normalized values -> modality values (float64, before rounding to stored integers)."""
    return np.asarray(normalized, dtype=np.float64) * state.scale + state.offset
