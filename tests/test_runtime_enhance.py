"""python -m runtime.enhance: layout, formats, re-runs, DICOMDIR, batching/tiling, bad input."""

from __future__ import annotations

import errno
import shutil
import sys

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.fileset import FileSet
from runtime_fixtures import file_hashes, make_smoothing_model, pydicom_file, run_cli

from runtime import enhance, outputs
from runtime.backends import tensorrt_backend
from runtime.engine_sidecar import write_sidecar
from runtime.model_contract import ModelContract

SECRET_NAME, SECRET_ID = "Sentinel^Secretname", "SECRET-ID-4711"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_smoothing_model(tmp_path_factory.mktemp("model") / "smooth.onnx")


def _copy(name, folder, new_name=None):
    folder.mkdir(parents=True, exist_ok=True)
    return shutil.copy(pydicom_file(name), folder / (new_name or name))


def _run(model, *args):
    return enhance.main([*map(str, args), "--model", str(model), "-q"])


def test_help_explains_inputs_outputs_models_backends_formats_exit_codes():
    result = run_cli("--help")
    assert result.returncode == 0
    for phrase in ("DICOMDIR", "OUTDIR", "MEDCLEAR_MODEL", "--backend", "tensorrt", "--format",
                   "dicom,png,npy", "exit codes", "--png-preview", "--dry-run", "--overwrite", "--tile"):
        assert phrase in result.stdout, phrase


def test_folder_is_mirrored_and_reruns_skip_finished_files(tmp_path, model, capsys):
    inputs = tmp_path / "study"
    _copy("CT_small.dcm", inputs / "a")
    _copy("MR_small.dcm", inputs / "b" / "c")
    out = tmp_path / "out"
    assert _run(model, inputs, "-o", out) == 0
    ct = out / "study" / "a" / "CT_small.enhanced.dcm"
    mr = out / "study" / "b" / "c" / "MR_small.enhanced.dcm"
    assert ct.is_file() and mr.is_file()
    assert "2 done, 0 skipped, 0 failed" in capsys.readouterr().out
    stamp = ct.stat().st_mtime_ns
    assert _run(model, inputs, "-o", out) == 0
    captured = capsys.readouterr()
    assert "0 done, 2 skipped, 0 failed" in captured.out and "output exists" in captured.err
    assert ct.stat().st_mtime_ns == stamp
    assert _run(model, inputs, "-o", out, "--overwrite") == 0
    assert "2 done" in capsys.readouterr().out and ct.stat().st_mtime_ns != stamp


def test_dry_run_lists_and_writes_nothing(tmp_path, model, capsys):
    source = _copy("CT_small.dcm", tmp_path / "in")
    assert _run(model, source, "-o", tmp_path / "out", "--dry-run") == 0
    printed = capsys.readouterr().out
    assert "enhance:" in printed and "CT_small.enhanced.dcm" in printed
    assert not (tmp_path / "out").exists()


def test_dry_run_checks_what_the_run_checks_and_exits_as_it_would(tmp_path, model, capsys):
    source = _copy("CT_small.dcm", tmp_path / "in")  # 128 x 128
    broken = tmp_path / "in" / "broken.dcm"
    broken.write_bytes(b"not dicom")
    # A file the run would fail makes the dry run exit 1 too.
    assert _run(model, source, broken, "-o", tmp_path / "out", "--dry-run") == enhance.EXIT_FAILED
    printed = capsys.readouterr().out
    assert f"enhance: {source}" in printed and "fail:" in printed and "broken.dcm" in printed
    # The size limit is the run's own.
    assert _run(model, source, "-o", tmp_path / "out", "--dry-run", "--max-pixels", "1000") == enhance.EXIT_FAILED
    assert "too large" in capsys.readouterr().out
    # The model is opened and checked as the run would: a task it does not do is a usage error.
    assert _run(model, source, "-o", tmp_path / "out", "--dry-run", "--task", "sr2") == enhance.EXIT_USAGE
    assert "not sr2" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_npy_png_and_preview_formats(tmp_path, model):
    source = _copy("emri_small.dcm", tmp_path / "in")  # 10 frames of 64x64
    assert _run(model, source, "-o", tmp_path / "npy", "--format", "npy") == 0
    values = np.load(tmp_path / "npy" / "emri_small.enhanced.npy")
    assert values.shape == (10, 64, 64) and values.dtype == np.float32
    assert _run(model, source, "-o", tmp_path / "png", "--format", "png", "--png-preview") == 0
    grid = Image.open(tmp_path / "png" / "emri_small.enhanced.png")
    assert grid.mode == "L" and grid.size == (4 * 64, 3 * 64)  # 10 frames in a 4-column grid
    preview = Image.open(tmp_path / "png" / "emri_small.preview.png")
    assert preview.size == (2 * 64 + 4, 64)
    pixels = np.asarray(preview)
    assert pixels[:, :64].std() > 0 and not np.array_equal(pixels[:, :64], pixels[:, 68:])


def test_ct_preview_uses_a_window(tmp_path, model):
    source = _copy("CT_small.dcm", tmp_path / "in")
    assert _run(model, source, "-o", tmp_path / "out", "--png-preview") == 0
    preview = np.asarray(Image.open(tmp_path / "out" / "CT_small.preview.png"))
    assert preview.shape == (128, 2 * 128 + 4)
    assert preview.min() == 0 and preview.max() == 255  # windowed, so both ends saturate


def test_dicomdir_input_follows_referenced_files(tmp_path, model):
    fileset = FileSet()
    for name in ("CT_small.dcm", "MR_small.dcm"):
        fileset.add(pydicom.dcmread(pydicom_file(name)))
    media = tmp_path / "media"
    fileset.write(media)
    referenced = sorted(p for p in media.rglob("*") if p.is_file() and p.name != "DICOMDIR")
    assert len(referenced) == 2
    assert _run(model, media / "DICOMDIR", "-o", tmp_path / "out") == 0
    written = sorted((tmp_path / "out").rglob("*.enhanced.dcm"))
    expected = sorted(
        tmp_path / "out" / "media" / p.relative_to(media).with_name(p.name + ".enhanced.dcm") for p in referenced
    )
    assert written == expected


def test_batching_and_tiling_do_not_change_the_result(tmp_path, model):
    mr = _copy("emri_small.dcm", tmp_path / "in")
    ct = _copy("CT_small.dcm", tmp_path / "in")
    assert _run(model, mr, ct, "-o", tmp_path / "one", "--batch", "1", "--tile", "0") == 0
    assert _run(model, mr, ct, "-o", tmp_path / "many", "--batch", "3", "--tile", "48", "--overlap", "16") == 0
    for name in ("emri_small.enhanced.dcm", "CT_small.enhanced.dcm"):
        one = pydicom.dcmread(tmp_path / "one" / name).pixel_array.astype(int)
        many = pydicom.dcmread(tmp_path / "many" / name).pixel_array.astype(int)
        assert np.abs(one - many).max() <= 1, name  # rounding of float sums only


def _bad_inputs(folder):
    """One file per bad-input class, plus one good file carrying a known patient name/ID."""
    folder.mkdir(parents=True)
    (folder / "notes.dcm").write_text("this is not DICOM\n")
    data = pydicom_file("CT_small.dcm").read_bytes()
    (folder / "truncated.dcm").write_bytes(data[: len(data) * 2 // 3])
    _copy("rtplan.dcm", folder)
    _copy("rtstruct.dcm", folder)  # no preamble either
    _copy("SC_rgb.dcm", folder)
    _copy("OBXXXX1A.dcm", folder, "palette.dcm")
    huge = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    huge.Rows = huge.Columns = 60000
    huge.NumberOfFrames = 500
    huge.save_as(folder / "huge.dcm")
    good = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    good.PatientName, good.PatientID = SECRET_NAME, SECRET_ID
    good.save_as(folder / "good.dcm")
    return {
        "notes.dcm": "not a DICOM file",
        "truncated.dcm": "pixel data",
        "rtplan.dcm": "no pixel data (RTPLAN object",
        "rtstruct.dcm": "no pixel data (RTSTRUCT object",
        "SC_rgb.dcm": "photometric interpretation 'RGB' is not greyscale",
        "palette.dcm": "'PALETTE COLOR' is not greyscale",
        "huge.dcm": "image too large: 60000 x 60000 x 500 frames",
    }


def test_bad_inputs_one_line_each_batch_goes_on_inputs_untouched_no_patient_data(tmp_path, model):
    inputs = tmp_path / "in"
    causes = _bad_inputs(inputs)
    before = file_hashes(p for p in inputs.rglob("*") if p.is_file())
    result = run_cli(str(inputs), "-o", str(tmp_path / "out"), "--model", str(model), "--png-preview")
    log = result.stdout + result.stderr
    assert result.returncode == 1, log
    assert "Traceback" not in log
    for name, cause in causes.items():
        lines = [line for line in result.stderr.splitlines() if line.rstrip().split(":")[1:2] and name in line]
        assert len(lines) == 1, (name, lines)
        assert cause in lines[0], (name, lines[0])
        assert ("skipped" if name.startswith("rt") else "FAILED") in lines[0]
    assert "1 done, 2 skipped, 5 failed" in result.stdout
    assert "median" in result.stdout
    assert file_hashes(before) == before
    written = sorted(p.name for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert written == ["good.enhanced.dcm", "good.preview.png"]
    for secret in (SECRET_NAME, SECRET_ID, "Sentinel", "Secretname"):
        assert secret not in log
    assert pydicom.dcmread(tmp_path / "out" / "in" / "good.enhanced.dcm").PatientID == SECRET_ID


def test_missing_codec_is_one_clear_line(tmp_path, model):
    source = _copy("emri_small_jpeg_2k_lossless.dcm", tmp_path / "in")
    hidden = ["openjpeg", "libjpeg", "pylibjpeg", "PIL", "gdcm", "pyjpegls", "jpeg_ls", "rle"]
    code = (
        "import sys\n"
        f"for name in {hidden!r}: sys.modules[name] = None  # as if the plugins were not installed\n"
        "from runtime.enhance import main\n"
        f"sys.exit(main([{str(source)!r}, '-o', {str(tmp_path / 'out')!r}, '--model', {str(model)!r}]))\n"
    )
    import subprocess

    from runtime_fixtures import REPO

    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "no codec installed for transfer syntax JPEG 2000 Image Compression (Lossless Only)" in result.stderr
    assert "pylibjpeg-openjpeg" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.dcm"))


def test_unwritable_output_folder_fails_each_file_clearly(tmp_path, model, capsys):
    source = _copy("CT_small.dcm", tmp_path / "in")
    blocker = tmp_path / "occupied"
    blocker.write_text("a file where the output folder should be")
    assert _run(model, source, "-o", blocker / "out") == 1
    err = capsys.readouterr().err
    assert f"FAILED {source}: cannot write output: Not a directory" in err


def _partial_then(exception):
    def write(handle, *_args, **_kwargs):
        handle.write(b"DICM partial bytes")
        raise exception

    return write


def test_full_disk_and_interrupt_leave_no_partial_files(tmp_path, model, monkeypatch, capsys):
    source = _copy("CT_small.dcm", tmp_path / "in")
    out = tmp_path / "out"
    monkeypatch.setattr(outputs, "dcmwrite", _partial_then(OSError(errno.ENOSPC, "No space left on device")))
    assert _run(model, source, "-o", out) == 1
    assert "cannot write output: No space left on device" in capsys.readouterr().err
    assert [p for p in out.rglob("*") if p.is_file()] == []
    monkeypatch.setattr(outputs, "dcmwrite", _partial_then(KeyboardInterrupt()))
    assert _run(model, source, "-o", out) == enhance.EXIT_INTERRUPTED
    assert "interrupted" in capsys.readouterr().err
    assert [p for p in out.rglob("*") if p.is_file()] == []
    monkeypatch.undo()
    assert _run(model, source, "-o", out) == 0  # and a re-run does the file for real
    assert (out / "CT_small.enhanced.dcm").is_file()


def _foreign_engine(folder):
    engine = folder / "student.engine"
    engine.write_bytes(b"\x00engine built elsewhere")
    write_sidecar(engine, {
        "tensorrt_version": "8.6.2", "gpu_name": "Orin", "compute_capability": "8.7",
        "contract": ModelContract().to_metadata(),
    })
    return engine


def test_engine_for_another_machine_is_refused_with_exit_2(tmp_path, monkeypatch, capsys):
    engine = _foreign_engine(tmp_path)
    source = _copy("CT_small.dcm", tmp_path / "in")
    result = run_cli(str(source), "-o", str(tmp_path / "out"), "--model", str(engine))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "medclear: error:" in result.stderr  # one line
    fake = type(sys)("tensorrt")
    fake.__version__ = "8.6.2"
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(tensorrt_backend, "detect_gpu", lambda: ("NVIDIA H100 80GB HBM3", "9.0"))
    assert enhance.main([str(source), "-o", str(tmp_path / "out"), "--model", str(engine)]) == 2
    err = capsys.readouterr().err
    assert "built for compute capability 8.7, this GPU is 9.0" in err and "python -m compiler build" in err
    assert not (tmp_path / "out").exists()


def test_missing_model_is_exit_2(tmp_path, monkeypatch, capsys):
    source = _copy("CT_small.dcm", tmp_path / "in")
    assert enhance.main([str(source), "-o", str(tmp_path / "out"), "--model", str(tmp_path / "none.onnx")]) == 2
    assert "none.onnx: model file not found" in capsys.readouterr().err
    monkeypatch.delenv("MEDCLEAR_MODEL", raising=False)
    monkeypatch.setattr("runtime.backends.select.MODELS_DIR", tmp_path)
    assert enhance.main([str(source), "-o", str(tmp_path / "out")]) == 2
    assert "no model given and no default model" in capsys.readouterr().err


def test_modality_outside_the_models_contract_is_skipped(tmp_path, capsys):
    ct_only = make_smoothing_model(tmp_path / "ct.onnx", contract=ModelContract(modalities=("CT",), model_name="ct-only"))
    ct, mr = _copy("CT_small.dcm", tmp_path / "in"), _copy("MR_small.dcm", tmp_path / "in")
    assert _run(ct_only, ct, mr, "-o", tmp_path / "out") == 0
    captured = capsys.readouterr()
    assert f"skipped {mr}: modality MR is not one the model ct-only was trained for (CT)" in captured.err
    assert "1 done, 1 skipped, 0 failed" in captured.out
    assert not (tmp_path / "out" / "MR_small.enhanced.dcm").exists()
