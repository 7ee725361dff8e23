"""Model registry (timm-style): one small file per model, created by name.

Every model takes a normalized float32 image ``[N, 1, H, W]`` and returns the enhanced image,
``[N, 1, scale*H, scale*W]`` (scale 1 for denoisers, 2 for the x2 super-resolution models),
and carries ``size_multiple``, ``model_name`` and ``model_kwargs`` (and ``scale`` when not 1).
"""

from __future__ import annotations

from trainer.models.flops import count_flops, count_parameters
from trainer.models.registry import create_model, list_models, register_model

# Importing the model files registers them.
from trainer.models import student as _student  # noqa: F401,E402
from trainer.models import super_resolution as _super_resolution  # noqa: F401,E402
from trainer.models import unetpp as _unetpp  # noqa: F401,E402

__all__ = ["count_flops", "count_parameters", "create_model", "list_models", "register_model"]
