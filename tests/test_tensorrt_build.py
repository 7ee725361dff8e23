"""compiler.build against the fake TensorRT (tests/fakes): profile, parser errors, sidecar, every release.

Unlike the MagicMock tests in test_compiler_build.py, the fake refuses what TensorRT refuses
(a profile with min > opt, a dynamic input without a profile, an 8.x network without
EXPLICIT_BATCH, an ONNX it cannot parse) and only has the names each release has, and the
engine it builds runs in the real TensorRT backend.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from fakes.fake_trt_builder import Plan
from fakes.machine import GPU_NAME, build_engine, install_machine
from onnx_fixtures import tiny_model, write_tiny_onnx

from compiler.__main__ import main
from compiler.build import BuildOptions, build_serialized
from compiler.errors import CompilerError
from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from runtime.backends.tensorrt_backend import TensorRTBackend, contract_from_sidecar
from runtime.engine_sidecar import read_sidecar
from runtime.model_contract import INPUT_NAME

PROFILE = ((1, 1, 16, 16), (1, 1, 32, 32), (2, 1, 64, 48))


@pytest.fixture()
def model(tmp_path):
    return write_tiny_onnx(tmp_path / "tiny.fp32.onnx")


def _unsupported_op_model(path):
    """The tiny model with its ReLU replaced by an operator no kernel library has."""
    model = tiny_model()
    relu = next(node for node in model.graph.node if node.op_type == "Relu")
    relu.op_type, relu.domain = "Frobnicate", "com.example"
    model.opset_import.add(domain="com.example", version=1)
    onnx.save(model, str(path))
    return path


def test_profile_sets_min_opt_max_for_the_input(monkeypatch, tmp_path, model):
    machine = install_machine(monkeypatch)
    engine = build_engine(tmp_path / "tiny.engine", model, PROFILE)
    assert machine.trt.errors == []
    assert Plan.decode(engine.read_bytes()).profiles == {INPUT_NAME: PROFILE}
    low, opt, high = (list(s) for s in PROFILE)
    assert read_sidecar(engine)["profile"] == {"input": INPUT_NAME, "min": low, "opt": opt, "max": high}
    with TensorRTBackend(engine) as backend:
        assert (backend.constraints.min_shape, backend.constraints.max_shape) == (PROFILE[0], PROFILE[2])


def test_opt_only_gives_a_fixed_profile(monkeypatch, tmp_path, model):
    machine = install_machine(monkeypatch)
    options = BuildOptions(onnx_path=model, out=tmp_path / "fixed.engine", precision="fp16", opt=(1, 1, 32, 32))
    plan = Plan.decode(build_serialized(machine.trt.module, options, model))
    assert plan.profiles == {INPUT_NAME: ((1, 1, 32, 32),) * 3}


def test_parser_failure_is_one_line_with_tensorrts_errors(monkeypatch, tmp_path, capsys):
    machine = install_machine(monkeypatch)
    onnx_path = _unsupported_op_model(tmp_path / "odd.onnx")
    code = main(["build", "--onnx", str(onnx_path), "--precision", "fp16", "--out", str(tmp_path / "odd.engine"),
                 "--opt", "1x1x32x32"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert err.startswith(f"error: {onnx_path}: TensorRT could not parse the ONNX: In node 0 (importNode): "
                          "UNSUPPORTED_NODE: ")
    assert "Frobnicate" in err
    assert not (tmp_path / "odd.engine").exists()
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08not protobuf")
    options = BuildOptions(onnx_path=garbage, out=tmp_path / "g.engine", precision="fp16", opt=(1, 1, 32, 32))
    with pytest.raises(CompilerError, match=rf"{garbage}: TensorRT could not parse the ONNX: In node -1 "
                                            rf"\(parseFromFile\): MODEL_DESERIALIZE_FAILED: Failed to parse ONNX"):
        build_serialized(machine.trt.module, options, garbage)


def test_sidecar_holds_the_contract_under_the_key_the_runtime_reads(monkeypatch, tmp_path, model):
    install_machine(monkeypatch)
    engine = build_engine(tmp_path / "tiny.engine", model, PROFILE)
    record = json.loads((tmp_path / "tiny.engine.json").read_text())
    assert "model_contract" in record and "contract" not in record and "metadata" not in record
    assert record["gpu_name"] == GPU_NAME and record["tensorrt_version"] == "10.3.0"
    contract = contract_from_sidecar(record, "sidecar")
    assert contract.model_name == "tiny" and contract.size_multiple == 4 and contract.modalities == ("CT",)
    with TensorRTBackend(engine) as backend:
        assert backend.contract == contract


@pytest.mark.parametrize(("version", "atol"), [("8.6.1", 1e-6), ("10.3.0", 1e-6), ("11.4.0.106", 5e-3)])
def test_every_release_builds_an_engine_the_backend_runs(monkeypatch, tmp_path, model, version, atol):
    """8.6: EXPLICIT_BATCH network; 10.3: weakly typed; 11.4: strongly typed FP16 ONNX (no FP16 flag exists)."""
    machine = install_machine(monkeypatch, version=version)
    cache = tmp_path / "timing.cache"
    engine = build_engine(tmp_path / "tiny.engine", model, PROFILE, timing_cache=cache)
    assert machine.trt.errors == [] and cache.read_bytes().endswith(b"[timed]")
    batch = np.random.default_rng(0).standard_normal((2, 1, 32, 48)).astype(np.float32)
    with OnnxRuntimeBackend(model, threads=1) as reference, TensorRTBackend(engine) as backend:
        np.testing.assert_allclose(backend.infer(batch), reference.infer(batch), atol=atol)
    assert machine.gpu.leaks() == {}
