"""Training and held-out data: sources, degradations, augmentations (see docs/DATA.md)."""

from trainer.data.config import DataConfig
from trainer.data.datasets import (
    HeldoutImage,
    PatchDataset,
    build_heldout_set,
    build_training_set,
    data_summary,
    normalization_table,
    spec_for,
)

__all__ = [
    "DataConfig",
    "HeldoutImage",
    "PatchDataset",
    "build_heldout_set",
    "build_training_set",
    "data_summary",
    "normalization_table",
    "spec_for",
]
