"""TensorRT backend: a serialized engine, checked against this machine, run on one CUDA stream.

``tensorrt`` and the CUDA binding are imported only in ``open()``. Before the engine is
deserialized its sidecar (``X.engine.json``) is checked against this machine's TensorRT
version and GPU and against the engine file's sha256; a mismatch is refused with the command
that rebuilds the engine. Pinned host and device buffers are allocated once for the
optimization profile's largest shape; each call does async H2D -> set_input_shape /
set_tensor_address -> execute_async_v3 -> async D2H -> synchronize, optionally replaying a
CUDA graph captured per input shape.

TensorRT >= 8.5 is required: 8.5 introduced the name-based I/O API used here
(``num_io_tensors``, ``get_tensor_name``, ``set_input_shape``, ``set_tensor_address``,
``execute_async_v3``); older versions are refused with a clear message. TensorRT 8.5/8.6 is
what JetPack 5 ships, 10.x is JetPack 6.1+ and current x86.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from runtime.backends.base import Backend, BackendError, InputConstraints
from runtime.backends.cuda_memory import CudaError, load_cuda
from runtime.engine_sidecar import EngineSidecarError, check_sidecar, detect_gpu, read_sidecar
from runtime.model_contract import INPUT_NAME, OUTPUT_NAME, ModelContract, ModelContractError

MIN_TENSORRT = (8, 5)
ENGINE_SUFFIXES = (".engine", ".plan")


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".")[:2] if p.isdigit())


def contract_from_sidecar(record: dict, source: str) -> ModelContract:
    """The model contract stored in a sidecar: under ``contract``/``metadata`` or top level."""
    for key in ("contract", "metadata", "model_contract"):
        if isinstance(record.get(key), dict):
            return ModelContract.from_metadata(record[key], source=source)
    return ModelContract.from_metadata(record, source=source)


def import_tensorrt() -> Any:
    """Import tensorrt lazily; BackendError with install advice if it is missing or too old."""
    try:
        import tensorrt as trt
    except ImportError as error:
        raise BackendError(
            f"TensorRT is not installed ({error}); install it (JetPack on Jetson, `pip install "
            "tensorrt` elsewhere)", "use an .onnx model with --backend onnxruntime"
        ) from error
    if _version_tuple(trt.__version__) < MIN_TENSORRT:
        raise BackendError(
            f"TensorRT {trt.__version__} is too old: medclear needs >= 8.5 (execute_async_v3 and "
            "named tensors); upgrade it", "use --backend onnxruntime with the .onnx model instead"
        )
    return trt


class TensorRTBackend(Backend):
    """Runs a serialized TensorRT engine built by ``python -m compiler build``."""

    kind = "tensorrt"

    def __init__(self, model_path: str | Path, use_cuda_graphs: bool = False) -> None:
        super().__init__(model_path)
        self.use_cuda_graphs = use_cuda_graphs
        self._cuda: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._stream: Any = None
        self._host: dict[str, np.ndarray] = {}
        self._device: dict[str, int] = {}
        self._graphs: dict[tuple[int, ...], Any] = {}

    def describe(self) -> str:
        binding = self._cuda.name if self._cuda is not None else "cuda"
        return f"tensorrt ({binding}{', CUDA graphs' if self.use_cuda_graphs else ''})"

    def _open(self) -> None:
        try:
            record = read_sidecar(self.model_path)
            self._contract = contract_from_sidecar(record, source=str(self.model_path) + ".json")
        except (EngineSidecarError, ModelContractError) as error:
            raise BackendError(str(error)) from error
        trt = import_tensorrt()
        try:
            gpu_name, capability = detect_gpu()
            # Refuse before deserializing: a foreign engine can crash inside TensorRT.
            check_sidecar(self.model_path, trt.__version__, gpu_name, capability)
        except EngineSidecarError as error:
            raise BackendError(str(error)) from error
        try:
            self._cuda = load_cuda()
        except CudaError as error:
            raise BackendError(str(error)) from error
        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)
        if record.get("version_compatible"):
            # A version-compatible plan embeds its own lean runtime, which must be allowed to load.
            runtime.engine_host_code_allowed = True
        if record.get("dla_core") is not None:
            runtime.DLA_core = int(record["dla_core"])
        self._engine = runtime.deserialize_cuda_engine(self.model_path.read_bytes())
        if self._engine is None:
            raise BackendError(f"{self.model_path}: TensorRT could not deserialize the engine; rebuild it")
        self._context = self._engine.create_execution_context()
        self._check_io(trt)
        minimum, _, maximum = (tuple(s) for s in self._engine.get_tensor_profile_shape(INPUT_NAME, 0))
        channels = self._contract.input_channels
        if len(maximum) != 4 or minimum[1] != channels or maximum[1] != channels:
            raise BackendError(f"{self.model_path}: engine profile {list(minimum)}..{list(maximum)} does not take "
                               f"the contract's {channels} input channel(s); rebuild the engine from its ONNX")
        self._constraints = InputConstraints(
            INPUT_NAME, self._contract.size_multiple, minimum, maximum, channels  # type: ignore[arg-type]
        )
        self._allocate(trt, maximum)

    def _check_io(self, trt: Any) -> None:
        names = {}
        for index in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(index)
            names[name] = self._engine.get_tensor_mode(name)
        if names.get(INPUT_NAME) != trt.TensorIOMode.INPUT or names.get(OUTPUT_NAME) != trt.TensorIOMode.OUTPUT:
            raise BackendError(
                f"{self.model_path}: engine must have input {INPUT_NAME!r} and output {OUTPUT_NAME!r}, "
                f"has {sorted(names)}"
            )
        for name in (INPUT_NAME, OUTPUT_NAME):
            if trt.nptype(self._engine.get_tensor_dtype(name)) != np.float32:
                raise BackendError(f"{self.model_path}: tensor {name!r} must be float32 at the engine's boundary")

    def _allocate(self, trt: Any, max_shape: tuple[int, ...]) -> None:
        """Pinned host and device buffers for the largest shape the profile allows, once: the
        input's with the contract's input channels, the output's with one channel and the
        contract's scale (super-resolution: scale squared times the pixels)."""
        shapes = {INPUT_NAME: max_shape, OUTPUT_NAME: self._contract.output_shape(max_shape)}
        self._stream = self._cuda.stream_create()
        for name, shape in shapes.items():
            nbytes = int(trt.volume(shape)) * np.dtype(np.float32).itemsize
            self._host[name] = self._cuda.malloc_host(nbytes, np.float32)
            self._device[name] = self._cuda.malloc_device(nbytes)
            self._context.set_tensor_address(name, self._device[name])

    def _enqueue(self, shape: tuple[int, ...]) -> None:
        """Queue H2D copy, inference and D2H copy for ``shape`` on the stream."""
        stream = self._stream
        in_bytes = int(np.prod(shape)) * 4
        out_shape = tuple(self._context.get_tensor_shape(OUTPUT_NAME))
        out_bytes = int(np.prod(out_shape)) * 4
        self._cuda.memcpy_htod_async(self._device[INPUT_NAME], self._host[INPUT_NAME], in_bytes, stream)
        if not self._context.execute_async_v3(self._cuda.stream_handle(stream)):
            raise BackendError(f"{self.model_path}: TensorRT execute_async_v3 failed (see log above)")
        self._cuda.memcpy_dtoh_async(self._host[OUTPUT_NAME], self._device[OUTPUT_NAME], out_bytes, stream)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        shape = tuple(batch.shape)
        if not self._context.set_input_shape(INPUT_NAME, shape):
            raise BackendError(f"{self.model_path}: engine rejected input shape {list(shape)}")
        out_shape = tuple(self._context.get_tensor_shape(OUTPUT_NAME))
        if out_shape != self._contract.output_shape(shape):
            # The output buffer is sized by the contract's scale: a larger output would overrun it.
            raise BackendError(f"{self.model_path}: engine output shape {list(out_shape)} for input {list(shape)} "
                               f"does not match the contract's scale {self._contract.scale}; rebuild the engine")
        self._host[INPUT_NAME][: batch.size] = batch.reshape(-1)
        if self.use_cuda_graphs and self._cuda.supports_graphs:
            graph = self._graphs.get(shape)
            if graph is None:
                self._enqueue(shape)  # one plain run first lets TensorRT finish lazy setup
                self._cuda.stream_sync(self._stream)
                self._cuda.begin_capture(self._stream)
                self._enqueue(shape)
                graph = self._graphs[shape] = self._cuda.end_capture(self._stream)
            self._cuda.launch_graph(graph, self._stream)
        else:
            self._enqueue(shape)
        self._cuda.stream_sync(self._stream)
        count = int(np.prod(out_shape))
        return self._host[OUTPUT_NAME][:count].reshape(out_shape).copy()

    def _close(self) -> None:
        if self._cuda is None:
            return
        if self._stream is not None:
            self._cuda.stream_sync(self._stream)
        for graph in self._graphs.values():
            self._cuda.destroy_graph(graph)
        for array in self._host.values():
            self._cuda.free_host(array)
        for pointer in self._device.values():
            self._cuda.free_device(pointer)
        if self._stream is not None:
            self._cuda.stream_destroy(self._stream)
        self._graphs, self._host, self._device = {}, {}, {}
        self._context = self._engine = self._stream = None
        self._cuda.shutdown()
        self._cuda = None
