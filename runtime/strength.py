"""The strength control: how much of the model's change reaches the output.

Residual blending in the model's normalized space, ``out = x + S * (model(x) - x)``: 0 gives
the input back (the model is not run), 1 the model's output, above 1 removes more noise than
the model does (like the Low/Medium/High of commercial deep-learning reconstruction, 0 < S < 1
being the "Low" end). Normalization is affine, so the blend is the same in modality units.
"""

from __future__ import annotations

import math

import numpy as np

DEFAULT_STRENGTH = 1.0
MAX_STRENGTH = 4.0  # beyond this the residual is amplified into artefacts, not less noise


def check_strength(value: float) -> float:
    """``value`` as a float if 0 <= value <= 4; ValueError naming the allowed range otherwise."""
    strength = float(value)
    if not math.isfinite(strength) or not 0.0 <= strength <= MAX_STRENGTH:
        raise ValueError(f"strength must be between 0 and {MAX_STRENGTH:g}, got {value}")
    return strength


def apply_strength(normalized: np.ndarray, enhanced: np.ndarray, strength: float) -> np.ndarray:
    """``normalized + strength * (enhanced - normalized)`` as float32 (exact at 0 and 1)."""
    x = np.asarray(normalized, dtype=np.float64)
    blended = x + check_strength(strength) * (np.asarray(enhanced, dtype=np.float64) - x)
    return blended.astype(np.float32)
