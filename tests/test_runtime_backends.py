"""Backends: ONNX Runtime on the fixture model, backend selection, and the TensorRT checks."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import onnx
import pytest
from runtime_fixtures import make_smoothing_model, reference_smoothing

from runtime.backends import BackendError, ModelNotFoundError, select_backend
from runtime.backends import select as select_module
from runtime.backends import tensorrt_backend
from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from runtime.backends.tensorrt_backend import TensorRTBackend
from runtime.engine_sidecar import write_sidecar
from runtime.model_contract import NOISE_MAP, ModelContract


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_smoothing_model(tmp_path_factory.mktemp("model") / "smooth.onnx", size_multiple=16)


def test_onnxruntime_backend_runs_the_model_and_exposes_its_contract(model):
    with OnnxRuntimeBackend(model, threads=1) as backend:
        assert backend.contract.size_multiple == 16
        assert backend.contract.model_name == "test-smoothing"
        assert backend.constraints.size_multiple == 16 and backend.constraints.max_shape is None
        batch = np.random.default_rng(0).standard_normal((2, 1, 32, 48)).astype(np.float32)
        out = backend.infer(batch)
        assert out.shape == batch.shape and out.dtype == np.float32
        np.testing.assert_allclose(out[1, 0], reference_smoothing(batch[1, 0]), atol=1e-5)
        assert "CPUExecutionProvider" in backend.describe()
    assert not backend.is_open


def test_infer_rejects_shapes_the_model_does_not_take(model):
    with OnnxRuntimeBackend(model) as backend:
        with pytest.raises(BackendError, match="multiples of 16"):
            backend.infer(np.zeros((1, 1, 20, 32), np.float32))
        with pytest.raises(BackendError, match=r"\[N, 1, H, W\]"):
            backend.infer(np.zeros((1, 2, 16, 16), np.float32))


def test_model_without_contract_is_refused(tmp_path, model):
    bare = onnx.load(str(model))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    with pytest.raises(BackendError, match="medclear.format_version"):
        OnnxRuntimeBackend(tmp_path / "bare.onnx").open()


def test_noise_map_model_opens_and_runs_with_two_channels(tmp_path):
    contract = ModelContract(modalities=("*",), noise_conditioning=NOISE_MAP)
    model = make_smoothing_model(tmp_path / "map.onnx", contract=contract)
    with OnnxRuntimeBackend(model, threads=1) as backend:
        assert backend.contract.input_channels == 2 and backend.constraints.channels == 2
        image = np.random.default_rng(1).standard_normal((2, 1, 16, 24)).astype(np.float32)
        out = backend.infer(np.concatenate([image, np.full_like(image, 0.25)], axis=1))
        assert out.shape == (2, 1, 16, 24)
        np.testing.assert_allclose(out[1, 0], reference_smoothing(image[1, 0]) + 0.25, atol=1e-5)
        with pytest.raises(BackendError) as refused:
            backend.infer(image)
    assert str(refused.value) == "input must be [N, 2, H, W] (the image and its noise map), got [2, 1, 16, 24]"


def test_two_channel_batch_to_a_blind_model_is_refused(model):
    with OnnxRuntimeBackend(model) as backend, pytest.raises(BackendError) as refused:
        backend.infer(np.zeros((1, 2, 16, 16), np.float32))
    assert str(refused.value) == "input must be [N, 1, H, W] (the image), got [1, 2, 16, 16]"


def test_model_whose_input_channels_contradict_its_contract_is_refused_when_opened(tmp_path):
    contract = ModelContract(modalities=("*",), noise_conditioning=NOISE_MAP)
    model = make_smoothing_model(tmp_path / "one.onnx", contract=contract, channels=1)
    with pytest.raises(BackendError, match=r"one.onnx: model input 'image' has 1 channel\(s\), its contract "
                                           r"\(noise conditioning 'noise_map'\) says 2; re-export it"):
        OnnxRuntimeBackend(model).open()


def test_select_backend_by_kind_and_override(tmp_path, model):
    assert isinstance(select_backend(model), OnnxRuntimeBackend)
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not really an engine")
    assert isinstance(select_backend(engine), TensorRTBackend)
    with pytest.raises(BackendError, match="TensorRT backend runs engines"):
        select_backend(model, backend="tensorrt")
    with pytest.raises(BackendError, match="not TensorRT engines"):
        select_backend(engine, backend="onnxruntime")
    checkpoint = tmp_path / "x.pt"
    checkpoint.write_bytes(b"")
    with pytest.raises(BackendError, match="unknown model kind"):
        select_backend(checkpoint)
    with pytest.raises(ModelNotFoundError, match="not found"):
        select_backend(tmp_path / "missing.onnx")


def test_default_model_prefers_env_then_fp32_then_int8(tmp_path, monkeypatch, model):
    monkeypatch.delenv(select_module.MODEL_ENV, raising=False)
    with pytest.raises(ModelNotFoundError, match="--model FILE or set MEDCLEAR_MODEL"):
        select_module.default_model(tmp_path)
    (tmp_path / "medclear_student.int8.onnx").write_bytes(b"")
    assert select_module.default_model(tmp_path).name == "medclear_student.int8.onnx"
    (tmp_path / "medclear_student.fp32.onnx").write_bytes(b"")
    assert select_module.default_model(tmp_path).name == "medclear_student.fp32.onnx"
    monkeypatch.setenv(select_module.MODEL_ENV, str(model))
    assert select_module.default_model(tmp_path) == model


def _fake_engine(tmp_path, **record):
    engine = tmp_path / "student.engine"
    engine.write_bytes(b"\x00fake serialized engine")
    info = {
        "tensorrt_version": "10.3.0", "gpu_name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0",
        "precision": "int8", "model_contract": ModelContract().to_metadata(),
        "build_command": "python -m compiler build --onnx student.int8.onnx --precision int8 --out student.engine",
    }
    info.update(record)
    write_sidecar(engine, info)
    return engine


def _fake_tensorrt(monkeypatch, version="10.3.0"):
    """A stand-in tensorrt module whose deserialization must never be reached."""
    fake = types.ModuleType("tensorrt")
    fake.__version__ = version

    def refuse(*_args, **_kwargs):
        raise AssertionError("engine deserialized although the sidecar does not match")

    fake.Logger = types.SimpleNamespace(WARNING=2)
    fake.Runtime = refuse
    monkeypatch.setitem(sys.modules, "tensorrt", fake)


def test_engine_for_another_gpu_is_refused_before_deserializing(tmp_path, monkeypatch):
    engine = _fake_engine(tmp_path)
    _fake_tensorrt(monkeypatch)
    monkeypatch.setattr(tensorrt_backend, "detect_gpu", lambda: ("NVIDIA Jetson Orin", "8.7"))
    with pytest.raises(BackendError) as error:
        TensorRTBackend(engine).open()
    message = str(error.value)
    assert "compute capability 9.0, this GPU is 8.7" in message
    assert "python -m compiler build" in message
    assert "--onnx student.int8.onnx" not in message  # a command read from the sidecar is never shown


def test_engine_for_another_tensorrt_or_edited_file_is_refused(tmp_path, monkeypatch):
    engine = _fake_engine(tmp_path)
    _fake_tensorrt(monkeypatch, version="10.7.0")
    monkeypatch.setattr(tensorrt_backend, "detect_gpu", lambda: ("NVIDIA H100 80GB HBM3", "9.0"))
    with pytest.raises(BackendError, match="built with TensorRT 10.3.0, this machine has 10.7.0"):
        TensorRTBackend(engine).open()
    engine.write_bytes(b"tampered")
    _fake_tensorrt(monkeypatch, version="10.3.0")
    with pytest.raises(BackendError, match="sha256 mismatch"):
        TensorRTBackend(engine).open()


def test_old_tensorrt_and_missing_sidecar_get_clear_messages(tmp_path, monkeypatch):
    engine = _fake_engine(tmp_path)
    _fake_tensorrt(monkeypatch, version="8.4.3")
    with pytest.raises(BackendError, match="TensorRT 8.4.3 is too old"):
        TensorRTBackend(engine).open()
    (tmp_path / "student.engine.json").unlink()
    with pytest.raises(BackendError, match="sidecar missing"):
        TensorRTBackend(engine).open()


def test_contract_is_read_from_the_sidecar(tmp_path):
    engine = _fake_engine(tmp_path, model_contract=ModelContract(size_multiple=32, precision="int8").to_metadata())
    record = json.loads((tmp_path / "student.engine.json").read_text())
    contract = tensorrt_backend.contract_from_sidecar(record, "sidecar")
    assert contract.size_multiple == 32 and contract.precision == "int8"


def _tensorrt_available() -> bool:
    try:
        import tensorrt  # noqa: F401
        from runtime.engine_sidecar import detect_gpu

        detect_gpu()
    except Exception:
        return False
    return True


@pytest.mark.gpu
@pytest.mark.skipif(not _tensorrt_available(), reason="needs an NVIDIA GPU with TensorRT (not on this machine)")
def test_tensorrt_backend_matches_onnxruntime(tmp_path, model):
    """Build an fp32 engine from the fixture model and compare with ONNX Runtime."""
    import subprocess

    engine = tmp_path / "smooth.engine"
    subprocess.run(
        [sys.executable, "-m", "compiler", "build", "--onnx", str(model), "--precision", "fp16",
         "--out", str(engine), "--min", "1x1x16x16", "--opt", "2x1x64x64", "--max", "4x1x256x256"],
        check=True,
    )
    batch = np.random.default_rng(0).standard_normal((2, 1, 64, 96)).astype(np.float32)
    with OnnxRuntimeBackend(model) as reference:
        expected = reference.infer(batch)
    for graphs in (False, True):
        with TensorRTBackend(engine, use_cuda_graphs=graphs) as backend:
            assert backend.constraints.max_shape == (4, 1, 256, 256)
            np.testing.assert_allclose(backend.infer(batch), expected, atol=2e-2)
            np.testing.assert_allclose(backend.infer(batch[:1]), expected[:1], atol=2e-2)
