"""The TensorRT backend's CUDA side on a real GPU, without TensorRT.

TensorRT cannot be installed on the GPU machines this project is lent (docs/BENCHMARKS.md), but
the pinned host buffers, device buffers, the one stream, the async copies and the CUDA graph
capture/replay of ``runtime.backends.tensorrt_backend`` are plain CUDA. Here the engine is a
stand-in whose ``execute_async_v3`` enqueues real device work on the backend's stream (a
device-to-device copy of the input and a fill of the rest of the output), so everything the
backend does around TensorRT runs for real: allocation for the profile's largest shape
(super-resolution output included), H2D -> execute -> D2H ordering on one stream, graph replay
with new inputs, and freeing.
"""

from __future__ import annotations

import shutil
import struct

import numpy as np
import pytest

from runtime.backends.base import InputConstraints
from runtime.backends.tensorrt_backend import TensorRTBackend
from runtime.model_contract import INPUT_NAME, OUTPUT_NAME, ModelContract


def _cuda_skip_reason() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return "no NVIDIA GPU on this machine"
    try:
        from cuda.bindings import runtime  # noqa: F401
    except ImportError:
        try:
            from cuda import cudart  # noqa: F401
        except ImportError:
            return "needs an NVIDIA GPU with cuda-python (pip install cuda-python)"
    return None


SKIP_REASON = _cuda_skip_reason()
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(SKIP_REASON is not None, reason=str(SKIP_REASON))]

FILL_BYTE = 0x40  # every output byte the stand-in does not copy: float32 0x40404040
FILL_VALUE = struct.unpack("<f", bytes([FILL_BYTE] * 4))[0]


class _FakeTrt:
    """The one helper of the ``tensorrt`` module that ``_allocate`` uses."""

    @staticmethod
    def volume(shape: tuple[int, ...]) -> int:
        return int(np.prod(shape))


class _StandInContext:
    """An execution context whose inference is a copy of the input into the output's first
    elements and a fill of the rest, both enqueued on the stream it is given."""

    def __init__(self, cudart: object, contract: ModelContract) -> None:
        self.cudart, self.contract = cudart, contract
        self.addresses: dict[str, int] = {}
        self.shape: tuple[int, ...] = ()

    def set_tensor_address(self, name: str, pointer: int) -> bool:
        self.addresses[name] = pointer
        return True

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        assert name == INPUT_NAME
        self.shape = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self.shape if name == INPUT_NAME else self.contract.output_shape(self.shape)

    def execute_async_v3(self, stream: int) -> bool:
        cudart = self.cudart
        in_bytes = int(np.prod(self.shape)) * 4
        out_bytes = int(np.prod(self.contract.output_shape(self.shape))) * 4
        source, target = self.addresses[INPUT_NAME], self.addresses[OUTPUT_NAME]
        copy = cudart.cudaMemcpyAsync(target, source, in_bytes, cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice, stream)
        fill = cudart.cudaMemsetAsync(target + in_bytes, FILL_BYTE, out_bytes - in_bytes, stream)
        return copy[0] == cudart.cudaError_t.cudaSuccess and fill[0] == cudart.cudaError_t.cudaSuccess


class _StandInBackend(TensorRTBackend):
    """The real backend with ``_open`` replaced: no engine file, no TensorRT."""

    def __init__(self, scale: int, max_shape: tuple[int, ...], use_cuda_graphs: bool) -> None:
        super().__init__("stand-in.engine", use_cuda_graphs=use_cuda_graphs)
        self.scale, self.max_shape = scale, max_shape

    def _check_source(self) -> None:
        """No file behind the stand-in."""

    def _open(self) -> None:
        from runtime.backends.cuda_memory import load_cuda

        self._contract = ModelContract(scale=self.scale, task="sr2" if self.scale == 2 else "denoise")
        self._constraints = InputConstraints(INPUT_NAME, 8, (1, 1, 8, 8), self.max_shape, 1)
        self._cuda = load_cuda()
        self._context = _StandInContext(self._cuda.cudart, self._contract)
        self._allocate(_FakeTrt, self.max_shape)
        self.captures = 0
        begin_capture = self._cuda.begin_capture

        def counted(stream: object) -> None:  # graphs must be captured once per shape, then replayed
            self.captures += 1
            begin_capture(stream)

        self._cuda.begin_capture = counted


def _expected(batch: np.ndarray, scale: int) -> np.ndarray:
    n, _, h, w = batch.shape
    flat = np.full(n * h * w * scale * scale, FILL_VALUE, dtype=np.float32)
    flat[: batch.size] = batch.reshape(-1)
    return flat.reshape(n, 1, h * scale, w * scale)


def test_pinned_buffers_round_trip_through_the_device():
    from runtime.backends.cuda_memory import load_cuda

    cuda = load_cuda()
    assert cuda.name == "cuda-python" and cuda.supports_graphs
    nbytes = 3 * 256 * 256 * 4
    host_in, host_out = cuda.malloc_host(nbytes, np.float32), cuda.malloc_host(nbytes, np.float32)
    device, stream = cuda.malloc_device(nbytes), cuda.stream_create()
    try:
        data = np.random.default_rng().standard_normal(host_in.size).astype(np.float32)
        host_in[:] = data
        host_out[:] = np.nan  # poisoned: every element must be written back
        cuda.memcpy_htod_async(device, host_in, nbytes, stream)
        cuda.memcpy_dtoh_async(host_out, device, nbytes, stream)
        cuda.stream_sync(stream)
        np.testing.assert_array_equal(host_out, data)
    finally:
        cuda.stream_destroy(stream)
        cuda.free_device(device)
        cuda.free_host(host_in)
        cuda.free_host(host_out)


@pytest.mark.parametrize("graphs", [False, True], ids=["plain", "cuda-graphs"])
@pytest.mark.parametrize("scale", [1, 2], ids=["denoise", "sr2"])
def test_backend_streams_buffers_and_graphs_on_the_gpu(scale, graphs):
    rng = np.random.default_rng()
    backend = _StandInBackend(scale, (4, 1, 256, 256), use_cuda_graphs=graphs)
    with backend:
        for shape in [(2, 1, 64, 96), (1, 1, 256, 256), (2, 1, 64, 96), (4, 1, 256, 256)]:
            batch = rng.standard_normal(shape).astype(np.float32)
            backend._host[OUTPUT_NAME][:] = np.nan  # poison: the D2H copy must overwrite what is returned
            np.testing.assert_array_equal(backend.infer(batch), _expected(batch, scale))
        assert backend.captures == len(backend._graphs) == (3 if graphs else 0)  # 4 calls, 3 shapes
    assert backend._cuda is None and not backend._host and not backend._device


def test_detect_gpu_names_this_gpu():
    from runtime.engine_sidecar import detect_gpu

    name, capability = detect_gpu()
    assert name and capability.count(".") == 1 and all(part.isdigit() for part in capability.split("."))
