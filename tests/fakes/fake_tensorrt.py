"""A fake ``tensorrt`` module for one release, over a :class:`fakes.fake_cuda.FakeGpu`.

``FakeTensorRT(gpu, version).install(monkeypatch)`` makes ``import tensorrt`` find it. Its
public names are TensorRT's; enum members that only some releases have (``BuilderFlag.FP16``
before 11, ``STRONGLY_TYPED`` from 10) exist only in those (:data:`GATED_MEMBERS`). The runtime
half behaves like TensorRT where the backend depends on it:

* ``Runtime.deserialize_cuda_engine`` returns None for bytes that are not a plan;
* ``IExecutionContext.set_input_shape`` returns False for shapes outside the profile;
* ``execute_async_v3`` needs every I/O tensor's shape and address, snapshots them and queues a
  kernel on the stream handle it is given (captured into a graph while the stream captures);
  the kernel reads the input from device memory, runs the plan's ONNX with ONNX Runtime (so
  the output is the model's) and writes the output to device memory.
"""

from __future__ import annotations

import math
import sys
import types
from enum import IntEnum
from typing import Any, Iterable

import numpy as np
import onnxruntime as ort
import pytest

from compiler.trt_gate import in_range
from fakes.fake_cuda import FakeGpu, Work
from fakes.fake_trt_builder import (
    Builder,
    IBuilderConfig,
    INetworkDefinition,
    IOptimizationProfile,
    ITensor,
    ITimingCache,
    OnnxParser,
    ParserError,
    Plan,
)

ENUMS: dict[str, dict[str, int]] = {
    "DataType": {"FLOAT": 0, "HALF": 1, "INT8": 2, "INT32": 3, "BOOL": 4},
    "TensorIOMode": {"NONE": 0, "INPUT": 1, "OUTPUT": 2},
    "BuilderFlag": {"FP16": 0, "INT8": 1, "GPU_FALLBACK": 3, "VERSION_COMPATIBLE": 18},
    "NetworkDefinitionCreationFlag": {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1},
    "MemoryPoolType": {"WORKSPACE": 0},
    "DeviceType": {"GPU": 0, "DLA": 1},
    "ErrorCode": {"SUCCESS": 0, "INTERNAL_ERROR": 1, "MODEL_DESERIALIZE_FAILED": 3, "INVALID_VALUE": 4,
                  "UNSUPPORTED_NODE": 8},
}
# Members only some releases have: (enum, member) -> (since, before), as compiler/build.py gates them.
GATED_MEMBERS: dict[tuple[str, str], tuple[str, str | None]] = {
    ("BuilderFlag", "FP16"): ("8.5", "11"),
    ("BuilderFlag", "INT8"): ("8.5", "11"),
    ("NetworkDefinitionCreationFlag", "EXPLICIT_BATCH"): ("8.5", "11"),
    ("NetworkDefinitionCreationFlag", "STRONGLY_TYPED"): ("10", None),
}
NUMPY_TYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "BOOL": np.bool_}
ORT_TYPES = {"tensor(float)": "FLOAT", "tensor(float16)": "HALF", "tensor(int32)": "INT32"}
SEVERITIES = {"INTERNAL_ERROR": 0, "ERROR": 1, "WARNING": 2, "INFO": 3, "VERBOSE": 4}


def nptype(trt_type: Any) -> type:
    """The numpy type of a TensorRT DataType."""
    return NUMPY_TYPES[trt_type.name]


def volume(iterable: Iterable[int]) -> int:
    """The number of elements of a shape."""
    return math.prod(iterable)


class Logger:
    """TensorRT's logger; severities as class attributes (``trt.Logger.WARNING``)."""

    Severity = IntEnum("Severity", SEVERITIES)
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = Severity

    def __init__(self, min_severity: Any = Severity.WARNING) -> None:
        self.min_severity = min_severity

    def log(self, severity: Any, msg: str) -> None:
        if severity <= self.min_severity:
            print(f"[TRT] {msg}", file=sys.stderr)


class IExecutionContext:
    """Input shapes and tensor addresses, and ``execute_async_v3`` queuing the engine's kernel."""

    def __init__(self, engine: ICudaEngine) -> None:
        self._engine, self._trt = engine, engine._trt
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._addresses: dict[str, int] = {}

    def set_input_shape(self, name: str, shape: Any) -> bool:
        shape = tuple(shape)
        self._trt.gpu.record("set_input_shape", tensor=name, shape=shape)
        low, _, high = self._engine._plan.profiles.get(name, ((), (), ()))
        if len(shape) != len(low) or not all(a <= s <= b for a, s, b in zip(low, shape, high)):
            self._trt.errors.append(f"IExecutionContext::setInputShape: {name} {list(shape)} is outside the profile")
            return False
        self._shapes[name] = shape
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        if name in self._engine._inputs:
            return self._shapes.get(name, tuple(-1 for _ in self._engine._plan.profiles[name][0]))
        if set(self._shapes) != set(self._engine._inputs):
            return (-1,) * 4
        return self._engine._output_shapes(self._shapes)[name]

    def set_tensor_address(self, name: str, memory: int) -> bool:
        self._trt.gpu.record("set_tensor_address", tensor=name, address=int(memory))
        self._addresses[name] = int(memory)
        return True

    def get_tensor_address(self, name: str) -> int:
        return self._addresses.get(name, 0)

    def execute_async_v3(self, stream_handle: int) -> bool:
        gpu = self._trt.gpu
        gpu.record("execute_async_v3", stream_handle, shapes=dict(self._shapes))
        missing = [n for n in self._engine._modes if n not in self._addresses] + [
            n for n in self._engine._inputs if n not in self._shapes]
        if missing:
            self._trt.errors.append(f"IExecutionContext::enqueueV3: no shape or address for {missing}")
            return False
        shapes, addresses = dict(self._shapes), dict(self._addresses)
        outputs = self._engine._output_shapes(shapes)

        def kernel() -> None:
            feeds = {n: _device_array(gpu, addresses[n], s) for n, s in shapes.items()}
            for name, value in zip(outputs, self._engine._session.run(list(outputs), feeds)):
                raw = np.ascontiguousarray(value).view(np.uint8).reshape(-1)
                gpu.device_view(addresses[name], raw.size)[:] = raw

        return gpu.enqueue(int(stream_handle), Work("execute", kernel))


def _device_array(gpu: FakeGpu, address: int, shape: tuple[int, ...]) -> np.ndarray:
    """A float32 copy of ``shape`` elements at a device address."""
    return gpu.device_view(address, volume(shape) * 4).view(np.float32).reshape(shape).copy()


class ICudaEngine:
    """A deserialized plan: named I/O tensors, one profile, execution contexts."""

    def __init__(self, trt: FakeTensorRT, plan: Plan) -> None:
        self._trt, self._plan = trt, plan
        self._session = trt.session(plan.onnx)
        modes = trt.module.TensorIOMode
        self._inputs = {i.name: i for i in self._session.get_inputs()}
        self._outputs = {o.name: o for o in self._session.get_outputs()}
        self._modes = {**{n: modes.INPUT for n in self._inputs}, **{n: modes.OUTPUT for n in self._outputs}}
        self._shape_cache: dict[tuple, dict[str, tuple[int, ...]]] = {}

    @property
    def num_io_tensors(self) -> int:
        return len(self._modes)

    @property
    def num_optimization_profiles(self) -> int:
        return 1

    def get_tensor_name(self, index: int) -> str:
        return list(self._modes)[index]

    def get_tensor_mode(self, name: str) -> Any:
        return self._modes.get(name, self._trt.module.TensorIOMode.NONE)

    def get_tensor_dtype(self, name: str) -> Any:
        tensor = self._inputs.get(name) or self._outputs[name]
        return self._trt.module.DataType[ORT_TYPES[tensor.type]]

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[tuple[int, ...]]:
        return list(self._plan.profiles[name]) if profile_index == 0 else []

    def create_execution_context(self) -> IExecutionContext:
        context = IExecutionContext(self)
        self._trt.contexts.append(context)
        return context

    def _output_shapes(self, shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        """Output shapes for these input shapes (TensorRT's shape inference; here: a zero run)."""
        key = tuple(sorted(shapes.items()))
        if key not in self._shape_cache:
            feeds = {n: np.zeros(s, np.float32) for n, s in shapes.items()}
            values = self._session.run(list(self._outputs), feeds)
            self._shape_cache[key] = {n: v.shape for n, v in zip(self._outputs, values)}
        return self._shape_cache[key]


class Runtime:
    """Deserializes plans (``_trt`` is set on the module's subclass)."""

    _trt: FakeTensorRT

    def __init__(self, logger: Any) -> None:
        self._logger = logger
        self.engine_host_code_allowed = False
        self.DLA_core = -1
        self._trt.runtimes.append(self)

    def deserialize_cuda_engine(self, serialized_engine: bytes) -> ICudaEngine | None:
        plan = Plan.decode(bytes(serialized_engine))
        if plan is None:
            self._trt.errors.append("IRuntime::deserializeCudaEngine: Magic tag does not match")
            return None
        return ICudaEngine(self._trt, plan)


CLASSES = (Logger, Runtime, ICudaEngine, IExecutionContext, Builder, INetworkDefinition, ITensor, OnnxParser,
           ParserError, IOptimizationProfile, IBuilderConfig, ITimingCache)
FUNCTIONS = (nptype, volume)
HARNESSED = (Runtime, Builder, OnnxParser)  # classes user code constructs: they need the harness


class FakeTensorRT:
    """The harness: one fake ``tensorrt`` module (``.module``) over ``gpu``, and what tests inspect."""

    def __init__(self, gpu: FakeGpu | None = None, version: str = "10.3.0", dla_cores: int = 0) -> None:
        self.gpu = gpu or FakeGpu()
        self.version = version
        self.dla_cores = dla_cores
        self.errors: list[str] = []  # what TensorRT would log at ERROR severity
        self.runtimes: list[Runtime] = []
        self.contexts: list[IExecutionContext] = []
        self.module = self._make_module()

    def _make_module(self) -> types.ModuleType:
        module = types.ModuleType("tensorrt")
        module.__version__ = self.version
        for name, members in ENUMS.items():
            gates = {m: GATED_MEMBERS.get((name, m), ("0", None)) for m in members}
            kept = {m: v for m, v in members.items() if in_range(self.version, *gates[m])}
            setattr(module, name, IntEnum(name, kept))
        for cls in CLASSES:
            setattr(module, cls.__name__, type(cls.__name__, (cls,), {"_trt": self}) if cls in HARNESSED else cls)
        for function in FUNCTIONS:
            setattr(module, function.__name__, function)
        return module

    def install(self, monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
        """Make ``import tensorrt`` return this fake for the rest of the test."""
        monkeypatch.setitem(sys.modules, "tensorrt", self.module)
        return self.module

    @staticmethod
    def session(onnx_bytes: bytes) -> ort.InferenceSession:
        """The ONNX Runtime session standing in for TensorRT's kernels (one thread)."""
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
