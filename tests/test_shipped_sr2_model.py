"""The shipped x2 models (models/medclear_sr2*.onnx): what each is released for, and that the MR
model beats the classical interpolators on the MR test image halved in k-space, by DCT (the
benchmark's protocol) and by DFT truncation, as the runtime runs it (fast enough for CI)."""

import dataclasses
from pathlib import Path

import onnx
import pytest

from benchmarks.quality import enhance
from benchmarks.runners import open_runner
from compiler.onnx_io import read_contract
from trainer.baselines import upscale
from trainer.config import load_config
from trainer.data import DataConfig, build_heldout_set
from trainer.metrics import image_quality

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"


def test_each_shipped_x2_model_is_released_for_its_own_modalities():
    for name, modalities in (("medclear_sr2", ("CT",)), ("medclear_sr2_mr", ("MR",))):
        for precision in ("fp32", "int8"):
            contract = read_contract(onnx.load(str(MODELS / f"{name}.{precision}.onnx")))
            assert (contract.scale, contract.modalities, contract.precision) == (2, modalities, precision)


@pytest.mark.parametrize("kspace", ["dct", "dft"])
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_the_mr_model_beats_bicubic_and_lanczos_on_the_mr_test_image(kspace, precision):
    data = DataConfig.from_dict(load_config(ROOT / "trainer" / "configs" / "sr2_teacher.json").data)
    data = dataclasses.replace(data, modalities=["MR"], sr_mr_kspace=kspace)
    image = next(image for image in build_heldout_set(data, "test") if image.modality == "MR")
    runner = open_runner(str(MODELS / f"medclear_sr2_mr.{precision}.onnx"), threads=2)
    try:
        output = enhance(runner, image)
    finally:
        runner.close()

    def psnr(upscaled):
        return image_quality(upscaled, image.clean, "MR", image.spec, with_fsim=False, with_ssim=False)["psnr"]

    model, bicubic, lanczos = psnr(output), psnr(upscale(image.degraded, "bicubic")), psnr(upscale(image.degraded, "lanczos"))
    # Issue 15's targets (the benchmark measured +2.25 / +0.59 dB by DCT, +2.19 / +0.55 by DFT for INT8).
    assert model - bicubic >= 1.5 and model - lanczos >= 0.5, (model, bicubic, lanczos)


def test_an_sr2_run_sends_each_file_to_its_modalitys_model(tmp_path, capsys, monkeypatch):
    import shutil

    import pydicom
    from pydicom.data import get_testdata_file

    from runtime.enhance import main

    monkeypatch.delenv("MEDCLEAR_SR2_MODEL", raising=False)
    folder = tmp_path / "study"
    folder.mkdir()
    for name in ("MR_small.dcm", "CT_small.dcm"):  # 64 x 64 and 128 x 128
        shutil.copy(get_testdata_file(name), folder / name)
    assert main([str(folder), "-o", str(tmp_path / "out"), "--task", "sr2", "-q"]) == 0
    summary = capsys.readouterr().out
    assert "2 done, 0 skipped, 0 failed" in summary
    assert "medclear_sr2_mr.fp32.onnx" in summary and "medclear_sr2.fp32.onnx" in summary
    for name, model in (("MR_small", "medclear_sr2_mr"), ("CT_small", "medclear_sr2")):
        derived, original = pydicom.dcmread(tmp_path / "out" / "study" / f"{name}.enhanced.dcm"), pydicom.dcmread(folder / f"{name}.dcm")
        assert (derived.Rows, derived.Columns) == (2 * original.Rows, 2 * original.Columns)
        assert [float(v) for v in derived.PixelSpacing] == [float(v) / 2 for v in original.PixelSpacing]
        assert derived.DerivationDescription.startswith("x2 super-resolution")
        assert f"({model}.fp32.onnx; fp32, onnxruntime)" in derived.DerivationDescription  # which of the two
        # The Series Description names the model by the first digits of its checkpoint's digest.
        digest = read_contract(onnx.load(str(MODELS / f"{model}.fp32.onnx"))).checkpoint_sha256
        assert digest[:8] in derived.SeriesDescription, (name, model)


def test_a_named_x2_model_serves_the_whole_run_and_names_the_mr_model(tmp_path, capsys, monkeypatch):
    import pydicom
    from pydicom.data import get_testdata_file

    from runtime.enhance import main

    source = Path(get_testdata_file("MR_small.dcm"))
    # The CT model, named, skips the MR file, and the line names the MR model.
    monkeypatch.chdir(tmp_path)
    assert main([str(source), "-o", str(tmp_path / "ct_model"), "--model", "medclear_sr2.fp32.onnx", "-q"]) == 0
    assert "its x2 model is medclear_sr2_mr.fp32.onnx (--model medclear_sr2_mr.fp32.onnx)" in capsys.readouterr().err
    # A bare model name is the installed model of that name (the working directory has no such file).
    assert main([str(source), "-o", str(tmp_path / "out"), "--model", "medclear_sr2_mr.int8.onnx", "--task", "sr2",
                 "-q"]) == 0
    derived = pydicom.dcmread(tmp_path / "out" / "MR_small.enhanced.dcm")
    assert derived.Rows == 2 * pydicom.dcmread(source).Rows
    digest = read_contract(onnx.load(str(MODELS / "medclear_sr2_mr.int8.onnx"))).checkpoint_sha256
    assert digest[:8] in derived.SeriesDescription


def test_the_mr_model_names_the_ct_model_for_a_ct_file(tmp_path, capsys):
    from pydicom.data import get_testdata_file

    from runtime.enhance import main

    source = get_testdata_file("CT_small.dcm")
    assert main([source, "-o", str(tmp_path), "--model", str(MODELS / "medclear_sr2_mr.fp32.onnx"), "-q"]) == 0
    assert "its x2 model is medclear_sr2.fp32.onnx" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # skipped: nothing written


def test_the_mr_x2_model_names_no_model_for_a_radiograph():
    """No installed x2 model covers DX, so the skip line points to none (the CT x2 default would skip it too)."""
    from types import SimpleNamespace

    from runtime.enhance import _model_hint

    mr_x2 = SimpleNamespace(contract=SimpleNamespace(scale=2), source=MODELS / "medclear_sr2_mr.fp32.onnx")
    assert _model_hint("DX", mr_x2) == ""
    assert _model_hint("CT", mr_x2) == "; its x2 model is medclear_sr2.fp32.onnx (--model medclear_sr2.fp32.onnx)"
