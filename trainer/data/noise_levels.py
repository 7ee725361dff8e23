"""The noise level a noise-map model is told for a training patch.

The runtime measures a whole image (runtime.noise.normalized_noise_level: Donoho's estimate, CT
over soft tissue). A 64-pixel patch measured the same way reads differently: few soft-tissue
pixels, air, edges (on the validation slices patch estimates spread from a fifth of the
whole-image value to above it). So each training variant measures its *whole* image at a few
noise parameters (CT dose, MR sigma, X-ray quanta) once, and a patch drawn at parameter p is
told the level interpolated at p: what the runtime would measure on that image at that noise.

With ``spec`` (``data.runtime_normalization``, percentile-normalized modalities) the table also
holds, per parameter, the affine map from the clean reference's normalization to the one the
runtime fits on the whole degraded image, and the level is measured in the latter: a patch and
its reference are then fed in the normalization the deployed model sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from runtime.noise import normalized_noise_level
from runtime.normalization import NormalizationSpec, NormalizationState, denormalize, fit_normalization

GRID_POINTS = 6  # noise parameters measured per variant, log-spaced over its training range


@dataclass(frozen=True)
class LevelTable:
    """Measured whole-image levels (normalized units) at ascending noise parameters."""

    parameters: tuple[float, ...]
    levels: tuple[float, ...]
    # Runtime normalization: x_runtime = gain * x + offset at each parameter (None: not measured).
    gains: tuple[float, ...] | None = None
    offsets: tuple[float, ...] | None = None

    def _interp(self, parameter: float, values: tuple[float, ...]) -> float:
        return float(np.interp(np.log(parameter), np.log(self.parameters), values))

    def at(self, parameter: float) -> float:
        """The level at ``parameter``, interpolated linearly in log(parameter) (clamped at the ends)."""
        return self._interp(parameter, self.levels)

    def affine_at(self, parameter: float) -> tuple[float, float] | None:
        """``(gain, offset)`` into the runtime's normalization at ``parameter``, or None."""
        if self.gains is None or self.offsets is None:
            return None
        return self._interp(parameter, self.gains), self._interp(parameter, self.offsets)


def level_table(
    bounds: tuple[float, float], degrade_at: Callable[[float], np.ndarray], state: NormalizationState, modality: str,
    spec: NormalizationSpec | None = None,
) -> LevelTable:
    """Measure ``degrade_at(p)`` (a whole degraded normalized image at noise parameter ``p``) at
    GRID_POINTS parameters log-spaced over ``bounds`` (one when low == high); with a percentile
    ``spec``, in the normalization the runtime fits on that degraded image (module docstring)."""
    low, high = bounds
    grid = np.geomspace(low, high, GRID_POINTS) if high > low else np.array([low], dtype=np.float64)
    runtime = spec is not None and spec.kind != "hu_linear"
    levels, gains, offsets = [], [], []
    for p in grid:
        degraded = degrade_at(float(p))
        fitted = fit_normalization(denormalize(degraded, state), spec) if runtime else state
        gain, offset = state.scale / fitted.scale, (state.offset - fitted.offset) / fitted.scale
        levels.append(normalized_noise_level((gain * degraded + offset)[None], [fitted], modality))
        gains.append(float(gain))
        offsets.append(float(offset))
    parameters = tuple(float(p) for p in grid)
    if not runtime:
        return LevelTable(parameters, tuple(levels))
    return LevelTable(parameters, tuple(levels), tuple(gains), tuple(offsets))
