"""The strength control: how much of the model's change reaches the output.

Residual blending in the model's normalized space, ``out = x + S * (model(x) - x)``: 0 gives
the input back (the model is not run), 1 the model's output, above 1 removes more noise than
the model does (like the Low/Medium/High of commercial deep-learning reconstruction, 0 < S < 1
being the "Low" end). Normalization is affine, so the blend is the same in modality units.

Super-resolution models (scale > 1) blend with the bicubic upsampled input instead,
``out = bicubic(x) + S * (model(x) - bicubic(x))``: 0 is plain bicubic interpolation, 1 the
model. Strength above 1 would extrapolate the model's added detail (ringing), so it is refused.
"""

from __future__ import annotations

import math

import numpy as np

DEFAULT_STRENGTH = 1.0
MAX_STRENGTH = 4.0  # beyond this the residual is amplified into artefacts, not less noise
MAX_SR_STRENGTH = 1.0  # super-resolution: 0 = bicubic, 1 = the model; more would extrapolate detail


def check_strength(value: float, scale: int = 1) -> float:
    """``value`` as a float if 0 <= value <= 4 (a super-resolution model's ``scale`` > 1: <= 1);
    ValueError naming the allowed range otherwise."""
    strength = float(value) + 0.0  # -0 becomes 0 (it is logged and written into the DICOM)
    if not math.isfinite(strength) or not 0.0 <= strength <= MAX_STRENGTH:
        raise ValueError(f"strength must be between 0 and {MAX_STRENGTH:g}, got {value}")
    if scale != 1 and strength > MAX_SR_STRENGTH:
        raise ValueError(f"strength {strength:g} is for denoising models; a super-resolution model takes 0 "
                         f"(bicubic) to {MAX_SR_STRENGTH:g} (the model's output)")
    return strength


def apply_strength(normalized: np.ndarray, enhanced: np.ndarray, strength: float) -> np.ndarray:
    """``normalized + strength * (enhanced - normalized)`` as float32 (exact at 0 and 1)."""
    x = np.asarray(normalized, dtype=np.float64)
    blended = x + check_strength(strength) * (np.asarray(enhanced, dtype=np.float64) - x)
    return blended.astype(np.float32)
