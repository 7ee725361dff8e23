"""Shared pytest configuration: GPU tests skip with a reason where no GPU/TensorRT is present."""

from __future__ import annotations

import importlib.util
import shutil

import pytest


def _gpu_skip_reason() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed (GPU/Jetson only; see docs/COMPILER.md)"
    if shutil.which("nvidia-smi") is None and not _is_jetson():
        return "no NVIDIA GPU on this machine"
    return None


def _is_jetson() -> bool:
    import os

    return os.path.exists("/etc/nv_tegra_release")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _gpu_skip_reason()
    if reason is None:
        return
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))
