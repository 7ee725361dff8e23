"""The builder half of the fake ``tensorrt`` module: Builder, network, ONNX parser, config, profile.

It checks what real TensorRT checks where ``compiler.build`` could get it wrong and records
nothing a real object would not hold: the ONNX parser reads the file (protobuf, then ONNX
Runtime as the "kernel library") and reports failures as ``ParserError`` objects; an
optimization profile refuses ``min <= opt <= max`` violations; a network with dynamic inputs and
no profile for them does not build. A built plan is a :class:`Plan`: the ONNX bytes plus the
profile, which the fake runtime (:mod:`fakes.fake_tensorrt`) deserializes and runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx

from compiler.trt_gate import in_range

if TYPE_CHECKING:
    from fakes.fake_tensorrt import FakeTensorRT

PLAN_MAGIC = b"fake-tensorrt-plan\n"
Shapes = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]


@dataclass(frozen=True)
class Plan:
    """A serialized fake engine: the network's ONNX and one optimization profile per input."""

    onnx: bytes
    profiles: dict[str, Shapes]

    def encode(self) -> bytes:
        header = json.dumps({name: [list(s) for s in shapes] for name, shapes in self.profiles.items()}).encode()
        return PLAN_MAGIC + len(header).to_bytes(4, "little") + header + self.onnx

    @classmethod
    def decode(cls, data: bytes) -> Plan | None:
        """The plan in ``data``, or None if it is not one (TensorRT's magic-tag check)."""
        if not data.startswith(PLAN_MAGIC):
            return None
        start = len(PLAN_MAGIC) + 4
        end = start + int.from_bytes(data[len(PLAN_MAGIC) : start], "little")
        profiles = {name: tuple(tuple(s) for s in shapes) for name, shapes in json.loads(data[start:end]).items()}
        return cls(data[end:], profiles)  # type: ignore[arg-type]


class ITensor:
    """A network input or output."""

    def __init__(self, name: str, shape: tuple) -> None:
        self.name = name
        self.shape = shape


class INetworkDefinition:
    """A network, filled by the ONNX parser."""

    def __init__(self, trt: FakeTensorRT, flags: int) -> None:
        self._trt, self._flags = trt, flags
        self._inputs: list[ITensor] = []
        self._outputs: list[ITensor] = []
        self._onnx: bytes | None = None

    @property
    def num_inputs(self) -> int:
        return len(self._inputs)

    @property
    def num_outputs(self) -> int:
        return len(self._outputs)

    def get_input(self, index: int) -> ITensor:
        return self._inputs[index]

    def get_output(self, index: int) -> ITensor:
        return self._outputs[index]

    def get_flag(self, flag: Any) -> bool:
        return bool(self._flags & (1 << int(flag)))


class ParserError:
    """One ONNX parser error; ``str()`` reads like TensorRT's."""

    def __init__(self, code: Any, desc: str, node: int = -1, func: str = "parseFromFile") -> None:
        self._code, self._desc, self._node, self._func = code, desc, node, func

    def code(self) -> Any:
        return self._code

    def desc(self) -> str:
        return self._desc

    def node(self) -> int:
        return self._node

    def func(self) -> str:
        return self._func

    def __str__(self) -> str:
        return f"In node {self._node} ({self._func}): {self._code.name}: {self._desc}"


class OnnxParser:
    """Parses an ONNX file into a network (``_trt`` is set on the module's subclass)."""

    _trt: FakeTensorRT

    def __init__(self, network: INetworkDefinition, logger: Any) -> None:
        self._network = network
        self._errors: list[ParserError] = []

    @property
    def num_errors(self) -> int:
        return len(self._errors)

    def get_error(self, index: int) -> ParserError:
        return self._errors[index]

    def clear_errors(self) -> None:
        self._errors.clear()

    def parse_from_file(self, model: str) -> bool:
        codes = self._trt.module.ErrorCode
        explicit = self._trt.module.NetworkDefinitionCreationFlag
        if in_range(self._trt.version, "8.5", "10") and not self._network.get_flag(explicit.EXPLICIT_BATCH):
            self._errors.append(ParserError(codes.INVALID_VALUE, "the ONNX parser needs an explicit batch network"))
            return False
        try:
            data = Path(model).read_bytes()
            onnx.load_model_from_string(data)
        except Exception as error:  # missing file, not protobuf
            message = f"Failed to parse ONNX model from file: {model} ({error})"
            self._errors.append(ParserError(codes.MODEL_DESERIALIZE_FAILED, message))
            return False
        try:
            session = self._trt.session(data)
        except Exception as error:  # an operator the "kernel library" lacks
            message = str(error).splitlines()[0]
            self._errors.append(ParserError(codes.UNSUPPORTED_NODE, message, node=0, func="importNode"))
            return False
        self._network._inputs = [ITensor(i.name, tuple(i.shape)) for i in session.get_inputs()]
        self._network._outputs = [ITensor(o.name, tuple(o.shape)) for o in session.get_outputs()]
        self._network._onnx = data
        return True


class IOptimizationProfile:
    """min/opt/max shapes per input; invalid once a ``set_shape`` broke ``min <= opt <= max``."""

    def __init__(self, trt: FakeTensorRT) -> None:
        self._trt = trt
        self._shapes: dict[str, Shapes] = {}
        self._valid = True

    def set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:  # noqa: A002 - TensorRT's names
        shapes = (tuple(min), tuple(opt), tuple(max))
        if len({len(s) for s in shapes}) != 1 or not all(a <= b <= c for a, b, c in zip(*shapes)):
            self._trt.errors.append(f"IOptimizationProfile::setDimensions: {input}: min <= opt <= max fails: {shapes}")
            self._valid = False
        self._shapes[input] = shapes

    def get_shape(self, input: str) -> list[tuple[int, ...]]:  # noqa: A002
        return list(self._shapes.get(input, ()))


class ITimingCache:
    """A timing cache; serializes to the bytes it was created from (plus what a build added)."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def serialize(self) -> bytes:
        return self._data


class IBuilderConfig:
    """Builder settings: memory pools, profiles, flags, timing cache, DLA."""

    def __init__(self, trt: FakeTensorRT) -> None:
        self._trt = trt
        self._pools: dict[Any, int] = {}
        self._profiles: list[IOptimizationProfile] = []
        self._flags: set[Any] = set()
        self._cache: ITimingCache | None = None
        self.default_device_type = trt.module.DeviceType.GPU
        self.DLA_core = -1

    @property
    def num_optimization_profiles(self) -> int:
        return len(self._profiles)

    def set_memory_pool_limit(self, pool: Any, pool_size: int) -> None:
        self._pools[pool] = pool_size

    def get_memory_pool_limit(self, pool: Any) -> int:
        return self._pools.get(pool, 0)

    def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
        if not profile._valid:
            self._trt.errors.append("IBuilderConfig::addOptimizationProfile: invalid profile")
            return -1
        self._profiles.append(profile)
        return len(self._profiles) - 1

    def set_flag(self, flag: Any) -> None:
        self._flags.add(flag)

    def get_flag(self, flag: Any) -> bool:
        return flag in self._flags

    def create_timing_cache(self, serialized_timing_cache: bytes) -> ITimingCache:
        return ITimingCache(bytes(serialized_timing_cache))

    def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
        self._cache = cache
        return True

    def get_timing_cache(self) -> ITimingCache | None:
        return self._cache


class Builder:
    """Creates networks, configs and profiles, and builds plans (``_trt`` set on the module's subclass)."""

    _trt: FakeTensorRT

    def __init__(self, logger: Any) -> None:
        self._logger = logger

    @property
    def num_DLA_cores(self) -> int:  # noqa: N802 - TensorRT's name
        return self._trt.dla_cores

    def create_network(self, flags: int = 0) -> INetworkDefinition:
        return INetworkDefinition(self._trt, flags)

    def create_builder_config(self) -> IBuilderConfig:
        return IBuilderConfig(self._trt)

    def create_optimization_profile(self) -> IOptimizationProfile:
        return IOptimizationProfile(self._trt)

    def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> bytes | None:
        """The plan, or None with the reason in ``FakeTensorRT.errors`` (as TensorRT logs it)."""
        if network._onnx is None:
            self._trt.errors.append("Network must have at least one output")
            return None
        profiles: dict[str, Shapes] = {}
        for tensor in network._inputs:
            shapes = next((p._shapes[tensor.name] for p in config._profiles if tensor.name in p._shapes), None)
            if shapes is None:
                if all(isinstance(d, int) for d in tensor.shape):
                    continue
                self._trt.errors.append(
                    f"{tensor.name}: Network has dynamic or shape inputs, but no optimization profile has been defined."
                )
                return None
            fixed = [(d, s) for d, s in zip(tensor.shape, shapes[0]) if isinstance(d, int)]
            if len(tensor.shape) != len(shapes[0]) or any(d != s for d, s in fixed):
                self._trt.errors.append(f"{tensor.name}: profile {shapes} does not fit the input {tensor.shape}")
                return None
            profiles[tensor.name] = shapes
        if config._cache is not None:
            config._cache._data += b"[timed]"
        return Plan(network._onnx, profiles).encode()
