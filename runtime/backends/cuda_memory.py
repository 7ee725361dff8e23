"""The few CUDA calls the TensorRT backend needs, over whichever binding is installed.

cuda-python (``cuda.bindings.runtime``, formerly ``cuda.cudart``; what TensorRT's own samples
use) is preferred; pycuda (common on Jetson) is the fallback. Both are imported lazily, only
when a TensorRT engine is opened. Device pointers are plain ints, streams are opaque objects,
pinned host buffers are numpy arrays. CUDA graphs are offered only through cuda-python.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from runtime.backends.base import BackendError


class CudaError(BackendError):
    """A CUDA call failed, or no CUDA Python binding is installed (a BackendError: one clean line)."""


class _CudaPython:
    """cuda-python runtime API (``cudaMallocHost``, ``cudaMemcpyAsync``, ...)."""

    name = "cuda-python"
    supports_graphs = True

    def __init__(self) -> None:
        try:
            from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        except ImportError:
            from cuda import cudart  # older cuda-python
        self.cudart = cudart

    def _call(self, result: tuple) -> Any:
        error, *values = result
        if error != self.cudart.cudaError_t.cudaSuccess:
            _, text = self.cudart.cudaGetErrorString(error)
            raise CudaError(f"CUDA error {int(error)}: {text.decode() if isinstance(text, bytes) else text}")
        return values[0] if len(values) == 1 else tuple(values)

    def malloc_host(self, nbytes: int, dtype: np.dtype) -> np.ndarray:
        pointer = self._call(self.cudart.cudaMallocHost(nbytes))
        raw = (ctypes.c_byte * nbytes).from_address(int(pointer))
        return np.frombuffer(raw, dtype=dtype)

    def free_host(self, array: np.ndarray) -> None:
        self._call(self.cudart.cudaFreeHost(array.ctypes.data))

    def malloc_device(self, nbytes: int) -> int:
        return int(self._call(self.cudart.cudaMalloc(nbytes)))

    def free_device(self, pointer: int) -> None:
        self._call(self.cudart.cudaFree(pointer))

    def stream_create(self) -> Any:
        return self._call(self.cudart.cudaStreamCreate())

    def stream_handle(self, stream: Any) -> int:
        return int(stream)

    def stream_sync(self, stream: Any) -> None:
        self._call(self.cudart.cudaStreamSynchronize(stream))

    def stream_destroy(self, stream: Any) -> None:
        self._call(self.cudart.cudaStreamDestroy(stream))

    def memcpy_htod_async(self, device: int, host: np.ndarray, nbytes: int, stream: Any) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call(self.cudart.cudaMemcpyAsync(device, host.ctypes.data, nbytes, kind, stream))

    def memcpy_dtoh_async(self, host: np.ndarray, device: int, nbytes: int, stream: Any) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call(self.cudart.cudaMemcpyAsync(host.ctypes.data, device, nbytes, kind, stream))

    def begin_capture(self, stream: Any) -> None:
        mode = self.cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        self._call(self.cudart.cudaStreamBeginCapture(stream, mode))

    def end_capture(self, stream: Any) -> Any:
        graph = self._call(self.cudart.cudaStreamEndCapture(stream))
        executable = self._call(self.cudart.cudaGraphInstantiate(graph, 0))
        self._call(self.cudart.cudaGraphDestroy(graph))
        return executable

    def launch_graph(self, executable: Any, stream: Any) -> None:
        self._call(self.cudart.cudaGraphLaunch(executable, stream))

    def destroy_graph(self, executable: Any) -> None:
        self._call(self.cudart.cudaGraphExecDestroy(executable))

    def shutdown(self) -> None:
        """Nothing to release: the runtime API uses the device's primary context."""


class _PyCuda:
    """pycuda driver API, on the device's primary context (shared with TensorRT)."""

    name = "pycuda"
    supports_graphs = False

    def __init__(self) -> None:
        import pycuda.driver as driver

        self.driver = driver
        driver.init()
        self.device = driver.Device(0)
        self.context = self.device.retain_primary_context()
        self.context.push()
        self._host_arrays: dict[int, Any] = {}
        self._device_arrays: dict[int, Any] = {}

    def malloc_host(self, nbytes: int, dtype: np.dtype) -> np.ndarray:
        array = self.driver.pagelocked_empty(nbytes // np.dtype(dtype).itemsize, dtype)
        self._host_arrays[array.ctypes.data] = array
        return array

    def free_host(self, array: np.ndarray) -> None:
        self._host_arrays.pop(array.ctypes.data, None)

    def malloc_device(self, nbytes: int) -> int:
        allocation = self.driver.mem_alloc(nbytes)
        self._device_arrays[int(allocation)] = allocation
        return int(allocation)

    def free_device(self, pointer: int) -> None:
        allocation = self._device_arrays.pop(pointer, None)
        if allocation is not None:
            allocation.free()

    def stream_create(self) -> Any:
        return self.driver.Stream()

    def stream_handle(self, stream: Any) -> int:
        return int(stream.handle)

    def stream_sync(self, stream: Any) -> None:
        stream.synchronize()

    def stream_destroy(self, stream: Any) -> None:
        """pycuda frees the stream with its Python object."""

    def memcpy_htod_async(self, device: int, host: np.ndarray, nbytes: int, stream: Any) -> None:
        self.driver.memcpy_htod_async(device, host.reshape(-1).view(np.uint8)[:nbytes], stream)

    def memcpy_dtoh_async(self, host: np.ndarray, device: int, nbytes: int, stream: Any) -> None:
        self.driver.memcpy_dtoh_async(host.reshape(-1).view(np.uint8)[:nbytes], device, stream)

    def shutdown(self) -> None:
        self.context.pop()


def load_cuda() -> _CudaPython | _PyCuda:
    """The installed binding: cuda-python first, then pycuda; CudaError if neither."""
    problems = []
    for binding in (_CudaPython, _PyCuda):
        try:
            return binding()
        except ImportError as error:
            problems.append(f"{binding.name}: {error}")
    raise CudaError(
        "no CUDA Python binding installed (need cuda-python or pycuda): " + "; ".join(problems)
        + ". Install with `pip install cuda-python` (or pycuda on Jetson)."
    )
