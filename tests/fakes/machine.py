"""One fake NVIDIA machine per test: a FakeGpu, cuda-python and TensorRT of one release, a GPU name.

``install_machine(monkeypatch)`` puts the fakes where ``import tensorrt`` and
``from cuda.bindings import runtime`` find them and makes ``detect_gpu`` report the fake GPU, so
``compiler.build.build`` writes a real engine file and sidecar and ``TensorRTBackend`` opens and
runs it, both through their real code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

import compiler.build
from compiler.build import BuildOptions
from fakes.fake_cuda import FakeGpu, install_cudart
from fakes.fake_tensorrt import FakeTensorRT
from runtime.backends import tensorrt_backend

GPU_NAME = "NVIDIA H100 80GB HBM3"
CAPABILITY = "9.0"
Shape = tuple[int, int, int, int]


@dataclass(frozen=True)
class FakeMachine:
    """The harnesses a test inspects."""

    gpu: FakeGpu
    trt: FakeTensorRT


def install_machine(
    monkeypatch: pytest.MonkeyPatch,
    version: str = "10.3.0",
    memory_limit: int | None = None,
    dla_cores: int = 0,
    cuda_layout: str = "bindings",
) -> FakeMachine:
    """Install the fakes for the rest of the test (see the module docstring)."""
    gpu = FakeGpu(memory_limit)
    trt = FakeTensorRT(gpu, version, dla_cores)
    trt.install(monkeypatch)
    install_cudart(monkeypatch, gpu, cuda_layout)
    for module in (compiler.build, tensorrt_backend):
        monkeypatch.setattr(module, "detect_gpu", lambda: (GPU_NAME, CAPABILITY))
    return FakeMachine(gpu, trt)


def build_engine(
    out: Path, onnx_path: Path, shapes: tuple[Shape, Shape, Shape], precision: str = "fp16", **options: object
) -> Path:
    """``python -m compiler build`` for the (min, opt, max) profile ``shapes``: ``out`` and its sidecar."""
    low, opt, high = shapes
    compiler.build.build(BuildOptions(onnx_path=onnx_path, out=out, precision=precision, min=low, opt=opt, max=high,
                                      **options))  # type: ignore[arg-type]
    return out
