"""Static TensorRT API check: every TensorRT name each version-gated path uses exists in that release.

TensorRT itself cannot be installed here; the per-release Python bindings wheels can be
downloaded (small) and their ``tensorrt.so`` string tables read. Wheels are cached in
~/.cache/medclear/trt-bindings; the tests skip only if a wheel can neither be found nor downloaded.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import compiler.build
from compiler.trt_api_check import (
    BINDINGS_WHEELS,
    bindings_wheel,
    check_source,
    decorator_gates,
    load_bindings,
    source_uses,
)

ROOT = Path(__file__).resolve().parents[1]
GATED_SOURCES = [ROOT / "compiler" / name for name in ("build.py", "calibrate.py", "verify.py")]
RUNTIME_BACKEND = ROOT / "runtime" / "backends" / "tensorrt_backend.py"


@pytest.fixture(scope="module", params=sorted(BINDINGS_WHEELS, key=lambda v: tuple(map(int, v.split(".")))))
def bindings(request):
    try:
        wheel = bindings_wheel(request.param)
    except Exception as error:  # pip missing, timeout, no network
        pytest.skip(f"cannot download {BINDINGS_WHEELS[request.param]}: {error}")
    if wheel is None:
        pytest.skip(f"{BINDINGS_WHEELS[request.param]} is not cached and could not be downloaded")
    return load_bindings(wheel)


def _bindings(version: str):
    wheel = bindings_wheel(version)
    if wheel is None:
        pytest.skip(f"{BINDINGS_WHEELS[version]} unavailable")
    return load_bindings(wheel)


@pytest.mark.parametrize("source", GATED_SOURCES, ids=lambda p: p.name)
def test_compiler_paths_use_only_names_their_release_binds(bindings, source):
    assert check_source(source, bindings, require_gates=True) == []


def test_runtime_tensorrt_backend_names_exist(bindings):
    if not RUNTIME_BACKEND.is_file():
        pytest.skip("runtime/backends/tensorrt_backend.py not written yet")
    uses, _ = source_uses(RUNTIME_BACKEND)
    assert uses, "the checker found no TensorRT use in the runtime backend"
    assert check_source(RUNTIME_BACKEND, bindings) == []


def test_checker_sees_the_build_paths():
    uses, gates = source_uses(GATED_SOURCES[0])
    names = {function: {use.name for use in items} for function, items in uses.items()}
    assert {"EXPLICIT_BATCH"} <= names["network_flags_explicit_batch"]
    assert {"set_calibration_profile", "int8_calibrator"} <= names["attach_calibrator"]
    assert {"set_memory_pool_limit", "set_shape", "add_optimization_profile"} <= names["base_config"]
    assert {"serialize", "get_timing_cache"} <= names["save_timing_cache"]
    assert gates["precision_builder_flags"] == ("8.5", "11")


def test_decorator_gates_match_the_running_code():
    tree = ast.parse(GATED_SOURCES[0].read_text())
    for name, (since, before) in decorator_gates(tree).items():
        function = getattr(compiler.build, name)
        assert (function.trt_since, function.trt_before) == (since, before)


def test_removed_apis_are_reported(tmp_path):
    source = tmp_path / "old_api.py"
    source.write_text(
        "def configure(trt, config, profile, calibrator):\n"
        "    config.set_flag(trt.BuilderFlag.FP16)\n"
        "    config.int8_calibrator = calibrator\n"
        "    config.set_calibration_profile(profile)\n"
        "    flag = trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH\n"
        "    return trt.IInt8EntropyCalibrator2, flag\n"
        "\n"
        "def legacy(engine, config):\n"
        "    config.max_workspace_size = 1 << 30\n"
        "    return engine.get_binding_index('image'), engine.num_bindings\n"
    )
    trt11 = check_source(source, _bindings("11.4.0.106"))
    for name in ("FP16", "int8_calibrator", "set_calibration_profile", "EXPLICIT_BATCH", "IInt8EntropyCalibrator2",
                 "max_workspace_size", "get_binding_index", "num_bindings"):
        assert any(repr(name) in problem for problem in trt11), name
    trt10 = " ".join(check_source(source, _bindings("10.3.0")))
    assert "'max_workspace_size'" in trt10 and "'get_binding_index'" in trt10
    assert "'set_calibration_profile'" not in trt10 and "'FP16'" not in trt10
    assert check_source(source, _bindings("8.6.1")) == []


def test_a_widened_gate_is_caught(tmp_path):
    """Drift guard: letting the builder-flag path run on TensorRT 11 must fail the check."""
    text = GATED_SOURCES[0].read_text()
    gate = '@trt_api(since="8.5", before="11")\ndef precision_builder_flags'
    assert gate in text
    widened = tmp_path / "build.py"
    widened.write_text(text.replace(gate, '@trt_api(since="8.5")\ndef precision_builder_flags'))
    problems = check_source(widened, _bindings("11.4.0.106"))
    assert any("precision_builder_flags" in p and "'FP16'" in p for p in problems)


def test_ungated_tensorrt_function_is_reported(tmp_path):
    source = tmp_path / "ungated.py"
    source.write_text("def build(trt, builder):\n    return builder.create_network(0)\n")
    problems = check_source(source, _bindings("10.3.0"), require_gates=True)
    assert problems == [f"{source}: build uses TensorRT but has no @trt_api gate"]
