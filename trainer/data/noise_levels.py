"""The noise level a noise-map model is told for a training patch.

The runtime measures a whole image (runtime.noise.normalized_noise_level: Donoho's estimate, CT
over soft tissue). A 64-pixel patch measured the same way reads differently: few soft-tissue
pixels, air, edges (on the validation slices patch estimates spread from a fifth of the
whole-image value to above it). So each training variant measures its *whole* image at a few
noise parameters (CT dose, MR sigma, X-ray quanta) once, and a patch drawn at parameter p is
told the level interpolated at p: what the runtime would measure on that image at that noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from runtime.noise import normalized_noise_level
from runtime.normalization import NormalizationState

GRID_POINTS = 6  # noise parameters measured per variant, log-spaced over its training range


@dataclass(frozen=True)
class LevelTable:
    """Measured whole-image levels (normalized units) at ascending noise parameters."""

    parameters: tuple[float, ...]
    levels: tuple[float, ...]

    def at(self, parameter: float) -> float:
        """The level at ``parameter``, interpolated linearly in log(parameter) (clamped at the ends)."""
        return float(np.interp(np.log(parameter), np.log(self.parameters), self.levels))


def level_table(
    bounds: tuple[float, float], degrade_at: Callable[[float], np.ndarray], state: NormalizationState, modality: str
) -> LevelTable:
    """Measure ``degrade_at(p)`` (a whole degraded normalized image at noise parameter ``p``) at
    GRID_POINTS parameters log-spaced over ``bounds`` (one when low == high)."""
    low, high = bounds
    grid = np.geomspace(low, high, GRID_POINTS) if high > low else np.array([low], dtype=np.float64)
    levels = tuple(normalized_noise_level(degrade_at(float(p))[None], [state], modality) for p in grid)
    return LevelTable(tuple(float(p) for p in grid), levels)
