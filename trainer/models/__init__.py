"""Model registry (timm-style): one small file per model, created by name.

Every model takes a normalized float32 image ``[N, 1, H, W]`` and returns the enhanced image
of the same shape, and carries ``size_multiple``, ``model_name`` and ``model_kwargs``.
"""

from __future__ import annotations

from trainer.models.flops import count_flops, count_parameters
from trainer.models.registry import create_model, list_models, register_model

# Importing the model files registers them.
from trainer.models import student as _student  # noqa: F401,E402
from trainer.models import unetpp as _unetpp  # noqa: F401,E402

__all__ = ["count_flops", "count_parameters", "create_model", "list_models", "register_model"]
