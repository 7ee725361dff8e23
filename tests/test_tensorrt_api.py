"""Static API checks: every TensorRT / cuda-python name the code and the test fakes use exists.

TensorRT and cuda-python cannot be installed here; their pinned bindings wheels
(:mod:`compiler.api_wheels`) can be read. They are test data: ``python -m compiler.api_wheels
fetch`` puts them in ~/.cache/medclear/trt-bindings (``.ci/run`` does, before the tests). The
tests never download; a missing wheel fails them in CI (CI or MEDCLEAR_CI set) and skips them,
naming the fetch command, elsewhere. ``-m 'not api_wheels'`` deselects them explicitly.
"""

from __future__ import annotations

import ast
import functools
import inspect
import sys
from pathlib import Path

import pytest
from fakes import fake_cuda
from fakes.fake_tensorrt import GATED_MEMBERS, FakeTensorRT
from fakes.names import module_names

import compiler.build
from compiler.api_wheels import CUDA_BINDINGS_WHEEL, cached_wheel, in_ci, missing_message
from compiler.cuda_api_check import CudaBindings, check_cuda_source, load_cuda_bindings
from compiler.trt_api_check import (
    BINDINGS_WHEELS,
    Bindings,
    check_source,
    decorator_gates,
    load_bindings,
    source_uses,
)
from compiler.trt_gate import in_range

ROOT = Path(__file__).resolve().parents[1]
GATED_SOURCES = [ROOT / "compiler" / name for name in ("build.py", "calibrate.py", "verify.py")]
RUNTIME_BACKEND = ROOT / "runtime" / "backends" / "tensorrt_backend.py"
CUDA_MEMORY = ROOT / "runtime" / "backends" / "cuda_memory.py"
VERSIONS = sorted(BINDINGS_WHEELS, key=lambda v: tuple(map(int, v.split("."))))
api_wheels = pytest.mark.api_wheels


def _wheel(requirement: str) -> Path:
    """The cached pinned wheel; fails in CI, skips elsewhere, naming the fetch command."""
    wheel = cached_wheel(requirement)
    if wheel is None:
        if in_ci():
            pytest.fail(missing_message(requirement), pytrace=False)
        pytest.skip(missing_message(requirement))
    return wheel


@functools.cache
def _load_trt(wheel: Path) -> Bindings:
    return load_bindings(wheel)


def _bindings(version: str) -> Bindings:
    """TensorRT ``version``'s bindings (see _wheel when the wheel is missing)."""
    return _load_trt(_wheel(BINDINGS_WHEELS[version]))


@pytest.fixture(scope="module", params=VERSIONS)
def bindings(request) -> Bindings:
    return _bindings(request.param)


@pytest.fixture(scope="module")
def cuda_bindings() -> CudaBindings:
    return load_cuda_bindings(_wheel(CUDA_BINDINGS_WHEEL))


def test_missing_wheel_fails_in_ci_and_skips_elsewhere_naming_the_fetch_command(monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "cached_wheel", lambda requirement: None)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("MEDCLEAR_CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"not in .*: run `python -m compiler.api_wheels fetch`"):
        _wheel(CUDA_BINDINGS_WHEEL)
    for variable in ("CI", "MEDCLEAR_CI"):
        monkeypatch.setenv(variable, "true")
        with pytest.raises(pytest.fail.Exception, match=r"cuda-bindings==.*python -m compiler.api_wheels fetch"):
            _wheel(CUDA_BINDINGS_WHEEL)
        monkeypatch.delenv(variable)
    assert not in_ci({"CI": "false"}) and not in_ci({"MEDCLEAR_CI": "0"}) and in_ci({"CI": "1"})


@api_wheels
@pytest.mark.parametrize("source", GATED_SOURCES, ids=lambda p: p.name)
def test_compiler_paths_use_only_names_their_release_binds(bindings, source):
    assert check_source(source, bindings, require_gates=True) == []


@api_wheels
def test_runtime_tensorrt_backend_names_exist(bindings):
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


@api_wheels
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


@api_wheels
def test_a_widened_gate_is_caught(tmp_path):
    """Drift guard: letting the builder-flag path run on TensorRT 11 must fail the check."""
    text = GATED_SOURCES[0].read_text()
    gate = '@trt_api(since="8.5", before="11")\ndef precision_builder_flags'
    assert gate in text
    widened = tmp_path / "build.py"
    widened.write_text(text.replace(gate, '@trt_api(since="8.5")\ndef precision_builder_flags'))
    problems = check_source(widened, _bindings("11.4.0.106"))
    assert any("precision_builder_flags" in p and "'FP16'" in p for p in problems)


@api_wheels
def test_ungated_tensorrt_function_is_reported(tmp_path):
    source = tmp_path / "ungated.py"
    source.write_text("def build(trt, builder):\n    return builder.create_network(0)\n")
    problems = check_source(source, _bindings("10.3.0"), require_gates=True)
    assert problems == [f"{source}: build uses TensorRT but has no @trt_api gate"]


# ---- the test fakes (tests/fakes) against the real bindings -------------------------------


def _missing_from(names: dict[str, set[str]], has) -> list[str]:
    return sorted(f"{owner}.{name}" if name else owner for owner, members in names.items()
                  for name in ("", *members) if not has(name or owner))


@api_wheels
def test_fake_tensorrt_offers_only_names_the_release_binds(bindings):
    names = module_names(FakeTensorRT(version=bindings.version).module)
    assert {"Runtime", "IExecutionContext", "Builder", "OnnxParser"} <= set(names)
    assert _missing_from(names, bindings.has) == []


@api_wheels
def test_fake_tensorrt_gated_members_exist_where_they_are_offered(bindings):
    for (enum, member), (since, before) in GATED_MEMBERS.items():
        offered = member in module_names(FakeTensorRT(version=bindings.version).module)[enum]
        assert offered == in_range(bindings.version, since, before), (enum, member)
        if offered:
            assert bindings.has(member), f"{enum}.{member} is not in TensorRT {bindings.version}"


@api_wheels
def test_drift_check_reports_a_name_tensorrt_lacks(bindings):
    module = FakeTensorRT(version=bindings.version).module
    module.IExecutionContext = type("IExecutionContext", (module.IExecutionContext,), {"execute_async_v4": None})
    assert _missing_from(module_names(module), bindings.has) == ["IExecutionContext.execute_async_v4"]


@api_wheels
def test_fake_cudart_matches_cuda_python(cuda_bindings):
    module = fake_cuda.make_cudart(fake_cuda.FakeGpu())
    names = module_names(module)
    assert _missing_from(names, cuda_bindings.has) == []
    for function in fake_cuda.FUNCTIONS:
        parameters = list(inspect.signature(getattr(module, function)).parameters)
        assert parameters == cuda_bindings.functions[function], function
    for kind in fake_cuda.TYPES:
        assert names[kind.__name__] <= cuda_bindings.classes[kind.__name__], kind.__name__


@api_wheels
def test_cuda_memory_uses_only_cuda_python_names(cuda_bindings, tmp_path):
    uses, _ = source_uses(CUDA_MEMORY, frozenset({"cudart"}), follow_locals=False)
    assert sum(len(items) for items in uses.values()) >= 20
    assert check_cuda_source(CUDA_MEMORY, cuda_bindings) == []
    broken = tmp_path / "cuda_memory.py"
    broken.write_text(CUDA_MEMORY.read_text().replace("cudaStreamSynchronize", "cudaStreamSync"))
    assert any("'cudaStreamSync'" in problem for problem in check_cuda_source(broken, cuda_bindings))
