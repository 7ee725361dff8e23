"""compiler.verify: candidate vs reference with Polygraphy runners; exit codes and tolerances."""

from __future__ import annotations

import math

import numpy as np
import pytest

from compiler.__main__ import main
from compiler.verify import DEFAULT_TOLERANCE_DB, psnr, verify_onnx
from onnx_fixtures import tensorrt_importable, write_tiny_onnx
from runtime.engine_sidecar import write_sidecar


@pytest.fixture()
def models(tmp_path):
    reference = write_tiny_onnx(tmp_path / "ref.fp32.onnx", seed=0)
    same = write_tiny_onnx(tmp_path / "same.fp32.onnx", seed=0)
    other = write_tiny_onnx(tmp_path / "other.fp32.onnx", seed=7)
    return reference, same, other


def test_psnr():
    a = np.zeros((4, 4), np.float32)
    assert psnr(a, a) == math.inf
    assert psnr(a + 0.1, a) == pytest.approx(20.0)


def test_identical_models_pass_with_random_and_real_inputs(models):
    reference, same, _ = models
    report = verify_onnx(same, reference)
    assert report.passed and report.tolerance_db == DEFAULT_TOLERANCE_DB["fp32"]
    names = [item.name for item in report.inputs]
    assert names[0] == "random" and any(name.startswith("dicom") for name in names)
    assert all(item.max_abs == 0 for item in report.inputs)


def test_different_model_fails_and_tolerance_override_passes(models):
    reference, _, other = models
    report = verify_onnx(other, reference)
    assert not report.passed and report.min_psnr_db < DEFAULT_TOLERANCE_DB["fp32"]
    assert all(item.max_abs > 0 and item.mean_abs > 0 for item in report.inputs)
    assert verify_onnx(other, reference, tolerance_db=report.min_psnr_db - 0.01).passed


def test_cli_exit_codes(models, capsys):
    reference, same, other = models
    assert main(["verify", "--onnx", str(same), "--reference", str(reference)]) == 0
    assert "PASS" in capsys.readouterr().out
    assert main(["verify", "--onnx", str(other), "--reference", str(reference)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "PSNR" in out and "max abs" in out
    assert main(["verify", "--onnx", str(other), "--reference", str(reference), "--tolerance-db", "0"]) == 0


def test_cli_missing_file_is_one_line_error(tmp_path, models, capsys):
    reference, _, _ = models
    code = main(["verify", "--onnx", str(tmp_path / "nope.onnx"), "--reference", str(reference)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "nope.onnx" in err and "\n" not in err


def test_cli_engine_without_tensorrt_fails_cleanly(tmp_path, models, capsys):
    if tensorrt_importable():
        pytest.skip("TensorRT is installed; engine verification is covered by GPU tests")
    reference, _, _ = models
    engine = tmp_path / "x.engine"
    engine.write_bytes(b"not an engine")
    write_sidecar(engine, {"precision": "fp16", "profile": {"opt": [1, 1, 32, 32]}})
    code = main(["verify", "--onnx", str(reference), "--engine", str(engine)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: TensorRT is not available") and "\n" not in err
