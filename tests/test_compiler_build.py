"""compiler.build and runtime.engine_sidecar: options, version dispatch, clean failures, sidecar."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from unittest import mock

import numpy as np
import onnx
import pytest

from compiler.__main__ import main, parser
from compiler.build import (
    BuildOptions,
    build_serialized,
    check_profile,
    network_flags_explicit_batch,
    network_flags_typed,
    parse_shape,
    prepare_onnx,
    with_channels,
)
from compiler.errors import CompilerError
from compiler.onnx_io import cpu_session
from compiler.trt_gate import select
from onnx_fixtures import tensorrt_importable, write_tiny_onnx
from runtime.engine_sidecar import (
    EngineSidecarError,
    check_sidecar,
    detect_gpu,
    read_sidecar,
    sidecar_path,
    write_sidecar,
)
from runtime.model_contract import INPUT_NAME, OUTPUT_NAME


def _options(tmp_path: Path, onnx_path: Path, **overrides) -> BuildOptions:
    values = dict(onnx_path=onnx_path, out=tmp_path / "m.engine", precision="fp16", opt=(1, 1, 64, 64))
    values.update(overrides)
    return BuildOptions(**values)


def test_cli_build_fails_cleanly_without_tensorrt(tmp_path, capsys):
    if tensorrt_importable():
        pytest.skip("TensorRT is installed here; real builds are covered by GPU tests")
    onnx_path = write_tiny_onnx(tmp_path / "tiny.fp32.onnx")
    code = main(["build", "--onnx", str(onnx_path), "--precision", "fp16", "--out", str(tmp_path / "m.engine"),
                 "--opt", "1x1x64x64"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: TensorRT is not available") and "\n" not in err
    assert not (tmp_path / "m.engine").exists()


@pytest.mark.parametrize("text", ["1x1x64", "1x3x64x64", "1x1x0x64", "axbxcxd"])
def test_parse_shape_rejects(text):
    with pytest.raises(CompilerError, match="NxCxHxW"):
        parse_shape(text)


def test_profile_takes_the_models_input_channels(tmp_path):
    options = _options(tmp_path, tmp_path / "x.onnx", min=(1, 1, 32, 32), max=parse_shape("2x2x128x128"))
    widened = with_channels(options, 2)  # a noise-map model: C=1 means the image, its map is added
    assert widened.shapes == ((1, 2, 32, 32), (1, 2, 64, 64), (2, 2, 128, 128))
    assert "--opt 1x2x64x64" in widened.command()
    assert with_channels(_options(tmp_path, tmp_path / "x.onnx"), 1).shapes[1] == (1, 1, 64, 64)
    with pytest.raises(CompilerError, match=r"profile shape 2x2x128x128: the model takes 1 input channel\(s\)"):
        with_channels(options, 1)


def test_profile_checks(tmp_path):
    onnx_path = tmp_path / "x.onnx"
    with pytest.raises(CompilerError, match="min <= opt <= max"):
        check_profile(_options(tmp_path, onnx_path, min=(1, 1, 128, 128)), 4)
    with pytest.raises(CompilerError, match="multiples of 8"):
        check_profile(_options(tmp_path, onnx_path, opt=(1, 1, 60, 64)), 8)
    with pytest.raises(CompilerError, match="fixed shape"):
        check_profile(_options(tmp_path, onnx_path, max=(1, 1, 128, 128), dla_core=0), 4)
    check_profile(_options(tmp_path, onnx_path, min=(1, 1, 32, 32), max=(4, 1, 128, 128)), 4)


def test_cli_rejects_bad_profile_before_tensorrt(tmp_path, capsys):
    onnx_path = write_tiny_onnx(tmp_path / "tiny.fp32.onnx")  # size multiple 4
    code = main(["build", "--onnx", str(onnx_path), "--precision", "fp16", "--out", str(tmp_path / "m.engine"),
                 "--opt", "1x1x62x64"])
    assert code == 2 and "multiples of 4" in capsys.readouterr().err


def test_build_command_round_trips_through_the_parser(tmp_path):
    options = _options(tmp_path, Path("a b/m.onnx"), min=(1, 1, 32, 32), max=(2, 1, 128, 128),
                       timing_cache=Path("t.cache"), dla_core=1, version_compatible=True, workspace_mib=256)
    argv = shlex.split(options.command())[3:]
    args = parser().parse_args(argv)
    assert args.onnx == options.onnx_path and args.dla_core == 1 and args.version_compatible
    assert parse_shape(args.min) == (1, 1, 32, 32) and parse_shape(args.max) == (2, 1, 128, 128)
    assert args.timing_cache == Path("t.cache") and args.workspace_mib == 256


@pytest.mark.parametrize(
    ("version", "expected"),
    [("8.5.2.2", network_flags_explicit_batch), ("8.6.1", network_flags_explicit_batch),
     ("10.3.0", network_flags_typed), ("11.4.0.106", network_flags_typed)],
)
def test_version_gate_selects_one_path(version, expected):
    assert select(version, network_flags_explicit_batch, network_flags_typed) is expected


def test_version_gate_rejects_unsupported():
    with pytest.raises(CompilerError, match="no single supported code path"):
        select("8.4.3", network_flags_explicit_batch, network_flags_typed)


def _fake_trt(version: str) -> mock.MagicMock:
    """A recording stand-in for the tensorrt module (no TensorRT here): checks call routing only."""
    trt = mock.MagicMock(name="tensorrt")
    trt.__version__ = version
    trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH = 0
    trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED = 5
    builder = trt.Builder.return_value
    network = builder.create_network.return_value
    network.num_inputs = 1
    network.get_input.return_value.name = INPUT_NAME
    trt.OnnxParser.return_value.parse_from_file.return_value = True
    builder.build_serialized_network.return_value = b"plan"
    builder.num_DLA_cores = 2
    return trt


def _flags_set(trt) -> list:
    config = trt.Builder.return_value.create_builder_config.return_value
    return [c.args[0] for c in config.set_flag.call_args_list]


@pytest.mark.parametrize("version", ["8.6.1", "10.3.0"])
def test_weakly_typed_builds_use_builder_flags(tmp_path, version):
    trt = _fake_trt(version)
    options = _options(tmp_path, tmp_path / "x.onnx", precision="int8")
    assert build_serialized(trt, options, options.onnx_path) == b"plan"
    expected_flags = 1 if version.startswith("8.") else 0  # EXPLICIT_BATCH only on 8.x
    trt.Builder.return_value.create_network.assert_called_once_with(expected_flags)
    assert _flags_set(trt) == [trt.BuilderFlag.FP16, trt.BuilderFlag.INT8]


def test_tensorrt_11_is_strongly_typed_without_precision_flags(tmp_path):
    trt = _fake_trt("11.4.0.106")
    options = _options(tmp_path, tmp_path / "x.onnx", precision="int8", dla_core=1, version_compatible=True)
    build_serialized(trt, options, options.onnx_path)
    trt.Builder.return_value.create_network.assert_called_once_with(1 << 5)
    assert _flags_set(trt) == [trt.BuilderFlag.VERSION_COMPATIBLE, trt.BuilderFlag.GPU_FALLBACK]
    config = trt.Builder.return_value.create_builder_config.return_value
    assert config.DLA_core == 1 and config.default_device_type == trt.DeviceType.DLA
    with pytest.raises(CompilerError, match="take no calibrator"):
        build_serialized(_fake_trt("11.4.0.106"), options, options.onnx_path, calibrator=object())


def test_timing_cache_is_loaded_and_saved(tmp_path):
    trt = _fake_trt("10.3.0")
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old")
    config = trt.Builder.return_value.create_builder_config.return_value
    config.get_timing_cache.return_value.serialize.return_value = b"new"
    build_serialized(trt, _options(tmp_path, tmp_path / "x.onnx", timing_cache=cache), tmp_path / "x.onnx")
    config.create_timing_cache.assert_called_once_with(b"old")
    assert cache.read_bytes() == b"new"


def test_version_compatible_and_strongly_typed_need_newer_tensorrt(tmp_path):
    with pytest.raises(CompilerError, match="8.6"):
        build_serialized(_fake_trt("8.5.2"), _options(tmp_path, tmp_path / "x.onnx", version_compatible=True),
                         tmp_path / "x.onnx")
    with pytest.raises(CompilerError, match="strongly-typed needs TensorRT >= 10"):
        build_serialized(_fake_trt("8.6.1"), _options(tmp_path, tmp_path / "x.onnx", strongly_typed=True),
                         tmp_path / "x.onnx")


def test_dla_core_out_of_range(tmp_path):
    with pytest.raises(CompilerError, match="2 DLA core"):
        build_serialized(_fake_trt("8.6.1"), _options(tmp_path, tmp_path / "x.onnx", dla_core=2), tmp_path / "x.onnx")


def test_strongly_typed_fp16_onnx_is_converted(tmp_path):
    fp32 = write_tiny_onnx(tmp_path / "tiny.fp32.onnx")
    parsed = prepare_onnx(_options(tmp_path, fp32), "11.4.0", tmp_path)
    assert parsed != fp32
    model = onnx.load(str(parsed))
    types = {init.data_type for init in model.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in types
    assert {p.key for p in model.metadata_props} >= {"medclear.precision", "medclear.size_multiple"}
    batch = np.random.default_rng(0).random((1, 1, 32, 40), dtype=np.float32)
    outs = [cpu_session(p).run([OUTPUT_NAME], {INPUT_NAME: batch})[0] for p in (fp32, parsed)]
    assert outs[1].dtype == np.float32 and np.abs(outs[0] - outs[1]).max() < 5e-3
    # Weakly typed TensorRT (8.x/10.x) parses the fp32 file itself.
    assert prepare_onnx(_options(tmp_path, fp32), "8.6.1", tmp_path) == fp32


def test_int8_needs_qdq_onnx(tmp_path):
    fp32 = write_tiny_onnx(tmp_path / "tiny.fp32.onnx")
    with pytest.raises(CompilerError, match="Q/DQ"):
        prepare_onnx(_options(tmp_path, fp32, precision="int8"), "10.3.0", tmp_path)


# ---- sidecar ------------------------------------------------------------------------------

RECORD = {"tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7", "precision": "fp16",
          "build_command": "python -m compiler build --onnx m.onnx --precision fp16 --out m.engine --opt 1x1x64x64"}


@pytest.fixture()
def engine(tmp_path):
    path = tmp_path / "m.engine"
    path.write_bytes(b"serialized plan")
    write_sidecar(path, RECORD)
    return path


def test_sidecar_round_trip(engine):
    assert sidecar_path(engine).name == "m.engine.json"
    record = read_sidecar(engine)
    assert record["gpu_name"] == "Orin" and len(record["engine_sha256"]) == 64
    check_sidecar(engine, "10.3.0", "Orin", "8.7")


@pytest.mark.parametrize(
    ("machine", "message"),
    [(("10.3.1", "Orin", "8.7"), "TensorRT 10.3.0"), (("10.3.0", "Orin", "8.6"), "compute capability 8.7"),
     (("10.3.0", "Thor", "8.7"), "GPU 'Orin'")],
)
def test_sidecar_mismatch_says_how_to_rebuild(engine, machine, message):
    with pytest.raises(EngineSidecarError) as error:
        check_sidecar(engine, *machine)
    assert message in str(error.value) and "python -m compiler build" in str(error.value)
    assert RECORD["build_command"] not in str(error.value)  # never a command read from the file


def test_sidecar_detects_changed_engine_and_missing_sidecar(engine, tmp_path):
    engine.write_bytes(b"another plan")
    with pytest.raises(EngineSidecarError, match="sha256"):
        check_sidecar(engine, "10.3.0", "Orin", "8.7")
    lonely = tmp_path / "lonely.engine"
    lonely.write_bytes(b"x")
    with pytest.raises(EngineSidecarError, match="sidecar missing"):
        read_sidecar(lonely)
    sidecar_path(lonely).write_text("{not json")
    with pytest.raises(EngineSidecarError, match="unreadable"):
        read_sidecar(lonely)


def test_version_compatible_engine_accepts_newer_same_major(tmp_path):
    path = tmp_path / "vc.engine"
    path.write_bytes(b"plan")
    write_sidecar(path, {**RECORD, "version_compatible": True})
    check_sidecar(path, "10.7.0", "Orin", "8.7")
    with pytest.raises(EngineSidecarError, match="version-compatible"):
        check_sidecar(path, "10.2.0", "Orin", "8.7")


def test_detect_gpu_without_driver_is_a_clear_error():
    import ctypes.util

    if ctypes.util.find_library("cuda"):
        pytest.skip("an NVIDIA driver is present")
    with pytest.raises(EngineSidecarError, match="no NVIDIA driver"):
        detect_gpu()


# ---- real engines (GPU + TensorRT) ---------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_build_verify_and_check_real_engine(tmp_path, precision):
    from compiler.build import build
    from compiler.calibrate import quantize
    from compiler.samples import CALIBRATION_CT, packaged_files
    from compiler.verify import verify_engine

    import tensorrt as trt

    onnx_path = write_tiny_onnx(tmp_path / "tiny.fp32.onnx", width=8)
    if precision == "int8":
        data = tmp_path / "dicom"
        data.mkdir()
        for path in packaged_files(CALIBRATION_CT):
            (data / path.name).symlink_to(path)
        onnx_path = quantize(onnx_path, data, tmp_path / "tiny.int8.onnx", max_side=128).path
    options = _options(tmp_path, onnx_path, precision=precision, min=(1, 1, 32, 32), opt=(1, 1, 128, 128),
                       max=(2, 1, 256, 256), timing_cache=tmp_path / "timing.cache")
    record = build(options)
    assert options.out.is_file() and (tmp_path / "timing.cache").is_file()
    assert json.loads(sidecar_path(options.out).read_text())["onnx_sha256"] == record["onnx_sha256"]
    name, capability = detect_gpu()
    check_sidecar(options.out, trt.__version__, name, capability)
    report = verify_engine(options.out, onnx_path)
    assert report.passed, "\n".join(report.lines())


def test_calibrators_are_refused_on_tensorrt_11():
    from compiler.build import cache_calibrator
    from compiler.trt_gate import require

    assert require("10.3.0", cache_calibrator, "--calibration-cache") is cache_calibrator
    with pytest.raises(CompilerError, match=r"--calibration-cache needs TensorRT >= 8.5 and < 11 \(this is 11.4.0\)"):
        require("11.4.0", cache_calibrator, "--calibration-cache")


def test_jetson_commands_do_not_import_torch():
    """build/verify/calibrate run on a Jetson, where torch may be absent."""
    import subprocess
    import sys

    code = "import sys, compiler.__main__, compiler.build, compiler.verify, compiler.calibrate; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "False"
