"""A fake GPU and a fake cuda-python runtime module (``cuda.bindings.runtime``) over it.

:func:`make_cudart` returns a module whose functions have cuda-python's names and parameter
names and return its ``(cudaError_t, value...)`` tuples; its enums and handle classes have the
real names. The GPU it drives behaves like one where the TensorRT backend depends on it:

* device memory is numpy bytes at fake addresses; pinned host memory is real host memory (the
  backend wraps it in numpy arrays);
* copies and kernels (enqueued by the fake TensorRT context) queue on their stream and run, in
  order, at ``cudaStreamSynchronize``: a missing synchronize or a D2H copy queued before the
  kernel yields stale output;
* a copy must stay inside its allocations and use pinned host memory (the backend's contract;
  real CUDA would fall back to a slow synchronous copy for pageable memory);
* between ``cudaStreamBeginCapture`` and ``cudaStreamEndCapture`` work is recorded into a graph
  instead of run; a launched graph replays it exactly as captured (tensor shapes included);
* a fault inside queued work (an access outside an allocation) is reported by the next
  synchronize as ``cudaErrorIllegalAddress``.
"""

from __future__ import annotations

import ctypes
import itertools
import sys
import types
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Callable

import numpy as np
import pytest

DEVICE_BASE = 0x7F00_0000_0000  # fake device addresses start here, far from host memory


class cudaError_t(IntEnum):  # noqa: N801 - cuda-python's names
    """The error codes the fake returns (values as in CUDA's headers)."""

    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorInvalidResourceHandle = 400
    cudaErrorIllegalAddress = 700
    cudaErrorStreamCaptureUnsupported = 900


ERROR_TEXT = {
    cudaError_t.cudaSuccess: b"no error",
    cudaError_t.cudaErrorInvalidValue: b"invalid argument",
    cudaError_t.cudaErrorMemoryAllocation: b"out of memory",
    cudaError_t.cudaErrorInvalidResourceHandle: b"invalid resource handle",
    cudaError_t.cudaErrorIllegalAddress: b"an illegal memory access was encountered",
    cudaError_t.cudaErrorStreamCaptureUnsupported: b"operation not permitted when stream is capturing",
}


class cudaMemcpyKind(IntEnum):  # noqa: N801
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2
    cudaMemcpyDeviceToDevice = 3
    cudaMemcpyDefault = 4


class cudaStreamCaptureMode(IntEnum):  # noqa: N801
    cudaStreamCaptureModeGlobal = 0
    cudaStreamCaptureModeThreadLocal = 1
    cudaStreamCaptureModeRelaxed = 2


class _Handle:
    """An opaque CUDA handle: ``int(handle)`` is its value, as in cuda-python."""

    def __init__(self, init_value: int = 0) -> None:
        self._value = int(init_value)

    def __int__(self) -> int:
        return self._value

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._value:#x}>"


class cudaStream_t(_Handle):  # noqa: N801
    """A stream handle."""


class cudaGraph_t(_Handle):  # noqa: N801
    """A captured graph."""


class cudaGraphExec_t(_Handle):  # noqa: N801
    """An instantiated (launchable) graph."""


class Fault(Exception):
    """Queued work touched memory outside its allocations (a GPU would report an illegal address)."""


@dataclass(frozen=True)
class Call:
    """One call the GPU saw: the API function, its stream handle (or None) and details."""

    name: str
    stream: int | None = None
    detail: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Work:
    """Work queued on a stream: what it is (for the call log) and what it does when it runs."""

    name: str
    run: Callable[[], None]


class FakeGpu:
    """Device memory, streams and graphs; the call log and leak report tests inspect."""

    def __init__(self, memory_limit: int | None = None) -> None:
        self.memory_limit = memory_limit
        self.calls: list[Call] = []
        self.pinned: dict[int, ctypes.Array] = {}
        self.device: dict[int, np.ndarray] = {}
        self.streams: dict[int, list[Work]] = {}
        self.capturing: dict[int, list[Work]] = {}
        self.graphs: dict[int, list[Work]] = {}
        self.executables: dict[int, list[Work]] = {}
        self.ran: list[str] = []  # names of work in the order it ran
        self._freed_pinned: list[ctypes.Array] = []  # kept alive: a stale numpy view must not crash
        self._handles = itertools.count(0x1000)
        self._next_device = DEVICE_BASE

    # -- bookkeeping --------------------------------------------------------------------
    def record(self, name: str, stream: Any = None, /, **detail: Any) -> None:
        """Append one call to the log."""
        self.calls.append(Call(name, None if stream is None else int(stream), detail))

    def names(self, stream: int | None = None) -> list[str]:
        """The logged call names (on ``stream`` only, if given)."""
        return [c.name for c in self.calls if stream is None or c.stream == stream]

    def leaks(self) -> dict[str, int]:
        """What is still allocated: pinned buffers, device buffers, streams, graphs (empty if none)."""
        counts = {"pinned": len(self.pinned), "device": len(self.device), "streams": len(self.streams),
                  "graphs": len(self.graphs), "graph executables": len(self.executables)}
        return {kind: count for kind, count in counts.items() if count}

    def new_handle(self) -> int:
        return next(self._handles)

    # -- memory -------------------------------------------------------------------------
    def alloc_pinned(self, size: int) -> int:
        buffer = (ctypes.c_ubyte * size)()
        address = ctypes.addressof(buffer)
        self.pinned[address] = buffer
        return address

    def free_pinned(self, address: int) -> bool:
        buffer = self.pinned.pop(address, None)
        if buffer is not None:
            self._freed_pinned.append(buffer)
        return buffer is not None

    def alloc_device(self, size: int) -> int | None:
        used = sum(a.size for a in self.device.values())
        if self.memory_limit is not None and used + size > self.memory_limit:
            return None
        address = self._next_device
        self._next_device += (size + 0xFFFF) // 0x10000 * 0x10000 + 0x10000  # 64 KiB aligned, with a gap
        self.device[address] = np.zeros(size, np.uint8)
        return address

    def device_view(self, address: int, size: int) -> np.ndarray:
        """Bytes ``[address, address + size)`` of one device allocation; Fault if outside every one."""
        return self._view(self.device, address, size, lambda base, buffer: buffer, "device")

    def pinned_view(self, address: int, size: int) -> np.ndarray:
        """Bytes ``[address, address + size)`` of one pinned allocation; Fault if outside every one."""
        return self._view(self.pinned, address, size, lambda base, buffer: np.ctypeslib.as_array(buffer), "pinned")

    @staticmethod
    def _view(table: dict, address: int, size: int, as_array: Callable, kind: str) -> np.ndarray:
        for base, buffer in table.items():
            array = as_array(base, buffer)
            if base <= address and address + size <= base + array.size:
                return array[address - base : address - base + size]
        raise Fault(f"{size} bytes at {address:#x} are not inside one {kind} allocation")

    # -- streams and graphs ---------------------------------------------------------------
    def enqueue(self, stream: int, work: Work) -> bool:
        """Queue ``work`` on ``stream`` (or record it into the graph being captured); False if no such stream."""
        if stream in self.capturing:
            self.capturing[stream].append(work)
        elif stream in self.streams:
            self.streams[stream].append(work)
        else:
            return False
        return True

    def synchronize(self, stream: int) -> cudaError_t:
        """Run what is queued on ``stream``, in order."""
        if stream not in self.streams:
            return cudaError_t.cudaErrorInvalidResourceHandle
        if stream in self.capturing:
            return cudaError_t.cudaErrorStreamCaptureUnsupported
        queued, self.streams[stream] = self.streams[stream], []
        for work in queued:
            try:
                work.run()
            except Fault:
                return cudaError_t.cudaErrorIllegalAddress
            self.ran.append(work.name)
        return cudaError_t.cudaSuccess


class _RuntimeApi:
    """The cuda-python runtime functions, bound to one FakeGpu (same names and parameters)."""

    def __init__(self, gpu: FakeGpu) -> None:
        self.gpu = gpu

    def cudaGetErrorString(self, error):  # noqa: N802
        return (cudaError_t.cudaSuccess, ERROR_TEXT.get(error, b"unknown error"))

    def cudaMallocHost(self, size):  # noqa: N802
        self.gpu.record("cudaMallocHost", size=size)
        return (cudaError_t.cudaSuccess, self.gpu.alloc_pinned(size))

    def cudaFreeHost(self, ptr):  # noqa: N802
        self.gpu.record("cudaFreeHost", ptr=int(ptr))
        ok = self.gpu.free_pinned(int(ptr))
        return (cudaError_t.cudaSuccess if ok else cudaError_t.cudaErrorInvalidValue,)

    def cudaMalloc(self, size):  # noqa: N802
        self.gpu.record("cudaMalloc", size=size)
        address = self.gpu.alloc_device(size)
        if address is None:
            return (cudaError_t.cudaErrorMemoryAllocation, None)
        return (cudaError_t.cudaSuccess, address)

    def cudaFree(self, devPtr):  # noqa: N802, N803
        self.gpu.record("cudaFree", ptr=int(devPtr))
        ok = self.gpu.device.pop(int(devPtr), None) is not None
        return (cudaError_t.cudaSuccess if ok else cudaError_t.cudaErrorInvalidValue,)

    def cudaStreamCreate(self):  # noqa: N802
        handle = self.gpu.new_handle()
        self.gpu.streams[handle] = []
        self.gpu.record("cudaStreamCreate", handle)
        return (cudaError_t.cudaSuccess, cudaStream_t(handle))

    def cudaStreamSynchronize(self, stream):  # noqa: N802
        self.gpu.record("cudaStreamSynchronize", stream)
        return (self.gpu.synchronize(int(stream)),)

    def cudaStreamDestroy(self, stream):  # noqa: N802
        self.gpu.record("cudaStreamDestroy", stream)
        ok = self.gpu.streams.pop(int(stream), None) is not None
        return (cudaError_t.cudaSuccess if ok else cudaError_t.cudaErrorInvalidResourceHandle,)

    def cudaMemcpyAsync(self, dst, src, count, kind, stream):  # noqa: N802
        """Check both ends now (as CUDA does for bad pointers), copy when the stream runs."""
        direction = {cudaMemcpyKind.cudaMemcpyHostToDevice: "htod", cudaMemcpyKind.cudaMemcpyDeviceToHost: "dtoh"}
        if kind not in direction:
            return (cudaError_t.cudaErrorInvalidValue,)
        to_device = kind == cudaMemcpyKind.cudaMemcpyHostToDevice
        try:
            target = (self.gpu.device_view if to_device else self.gpu.pinned_view)(int(dst), count)
            source = (self.gpu.pinned_view if to_device else self.gpu.device_view)(int(src), count)
        except Fault:
            return (cudaError_t.cudaErrorInvalidValue,)

        def copy() -> None:
            target[:] = source

        self.gpu.record("cudaMemcpyAsync", stream, direction=direction[kind], count=count, dst=int(dst), src=int(src))
        if not self.gpu.enqueue(int(stream), Work(f"memcpy_{direction[kind]}", copy)):
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        return (cudaError_t.cudaSuccess,)

    def cudaStreamBeginCapture(self, stream, mode):  # noqa: N802
        self.gpu.record("cudaStreamBeginCapture", stream, mode=mode)
        if int(stream) not in self.gpu.streams:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        self.gpu.capturing[int(stream)] = []
        return (cudaError_t.cudaSuccess,)

    def cudaStreamEndCapture(self, stream):  # noqa: N802
        self.gpu.record("cudaStreamEndCapture", stream)
        captured = self.gpu.capturing.pop(int(stream), None)
        if captured is None:
            return (cudaError_t.cudaErrorInvalidValue, None)
        handle = self.gpu.new_handle()
        self.gpu.graphs[handle] = captured
        return (cudaError_t.cudaSuccess, cudaGraph_t(handle))

    def cudaGraphInstantiate(self, graph, flags):  # noqa: N802
        self.gpu.record("cudaGraphInstantiate", graph=int(graph))
        if int(graph) not in self.gpu.graphs:
            return (cudaError_t.cudaErrorInvalidValue, None)
        handle = self.gpu.new_handle()
        self.gpu.executables[handle] = list(self.gpu.graphs[int(graph)])
        return (cudaError_t.cudaSuccess, cudaGraphExec_t(handle))

    def cudaGraphDestroy(self, graph):  # noqa: N802
        self.gpu.record("cudaGraphDestroy", graph=int(graph))
        ok = self.gpu.graphs.pop(int(graph), None) is not None
        return (cudaError_t.cudaSuccess if ok else cudaError_t.cudaErrorInvalidValue,)

    def cudaGraphLaunch(self, graphExec, stream):  # noqa: N802, N803
        self.gpu.record("cudaGraphLaunch", stream, graph=int(graphExec))
        work = self.gpu.executables.get(int(graphExec))
        if work is None:
            return (cudaError_t.cudaErrorInvalidValue,)
        for item in work:
            self.gpu.enqueue(int(stream), item)
        return (cudaError_t.cudaSuccess,)

    def cudaGraphExecDestroy(self, graphExec):  # noqa: N802, N803
        self.gpu.record("cudaGraphExecDestroy", graph=int(graphExec))
        ok = self.gpu.executables.pop(int(graphExec), None) is not None
        return (cudaError_t.cudaSuccess if ok else cudaError_t.cudaErrorInvalidValue,)


FUNCTIONS = tuple(name for name in vars(_RuntimeApi) if name.startswith("cuda"))
TYPES = (cudaError_t, cudaMemcpyKind, cudaStreamCaptureMode, cudaStream_t, cudaGraph_t, cudaGraphExec_t)


def make_cudart(gpu: FakeGpu, name: str = "cuda.bindings.runtime") -> types.ModuleType:
    """A ``cuda.bindings.runtime`` stand-in over ``gpu``: only real cuda-python names."""
    module = types.ModuleType(name)
    api = _RuntimeApi(gpu)
    for function in FUNCTIONS:
        setattr(module, function, getattr(api, function))
    for kind in TYPES:
        setattr(module, kind.__name__, kind)
    return module


def install_cudart(monkeypatch: pytest.MonkeyPatch, gpu: FakeGpu, layout: str = "bindings") -> types.ModuleType:
    """Make ``import cuda.bindings.runtime`` (``layout="bindings"``, cuda-python >= 12.6) or only
    ``from cuda import cudart`` (``"cudart"``, older releases) find the fake; pycuda is hidden."""
    package = types.ModuleType("cuda")
    package.__path__ = []  # a package, so submodule imports resolve through sys.modules
    if layout == "bindings":
        module = make_cudart(gpu)
        bindings = types.ModuleType("cuda.bindings")
        bindings.__path__ = []
        bindings.runtime = module
        modules = {"cuda.bindings": bindings, "cuda.bindings.runtime": module, "cuda.cudart": None}
    else:
        module = make_cudart(gpu, "cuda.cudart")
        package.cudart = module
        modules = {"cuda.bindings": None, "cuda.bindings.runtime": None, "cuda.cudart": module}
    for key, value in {"cuda": package, **modules, "pycuda": None, "pycuda.driver": None}.items():
        monkeypatch.setitem(sys.modules, key, value)
    return module
