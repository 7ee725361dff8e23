"""TensorRTBackend and runtime/backends/cuda_memory.py on a fake GPU (tests/fakes): no GPU needed.

The engine is built by ``compiler.build.build`` on the fake TensorRT (a real sidecar), opened by
the real backend over the fake cuda-python, and its output compared with ONNX Runtime running
the same ONNX. The fake GPU runs queued work only at a stream synchronize, so wrong ordering,
missing synchronization, buffers sized for the wrong shape or a graph replayed for the wrong
shape all give wrong numbers, not just wrong call logs.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from fakes.fake_cuda import Call
from fakes.machine import FakeMachine, build_engine, install_machine
from onnx_fixtures import write_tiny_onnx
from runtime_fixtures import make_smoothing_model

from runtime.backends import BackendError
from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from runtime.backends.tensorrt_backend import TensorRTBackend
from runtime.engine_sidecar import read_sidecar, write_sidecar
from runtime.model_contract import NOISE_MAP, ModelContract

PROFILE = ((1, 1, 16, 16), (1, 1, 32, 32), (2, 1, 64, 48))
MAX_BYTES = 2 * 64 * 48 * 4  # float32 elements of the profile's max shape


@pytest.fixture()
def machine(monkeypatch) -> FakeMachine:
    return install_machine(monkeypatch)


@pytest.fixture()
def model(tmp_path):
    return write_tiny_onnx(tmp_path / "tiny.fp32.onnx")


@pytest.fixture()
def engine(tmp_path, machine, model):
    return build_engine(tmp_path / "tiny.engine", model, PROFILE)


def _batch(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _reference(model, batch) -> np.ndarray:
    with OnnxRuntimeBackend(model, threads=1) as backend:
        return backend.infer(batch)


def _calls(machine: FakeMachine, name: str) -> list[Call]:
    return [c for c in machine.gpu.calls if c.name == name]


def test_pinned_and_device_buffers_are_allocated_once_for_the_largest_profile_shape(machine, engine, model):
    with TensorRTBackend(engine) as backend:
        assert backend.constraints.min_shape == PROFILE[0] and backend.constraints.max_shape == PROFILE[2]
        for seed, shape in enumerate([(1, 1, 16, 16), (2, 1, 64, 48), (1, 1, 32, 24)]):
            batch = _batch(shape, seed)
            np.testing.assert_allclose(backend.infer(batch), _reference(model, batch), atol=1e-6)
    assert [c.detail["size"] for c in _calls(machine, "cudaMallocHost")] == [MAX_BYTES, MAX_BYTES]
    assert [c.detail["size"] for c in _calls(machine, "cudaMalloc")] == [MAX_BYTES, MAX_BYTES]
    pinned = {c.detail["ptr"] for c in _calls(machine, "cudaFreeHost")}
    host_ends = {c.detail["src"] if c.detail["direction"] == "htod" else c.detail["dst"]
                 for c in _calls(machine, "cudaMemcpyAsync")}
    assert host_ends <= pinned, "every copy must use the pinned buffers allocated at open()"


def test_a_noise_map_engine_takes_two_channels_into_buffers_sized_for_them_and_returns_one(machine, tmp_path):
    contract = ModelContract(modalities=("*",), noise_conditioning=NOISE_MAP)
    model = make_smoothing_model(tmp_path / "map.onnx", contract=contract)
    engine = build_engine(tmp_path / "map.engine", model, PROFILE)  # the image's shapes (C=1), as jetson/ gives them
    assert read_sidecar(engine)["profile"]["max"] == [2, 2, 64, 48]
    with TensorRTBackend(engine) as backend:
        assert backend.constraints.max_shape == (2, 2, 64, 48) and backend.constraints.channels == 2
        for seed, shape in enumerate([(2, 2, 64, 48), (1, 2, 16, 32)]):
            batch = _batch(shape, seed)
            out = backend.infer(batch)
            assert out.shape == (shape[0], 1, *shape[2:])
            np.testing.assert_allclose(out, _reference(model, batch), atol=1e-6)
        with pytest.raises(BackendError, match=r"input must be \[N, 2, H, W\] \(the image and its noise map\)"):
            backend.infer(_batch((1, 1, 32, 32)))
    assert [c.detail["size"] for c in _calls(machine, "cudaMallocHost")] == [2 * MAX_BYTES, MAX_BYTES]


def test_an_engine_whose_profile_contradicts_the_contracts_channels_is_refused(machine, tmp_path, engine):
    record = read_sidecar(engine)
    record["model_contract"] = ModelContract(noise_conditioning=NOISE_MAP).to_metadata()
    write_sidecar(engine, record)
    with pytest.raises(BackendError, match=r"does not take the contract's 2 input channel\(s\); rebuild the engine"):
        TensorRTBackend(engine).open()
    assert machine.gpu.leaks() == {}


def test_each_call_is_h2d_then_execute_then_d2h_then_sync_on_one_stream(machine, engine, model):
    batch = _batch((2, 1, 32, 40))
    with TensorRTBackend(engine) as backend:
        (created,) = _calls(machine, "cudaStreamCreate")
        machine.gpu.calls.clear()
        machine.gpu.ran.clear()
        out = backend.infer(batch)
        calls = list(machine.gpu.calls)
    np.testing.assert_allclose(out, _reference(model, batch), atol=1e-6)
    assert [c.name for c in calls] == [
        "set_input_shape", "cudaMemcpyAsync", "execute_async_v3", "cudaMemcpyAsync", "cudaStreamSynchronize"]
    assert [c.detail.get("direction") for c in calls if c.name == "cudaMemcpyAsync"] == ["htod", "dtoh"]
    assert {c.stream for c in calls if c.stream is not None} == {created.stream}
    assert machine.gpu.ran == ["memcpy_htod", "execute", "memcpy_dtoh"]
    assert [c.detail["count"] for c in calls if c.name == "cudaMemcpyAsync"] == [batch.nbytes, out.nbytes]


def test_shapes_change_within_the_profile_and_are_refused_outside_it(machine, engine, model):
    with TensorRTBackend(engine) as backend:
        for seed, shape in enumerate([(1, 1, 48, 32), (2, 1, 16, 48), (1, 1, 48, 32)]):
            batch = _batch(shape, seed)
            np.testing.assert_allclose(backend.infer(batch), _reference(model, batch), atol=1e-6)
        machine.gpu.calls.clear()
        for outside in [(3, 1, 32, 32), (1, 1, 64, 64), (1, 1, 8, 16)]:
            with pytest.raises(BackendError, match="outside the model's range"):
                backend.infer(np.zeros(outside, np.float32))
        assert machine.gpu.calls == [], "a refused shape must not reach the engine"
        batch = _batch((1, 1, 16, 16), 9)
        np.testing.assert_allclose(backend.infer(batch), _reference(model, batch), atol=1e-6)


def test_cuda_graphs_are_captured_once_per_shape_and_replayed(machine, engine, model):
    shapes = [(1, 1, 32, 32), (1, 1, 32, 32), (2, 1, 16, 48), (1, 1, 32, 32), (2, 1, 16, 48)]
    with TensorRTBackend(engine, use_cuda_graphs=True) as backend:
        assert "CUDA graphs" in backend.describe() and "cuda-python" in backend.describe()
        for seed, shape in enumerate(shapes):
            batch = _batch(shape, seed)
            np.testing.assert_allclose(backend.infer(batch), _reference(model, batch), atol=1e-6)
    assert len(_calls(machine, "cudaStreamBeginCapture")) == 2, "one capture per distinct shape"
    assert len(_calls(machine, "cudaGraphInstantiate")) == 2
    launched = [c.detail["graph"] for c in _calls(machine, "cudaGraphLaunch")]
    assert len(launched) == len(shapes) and launched[0] == launched[1] == launched[3] != launched[2] == launched[4]
    assert sorted(c.detail["graph"] for c in _calls(machine, "cudaGraphExecDestroy")) == sorted(set(launched))


@pytest.mark.parametrize("graphs", [False, True], ids=["plain", "cuda-graphs"])
def test_close_frees_buffers_stream_and_graphs(machine, engine, graphs):
    backend = TensorRTBackend(engine, use_cuda_graphs=graphs).open()
    backend.infer(_batch((1, 1, 32, 32)))
    assert machine.gpu.leaks()
    backend.close()
    assert machine.gpu.leaks() == {}, "close() must free everything open() and infer() allocated"
    assert not backend.is_open
    assert len(_calls(machine, "cudaFreeHost")) == 2 and len(_calls(machine, "cudaFree")) == 2
    backend.close()  # idempotent
    assert len(_calls(machine, "cudaFree")) == 2


def test_out_of_device_memory_is_a_backend_error_and_frees_what_was_allocated(monkeypatch, tmp_path, model):
    machine = install_machine(monkeypatch, memory_limit=MAX_BYTES + 1)  # room for the input buffer only
    engine = build_engine(tmp_path / "tiny.engine", model, PROFILE)
    with pytest.raises(BackendError, match="CUDA error 2: out of memory"):
        TensorRTBackend(engine).open()
    assert machine.gpu.leaks() == {}


def test_older_cuda_python_layout_works_and_no_binding_is_a_clear_error(monkeypatch, tmp_path, model):
    machine = install_machine(monkeypatch, cuda_layout="cudart")
    engine = build_engine(tmp_path / "tiny.engine", model, PROFILE)
    batch = _batch((1, 1, 32, 32))
    with TensorRTBackend(engine, use_cuda_graphs=True) as backend:
        np.testing.assert_allclose(backend.infer(batch), _reference(model, batch), atol=1e-6)
    assert machine.gpu.leaks() == {}
    for name in ("cuda", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(BackendError, match=r"no CUDA Python binding installed .*pip install cuda-python"):
        TensorRTBackend(engine).open()


def test_engine_that_does_not_deserialize_is_refused(machine, engine):
    engine.write_bytes(b"not a plan")
    write_sidecar(engine, read_sidecar(engine))  # same record, new sha256: only TensorRT can tell
    with pytest.raises(BackendError, match="could not deserialize the engine; rebuild it"):
        TensorRTBackend(engine).open()
    assert machine.gpu.leaks() == {}


def test_version_compatible_and_dla_engines_configure_the_runtime(monkeypatch, tmp_path, model):
    machine = install_machine(monkeypatch, dla_cores=2)
    fixed = (PROFILE[1],) * 3
    engine = build_engine(tmp_path / "dla.engine", model, fixed, dla_core=1, version_compatible=True)
    with TensorRTBackend(engine):
        (runtime,) = machine.trt.runtimes
    assert runtime.engine_host_code_allowed and runtime.DLA_core == 1
