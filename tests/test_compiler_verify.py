"""compiler.verify: candidate vs reference through the runtime's backends; exit codes and tolerances."""

from __future__ import annotations

import math
import sys
import types

import numpy as np
import pytest

from compiler.__main__ import main
from compiler.verify import DEFAULT_TOLERANCE_DB, psnr, verify_onnx
from fakes.machine import build_engine, install_machine
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


def _engine_for(tmp_path, onnx_path, **record):
    """A stand-in engine whose sidecar carries the ONNX's contract (build writes the same)."""
    from compiler.onnx_io import load_model, metadata

    engine = tmp_path / "x.engine"
    engine.write_bytes(b"\x00not an engine")
    info = {"precision": "fp16", "profile": {"opt": [1, 1, 32, 32]}, "tensorrt_version": "10.3.0",
            "gpu_name": "Orin", "compute_capability": "8.7", "model_contract": metadata(load_model(onnx_path)),
            "build_command": "python -m compiler build --onnx ref.fp32.onnx --precision fp16 --out x.engine"}
    info.update(record)
    write_sidecar(engine, info)
    return engine


def test_cli_engine_without_tensorrt_fails_cleanly(tmp_path, models, capsys):
    if tensorrt_importable():
        pytest.skip("TensorRT is installed; engine verification is covered by GPU tests")
    reference, _, _ = models
    code = main(["verify", "--onnx", str(reference), "--engine", str(_engine_for(tmp_path, reference))])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: TensorRT is not installed") and "\n" not in err
    assert "--backend" not in err  # the runtime's advice names an option verify does not have


def test_cli_engine_that_is_an_onnx_file_gets_verify_advice_only(models, capsys):
    reference, _, _ = models
    code = main(["verify", "--onnx", str(reference), "--engine", str(reference)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "runs engines; build one with `python -m compiler build" in err
    assert "--backend" not in err and "\n" not in err


def test_cli_onnx_that_is_an_engine_file_gets_verify_advice_only(tmp_path, capsys):
    engine = tmp_path / "x.engine"
    engine.write_bytes(b"\x00not an engine")
    code = main(["verify", "--onnx", str(engine), "--reference", str(engine)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "ONNX Runtime runs .onnx models, not TensorRT engines; give the .onnx model" in err
    assert "--backend" not in err and "\n" not in err


def test_engine_is_opened_by_the_runtime_backend_with_its_sidecar_checked(tmp_path, models, capsys, monkeypatch):
    """verify refuses a foreign engine before deserializing it, as the bedside runtime does."""
    from runtime.backends import tensorrt_backend

    reference, _, _ = models
    fake = types.ModuleType("tensorrt")
    fake.__version__ = "10.3.0"
    fake.Runtime = lambda *_: pytest.fail("the engine was deserialized despite a sidecar mismatch")
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(tensorrt_backend, "detect_gpu", lambda: ("NVIDIA H100 80GB HBM3", "9.0"))
    code = main(["verify", "--onnx", str(reference), "--engine", str(_engine_for(tmp_path, reference))])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert "built for compute capability 8.7, this GPU is 9.0" in err and "python -m compiler build" in err


def test_verify_loads_models_through_the_runtime(models, monkeypatch):
    """Both models are opened by runtime.pipeline.open_model (contract checked), not by a second loader."""
    import compiler.verify as verify

    opened = []
    real = verify.open_model
    monkeypatch.setattr(verify, "open_model", lambda path, *a, **k: opened.append(str(path)) or real(path, *a, **k))
    reference, same, _ = models
    assert verify_onnx(same, reference).passed
    assert sorted(opened) == sorted([str(same), str(reference)])


def test_engine_verify_runs_the_runtime_backend_and_refuses_a_changed_engine(tmp_path, monkeypatch, capsys):
    """On the fake TensorRT (tests/fakes: the engine computes with ONNX Runtime), `verify --engine`
    passes through the runtime's TensorRT backend; an engine changed after its build is refused
    by the sidecar check, before deserializing."""
    onnx_path = write_tiny_onnx(tmp_path / "tiny.fp32.onnx")
    install_machine(monkeypatch)
    engine = build_engine(tmp_path / "tiny.engine", onnx_path, ((1, 1, 16, 16), (1, 1, 32, 32), (2, 1, 64, 64)))
    assert main(["verify", "--onnx", str(onnx_path), "--engine", str(engine)]) == 0
    assert "PASS" in capsys.readouterr().out
    engine.write_bytes(engine.read_bytes() + b"\0")
    assert main(["verify", "--onnx", str(onnx_path), "--engine", str(engine)]) == 2
    err = capsys.readouterr().err.strip()
    assert "sha256" in err and "\n" not in err


def test_checks_default_to_a_packaged_test_image_of_a_modality_the_model_covers():
    """A model released for MR alone (the MR x2 model) is checked on the MR test image, not on
    CT slices it would refuse; a CT or any-modality model on the CT test slices."""
    from compiler.samples import HELDOUT_BY_MODALITY, SMALL_HELDOUT_BY_MODALITY, packaged_heldout
    from runtime.model_contract import ModelContract

    names = lambda paths: tuple(path.name for path in paths)  # noqa: E731
    assert names(packaged_heldout(ModelContract(modalities=("MR",)))) == HELDOUT_BY_MODALITY["MR"]
    assert names(packaged_heldout(ModelContract(modalities=("CT", "MR")))) == HELDOUT_BY_MODALITY["CT"]
    assert names(packaged_heldout(ModelContract(modalities=("*",)), SMALL_HELDOUT_BY_MODALITY)) == ("CT_small.dcm",)
    assert packaged_heldout(ModelContract(modalities=("DX",))) == []


def test_engine_verify_refuses_an_onnx_the_engine_was_not_built_from(tmp_path, monkeypatch, capsys):
    onnx_path = write_tiny_onnx(tmp_path / "tiny.fp32.onnx")
    other = write_tiny_onnx(tmp_path / "other.fp32.onnx", seed=1)
    install_machine(monkeypatch)
    engine = build_engine(tmp_path / "tiny.engine", onnx_path, ((1, 1, 16, 16), (1, 1, 32, 32), (2, 1, 64, 64)))
    assert main(["verify", "--onnx", str(other), "--engine", str(engine)]) == 2
    err = capsys.readouterr().err.strip()
    assert "built from another ONNX file" in err and "\n" not in err


def test_heldout_without_reference_is_refused_before_any_comparison(tmp_path, models, capsys):
    reference, _, _ = models
    assert main(["verify", "--onnx", str(reference), "--engine", str(tmp_path / "x.engine"), "--heldout"]) == 2
    captured = capsys.readouterr()
    assert "use it with --reference" in captured.err and captured.out == ""


def test_a_path_that_cannot_be_written_is_a_one_line_error(tmp_path, models, capsys):
    reference, _, _ = models
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main(["triton-repo", str(reference), "-o", str(blocker / "repo")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "a_file" in err and "\n" not in err
