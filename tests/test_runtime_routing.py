"""A denoise run that names no model gives each file its modality's shipped denoiser (MR has its
own, runtime/routing.py); a named model or ``$MEDCLEAR_MODEL`` serves every file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

import runtime.backends.select as select_module
from runtime.enhance import main
from runtime.inputs import Job
from runtime.routing import given_model, modality_groups, parse_modality_model, routed_model, routes_by_modality
from tests.onnx_fixtures import install_denoisers, write_tiny_onnx


@pytest.fixture
def models_dir(tmp_path, monkeypatch) -> Path:
    """An installed default denoiser (CT, MR) and an MR-only denoiser of other weights."""
    install_denoisers(monkeypatch, tmp_path / "models", default_modalities=("CT", "MR"))
    return tmp_path / "models"


def test_mr_files_go_to_the_mr_denoiser_and_the_rest_to_the_default(models_dir, tmp_path, capsys) -> None:
    ct, mr = Path(get_testdata_file("CT_small.dcm")), Path(get_testdata_file("MR_small.dcm"))
    default, mr_model = models_dir / select_module.DEFAULT_MODELS[0], models_dir / select_module.MR_DENOISE_MODELS[0]
    jobs = [Job(path, Path(path.stem)) for path in (ct, mr)]
    assert routes_by_modality(None, None, remote=False) and routes_by_modality("denoise", None, remote=False)
    assert modality_groups(jobs) == [(default, jobs[:1]), (mr_model, jobs[1:])]
    assert routed_model("MR") == mr_model and routed_model("CT") == default and routed_model(None) == default

    assert main([str(ct), str(mr), "-o", str(tmp_path / "routed"), "-q"]) == 0
    summary = capsys.readouterr().out
    assert "2 done" in summary and f"{default.name} on" in summary and f"{mr_model.name} on" in summary
    routed = pydicom.dcmread(tmp_path / "routed" / "MR_small.enhanced.dcm").pixel_array
    assert main([str(mr), "-o", str(tmp_path / "named"), "--model", str(mr_model), "-q"]) == 0
    assert main([str(mr), "-o", str(tmp_path / "default"), "--model", str(default), "-q"]) == 0
    capsys.readouterr()
    assert np.array_equal(routed, pydicom.dcmread(tmp_path / "named" / "MR_small.enhanced.dcm").pixel_array)
    assert not np.array_equal(routed, pydicom.dcmread(tmp_path / "default" / "MR_small.enhanced.dcm").pixel_array)


def test_a_named_model_or_the_environment_serves_every_file(models_dir, tmp_path, monkeypatch, capsys) -> None:
    ct, mr = get_testdata_file("CT_small.dcm"), get_testdata_file("MR_small.dcm")
    default, mr_model = models_dir / select_module.DEFAULT_MODELS[0], models_dir / select_module.MR_DENOISE_MODELS[0]
    other = write_tiny_onnx(tmp_path / "other.onnx", seed=9, model_name="other", modalities=("CT", "MR"))
    assert not routes_by_modality("denoise", default, remote=False)
    assert not routes_by_modality("denoise", None, remote=True)  # a Triton server's model serves every file
    monkeypatch.setenv(select_module.MODEL_ENV, str(other))
    assert not routes_by_modality("denoise", None, remote=False)
    assert main([ct, mr, "-o", str(tmp_path / "env"), "-q"]) == 0
    summary = capsys.readouterr().out
    assert "2 done" in summary and mr_model.name not in summary
    assert main([mr, "-o", str(tmp_path / "named"), "--model", str(other), "-q"]) == 0
    capsys.readouterr()
    assert np.array_equal(pydicom.dcmread(tmp_path / "env" / "MR_small.enhanced.dcm").pixel_array,
                          pydicom.dcmread(tmp_path / "named" / "MR_small.enhanced.dcm").pixel_array)
    # The MR-only denoiser, named, skips the CT file and names the denoiser a run without --model gives it.
    monkeypatch.delenv(select_module.MODEL_ENV)
    assert main([ct, "-o", str(tmp_path / "mr_named"), "--model", str(mr_model)]) == 0
    captured = capsys.readouterr()
    assert "1 skipped" in captured.out and f"its denoiser is {default.name} (--model {default.name})" in captured.err


def test_without_an_mr_denoiser_every_file_goes_to_the_default(models_dir) -> None:
    (models_dir / select_module.MR_DENOISE_MODELS[0]).unlink()
    jobs = [Job(Path(get_testdata_file(name)), Path(name)) for name in ("CT_small.dcm", "MR_small.dcm")]
    assert modality_groups(jobs) == [(models_dir / select_module.DEFAULT_MODELS[0], jobs)]


def test_modality_model_sends_that_modality_elsewhere_beside_a_named_model(models_dir, tmp_path, capsys) -> None:
    """--modality-model MR=FILE beside --model (e.g. TensorRT engines on a Jetson, which routing by
    installed ONNX files does not find): MR files to FILE, the rest to the named model."""
    ct, mr = get_testdata_file("CT_small.dcm"), get_testdata_file("MR_small.dcm")
    other = write_tiny_onnx(tmp_path / "other.onnx", seed=9, model_name="other", modalities=("CT", "MR"))
    mr_model = models_dir / select_module.MR_DENOISE_MODELS[0]
    out = tmp_path / "override"
    assert main([ct, mr, "-o", str(out), "--model", str(other), "--modality-model", f"mr={mr_model}", "-q"]) == 0
    summary = capsys.readouterr().out
    assert f"other.onnx on" in summary and f"{mr_model.name} on" in summary
    for source, model in ((mr, mr_model), (ct, other)):
        alone = tmp_path / f"alone_{model.stem}"
        assert main([source, "-o", str(alone), "--model", str(model), "-q"]) == 0
        name = Path(source).stem + ".enhanced.dcm"
        assert np.array_equal(pydicom.dcmread(out / name).pixel_array, pydicom.dcmread(alone / name).pixel_array)
    capsys.readouterr()
    with pytest.raises(SystemExit) as usage:
        main([ct, "-o", str(tmp_path / "bad"), "--modality-model", "MR"])
    assert usage.value.code == 2 and "expected MODALITY=MODEL" in capsys.readouterr().err


def test_a_triton_run_sends_a_modality_to_another_server_model(models_dir) -> None:
    """With --url the server's model serves the run; --modality-model MR=grpc://… names another
    server model for MR files, opened as a Triton model of its own."""
    from runtime.backends.select import select_backend
    from runtime.backends.triton_backend import TritonBackend
    from runtime.enhance import build_parser, file_groups

    ct, mr = Path(get_testdata_file("CT_small.dcm")), Path(get_testdata_file("MR_small.dcm"))
    args = build_parser().parse_args([str(ct), str(mr), "-o", "out", "--url", "localhost:8001",
                                      "--modality-model", "MR=grpc://localhost:8001/medclear_mr"])
    jobs = [Job(path, Path(path.stem)) for path in (ct, mr)]
    (server_model, ct_jobs), (mr_server_model, mr_jobs) = file_groups(args, jobs, remote=True)
    assert server_model is None and ct_jobs == jobs[:1] and mr_jobs == jobs[1:]
    backend = select_backend(mr_server_model)
    assert isinstance(backend, TritonBackend) and backend.target.describe() == "grpc://localhost:8001/medclear_mr"


def test_parse_modality_model_keeps_a_triton_url_whole() -> None:
    assert parse_modality_model(" mr = models/mr.engine ") == ("MR", Path("models/mr.engine"))
    assert parse_modality_model("CT=grpc://h:8001/ct") == ("CT", "grpc://h:8001/ct")  # a Path would fold "//"
    assert parse_modality_model("MR=~/mr.onnx") == ("MR", Path.home() / "mr.onnx")
    with pytest.raises(ValueError, match="no_such_user_medclear"):  # a usage error, not a traceback
        parse_modality_model("MR=~no_such_user_medclear/mr.onnx")
    for bad in ("MR", "=x.onnx", "MR=", "M R=x.onnx"):
        with pytest.raises(ValueError, match="MODALITY=MODEL"):
            parse_modality_model(bad)


def test_given_model_keeps_a_url_and_finds_an_installed_name(models_dir, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # no such file here: the bare name is the installed model
    installed = next(models_dir.glob("*.onnx"))
    assert given_model(Path(installed.name)) == installed
    assert given_model("grpc://h:8001/mr") == "grpc://h:8001/mr"
