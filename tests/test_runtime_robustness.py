"""python -m runtime.enhance on hostile batches (issue #12): any per-file error is one FAILED
line and the batch goes on; corrupt images fail, non-images skip; outputs belong to their
source; non-finite values are refused; the output folder never swallows the inputs; DICOMDIRs
by any path; a backend that stops working stops the run."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pydicom
import pytest
from onnx import TensorProto, helper, numpy_helper
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.fileset import FileSet
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from runtime_fixtures import copy_file, file_hashes, make_smoothing_model, pydicom_file, run_cli
from runtime_mutants import set_vr

from runtime import enhance
from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from runtime.model_contract import INPUT_NAME, OUTPUT_NAME, ModelContract

GSPS = "1.2.840.10008.5.1.4.1.1.11.1"  # Grayscale Softcopy Presentation State Storage


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_smoothing_model(tmp_path_factory.mktemp("model") / "smooth.onnx")


def _run(model, *args):
    return enhance.main([*map(str, args), "--model", str(model), "-q"])


def _lines(err: str, path) -> list[str]:
    return [line for line in err.splitlines() if f" {path}: " in line]


# ---- 1. any per-file error is one FAILED line; only a dead backend stops the run ------------

def _unknown_vr(folder):
    """CT_small with the VR of Patient's Sex set to 'XY' (pydicom: NotImplementedError)."""
    data = set_vr(pydicom_file("CT_small.dcm").read_bytes(), 0x00100040, b"XY")
    (folder / "unknown_vr.dcm").write_bytes(data)


def test_unexpected_error_types_fail_one_file_each_and_the_batch_goes_on(tmp_path, model):
    inputs = tmp_path / "in"
    copy_file("CT_small.dcm", inputs, "good.dcm")
    _unknown_vr(inputs)
    ds = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    del ds.SOPClassUID  # derive() used to raise AttributeError
    ds.save_as(inputs / "no_sop_class.dcm")
    result = run_cli(str(inputs), "-o", str(tmp_path / "out"), "--model", str(model))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "cannot be read (NotImplementedError)" in _lines(result.stderr, inputs / "unknown_vr.dcm")[0]
    assert "no SOP Class UID" in _lines(result.stderr, inputs / "no_sop_class.dcm")[0]
    assert "1 done, 0 skipped, 2 failed" in result.stdout


class _FailingBackend(OnnxRuntimeBackend):
    """The fixture model, with ONNX Runtime failing on CT_small's 128-pixel-wide input."""

    def _infer(self, batch):
        if batch.shape[-1] == 128:
            return self._session.run([OUTPUT_NAME], {"not-an-input": batch})  # a real ORT error
        return super()._infer(batch)


class _DyingBackend(OnnxRuntimeBackend):
    """Breaks its session on CT_small: nothing runs from then on."""

    def _infer(self, batch):
        if batch.shape[-1] == 128:
            self._session = None
        return super()._infer(batch)


def _with_backend(monkeypatch, backend_class, model):
    monkeypatch.setattr(enhance, "open_model", lambda *a, **k: backend_class(model).open())


def test_memory_and_onnxruntime_errors_fail_only_their_file(tmp_path, model, monkeypatch, capsys):
    ct, mr = copy_file("CT_small.dcm", tmp_path / "in"), copy_file("MR_small.dcm", tmp_path / "in")
    big = copy_file("MR_small.dcm", tmp_path / "in", "big.dcm")
    real_decode = enhance.decode

    def decode(ds):
        if ds.filename.endswith("big.dcm"):
            raise MemoryError()
        return real_decode(ds)

    monkeypatch.setattr(enhance, "decode", decode)
    _with_backend(monkeypatch, _FailingBackend, model)
    assert enhance.main([str(ct), str(big), str(mr), "-o", str(tmp_path / "out"), "-q"]) == 1
    err = capsys.readouterr().err
    assert "FAILED" in _lines(err, ct)[0] and "inference failed" in _lines(err, ct)[0]
    assert "out of memory" in _lines(err, big)[0]
    assert _lines(err, mr)[0].startswith("medclear: enhanced")


def test_a_backend_that_stops_working_stops_the_run_with_exit_2(tmp_path, model, monkeypatch, capsys):
    ct, mr = copy_file("CT_small.dcm", tmp_path / "in"), copy_file("MR_small.dcm", tmp_path / "in")
    _with_backend(monkeypatch, _DyingBackend, model)
    assert enhance.main([str(ct), str(mr), "-o", str(tmp_path / "out"), "-q"]) == enhance.EXIT_USAGE
    err = capsys.readouterr().err
    assert "FAILED" in _lines(err, ct)[0]
    assert "stopped working" in err and "the remaining files are not processed" in err
    assert not _lines(err, mr)


# ---- 2. corrupt or truncated images fail; non-images still skip -----------------------------

def _presentation_state(path):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = GSPS
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Modality = "PR"
    ds.save_as(path, enforce_file_format=True)


def test_a_truncated_image_fails_and_non_images_skip(tmp_path, model, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "ct_cut.dcm").write_bytes(pydicom_file("CT_small.dcm").read_bytes()[:3000])
    for name in ("rtplan.dcm", "reportsi.dcm"):
        copy_file(name, inputs)
    _presentation_state(inputs / "gsps.dcm")
    assert _run(model, inputs, "-o", tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert "FAILED" in _lines(err, inputs / "ct_cut.dcm")[0] and "truncated" in err
    for name in ("rtplan.dcm", "reportsi.dcm", "gsps.dcm"):
        assert "skipped" in _lines(err, inputs / name)[0] and "no pixel data" in _lines(err, inputs / name)[0]


# ---- 3. an output belongs to its source, not to its name ------------------------------------

def _two_patients(root):
    """DIR1/DICOM/IM1 and DIR2/DICOM/IM1: the same file name, two patients and instances."""
    paths = []
    for index in (1, 2):
        ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
        ds.PatientID = f"PATIENT-{index}"
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[str(index)])
        path = root / f"DIR{index}" / "DICOM" / "IM1"
        path.parent.mkdir(parents=True)
        ds.save_as(path)
        paths.append((path, str(ds.SOPInstanceUID)))
    return paths


def _source_of(path) -> str:
    return str(pydicom.dcmread(path).SourceImageSequence[0].ReferencedSOPInstanceUID)


@pytest.mark.parametrize("fmt", ["dicom", "npy", "png"])
def test_same_name_from_another_source_is_never_skipped_or_replaced(tmp_path, model, capsys, fmt):
    (first, first_uid), (second, second_uid) = _two_patients(tmp_path)
    out, suffix = tmp_path / "out", {"dicom": ".dcm", "npy": ".npy", "png": ".png"}[fmt]
    plain = out / f"IM1.enhanced{suffix}"
    assert _run(model, first, "-o", out, "--format", fmt) == 0
    kept = file_hashes([plain])
    assert _run(model, second, "-o", out, "--format", fmt) == 0
    assert "1 done" in capsys.readouterr().out
    (renamed,) = [p for p in out.glob(f"IM1.*.enhanced{suffix}") if p != plain]
    assert _run(model, second, "-o", out, "--format", fmt) == 0  # a re-run knows its own output
    captured = capsys.readouterr()
    assert "0 done, 1 skipped" in captured.out and "derived from this file" in captured.err
    assert _run(model, second, "-o", out, "--format", fmt, "--overwrite") == 0
    assert "1 done" in capsys.readouterr().out
    assert file_hashes([plain]) == kept  # --overwrite never replaces another source's output
    if fmt == "dicom":
        assert (_source_of(plain), _source_of(renamed)) == (first_uid, second_uid)
        assert pydicom.dcmread(renamed).PatientID == "PATIENT-2"


# ---- 4. non-finite values in or out fail the file --------------------------------------------

def _nan_model(path):
    """A model whose output is NaN everywhere (image * NaN)."""
    weight = numpy_helper.from_array(np.array([np.nan], dtype=np.float32), name="nan")
    node = helper.make_node("Mul", [INPUT_NAME, "nan"], [OUTPUT_NAME])
    shape = ["N", 1, "H", "W"]
    graph = helper.make_graph([node], "nan", [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, shape)], [weight])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    for key, value in ModelContract(modalities=("*",), model_name="nan").to_metadata().items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))
    return path


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom: 'NaN' is not a valid DS
def test_non_finite_input_or_output_fails_and_writes_nothing(tmp_path, model, capsys):
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    ds.RescaleSlope = "NaN"
    ds.save_as(tmp_path / "nan_slope.dcm")
    assert _run(model, tmp_path / "nan_slope.dcm", "-o", tmp_path / "out") == 1
    assert "not a finite number" in _lines(capsys.readouterr().err, tmp_path / "nan_slope.dcm")[0]
    source = copy_file("CT_small.dcm", tmp_path / "in")
    assert _run(_nan_model(tmp_path / "nan.onnx"), source, "-o", tmp_path / "out", "--png-preview") == 1
    assert "NaN or infinite" in _lines(capsys.readouterr().err, source)[0]
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]


# ---- 5. an output folder at or above an input is a usage error --------------------------------

def test_output_folder_containing_an_input_is_a_usage_error(tmp_path, model, monkeypatch, capsys):
    copy_file("CT_small.dcm", tmp_path / "scans")
    monkeypatch.chdir(tmp_path)
    for outdir in (".", "scans"):
        assert _run(model, "scans", "-o", outdir) == enhance.EXIT_USAGE
        assert "contains the input scans" in capsys.readouterr().err
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["CT_small.dcm"]
    assert _run(model, "scans", "-o", "scans/enhanced") == 0  # inside an input folder is fine
    capsys.readouterr()
    assert _run(model, "scans", "-o", "scans/enhanced") == 0  # and holding only medclear's outputs, a re-run is too
    assert "0 done, 1 skipped" in capsys.readouterr().out


def test_output_folder_inside_an_input_that_holds_inputs_is_a_usage_error(tmp_path, model, monkeypatch, capsys):
    copy_file("CT_small.dcm", tmp_path / "scans" / "p1")
    copy_file("MR_small.dcm", tmp_path / "scans" / "p2")  # the run skips the output folder: this would be lost
    monkeypatch.chdir(tmp_path)
    assert _run(model, "scans", "-o", "scans/p2") == enhance.EXIT_USAGE
    err = capsys.readouterr().err
    assert "inside the input folder scans holds 1 file(s) medclear did not write (e.g. MR_small.dcm)" in err
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["CT_small.dcm", "MR_small.dcm"]


# ---- 6. DICOMDIR by a relative or symlinked path; missing records are reported ----------------

@pytest.fixture()
def media(tmp_path):
    fileset = FileSet()
    for name in ("CT_small.dcm", "MR_small.dcm"):
        fileset.add(pydicom.dcmread(pydicom_file(name)))
    fileset.write(tmp_path / "media")
    return tmp_path / "media"


def test_dicomdir_given_by_a_relative_or_symlinked_path(media, tmp_path, model, monkeypatch):
    (tmp_path / "elsewhere").mkdir()
    os.symlink(media / "DICOMDIR", tmp_path / "elsewhere" / "DICOMDIR")
    monkeypatch.chdir(tmp_path)
    assert _run(model, "media/DICOMDIR", "-o", "out1") == 0
    assert _run(model, "elsewhere/DICOMDIR", "-o", "out2") == 0
    for out in ("out1", "out2"):
        assert len(list((tmp_path / out / "media").rglob("*.enhanced.dcm"))) == 2


def test_dicomdir_record_whose_file_is_missing_is_a_failure(media, tmp_path, model, capsys):
    images = sorted(p for p in media.rglob("*") if p.is_file() and p.name != "DICOMDIR")
    images[0].unlink()
    assert _run(model, media / "DICOMDIR", "-o", tmp_path / "out") == 1
    captured = capsys.readouterr()
    assert f"FAILED {images[0]}: referenced by DICOMDIR" in captured.err and "missing" in captured.err
    assert "1 done, 0 skipped, 1 failed" in captured.out


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom: '..' is not a valid CS
def test_dicomdir_file_ids_cannot_leave_the_file_set(media, tmp_path, model, capsys):
    ds = pydicom.dcmread(media / "DICOMDIR")
    record = next(r for r in ds.DirectoryRecordSequence if "ReferencedFileID" in r)
    record.ReferencedFileID = ["..", "..", "escape"]
    ds.save_as(media / "DICOMDIR")
    assert _run(model, media / "DICOMDIR", "-o", tmp_path / "out") == 1
    assert "invalid File ID" in capsys.readouterr().err
    assert not (tmp_path / "escape.enhanced.dcm").exists()
