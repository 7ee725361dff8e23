"""Training and held-out data: sources, degradations, augmentations (see docs/DATA.md).

Names are imported lazily so that torch-free callers (the compiler's verify and the latency
benchmark on a Jetson) can use ``trainer.data.offline`` without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DataConfig": "trainer.data.config",
    "HeldoutImage": "trainer.data.datasets",
    "PatchDataset": "trainer.data.datasets",
    "build_heldout_set": "trainer.data.datasets",
    "build_training_set": "trainer.data.datasets",
    "data_summary": "trainer.data.datasets",
    "normalization_table": "trainer.data.datasets",
    "spec_for": "trainer.data.datasets",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'trainer.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
