"""x2 super-resolution in the runtime (issue #15): geometry, tiling, strength, preview, --task.

The models are tiny ONNX fixtures (tests/onnx_fixtures.py) of the SR students' shape:
``nearest_x2(image) + DepthToSpace(conv(...))``; with ``tail=0`` the model is exactly
nearest-neighbour upsampling, so output pixels are known. Geometry expectations are computed
here from the grid convention (input pixel i covers output pixels 2i and 2i+1), not from
``runtime.geometry``.
"""

from __future__ import annotations

import copy
from pathlib import Path
import subprocess

import numpy as np
import pydicom
import pytest
from onnx_fixtures import write_tiny_onnx, write_tiny_sr_onnx
from PIL import Image
from runtime_fixtures import make_xray, new_errors, pydicom_file

from runtime import pipeline
from runtime.backends import BackendError
from runtime.backends import select as select_module
from runtime.derived import SR_DERIVATION_CODE
from runtime.enhance import main
from runtime.geometry import GeometryError, upscale_geometry
from runtime.resample import bicubic, nearest
from runtime.tiling import TilePlan, enhance_frames

SOURCES = ("CT_small.dcm", "MR_small.dcm", "eCT_Supplemental.dcm", "emri_small_big_endian.dcm",
           "MR-SIEMENS-DICOM-WithOverlays.dcm")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("sr-models")
    return {
        "sr": write_tiny_sr_onnx(root / "sr.onnx"),
        "nearest": write_tiny_sr_onnx(root / "nearest.onnx", tail=0.0, model_name="nearest-sr"),
        "denoise": write_tiny_onnx(root / "denoise.onnx", size_multiple=1, modalities=("*",)),
    }


@pytest.fixture(scope="module")
def upscaled(tmp_path_factory, models):
    """One CLI run of the nearest-upsampling SR model over CT, MR, enhanced CT/MR, overlays, DX."""
    root = tmp_path_factory.mktemp("sr-run")
    sources = {name: pydicom_file(name) for name in SOURCES}
    sources["dx.dcm"] = make_xray(root / "in" / "dx.dcm", "DX", "MONOCHROME2", rows=200, cols=160)
    code = main([*map(str, sources.values()), "-o", str(root / "out"), "--model", str(models["nearest"]),
                 "--png-preview", "-q"])
    outputs = {name: root / "out" / f"{path.stem}.enhanced.dcm" for name, path in sources.items()}
    return code, sources, outputs


def _read(path):
    return pydicom.dcmread(path)


def _centre(ds_position, orientation, spacing, row: float, col: float) -> np.ndarray:
    """Patient coordinates of the centre of pixel (row, col) (PS3.3 C.7.6.2.1.1)."""
    ipp = np.array(ds_position, float)
    iop = np.array(orientation, float)
    return ipp + col * float(spacing[1]) * iop[:3] + row * float(spacing[0]) * iop[3:]


def test_single_frame_geometry_doubles_the_matrix_over_the_same_area(upscaled):
    code, sources, outputs = upscaled
    assert code == 0
    for name in ("CT_small.dcm", "MR_small.dcm"):
        src, out = _read(sources[name]), _read(outputs[name])
        assert (out.Rows, out.Columns) == (2 * src.Rows, 2 * src.Columns)
        np.testing.assert_allclose([float(v) for v in out.PixelSpacing], [float(v) / 2 for v in src.PixelSpacing])
        # New pixel (r, c) sits at old index (r/2 - 1/4, c/2 - 1/4): check corners and a middle pixel.
        for row, col in ((0, 0), (0, out.Columns - 1), (out.Rows - 1, 0), (37, 90)):
            new = _centre(out.ImagePositionPatient, out.ImageOrientationPatient, out.PixelSpacing, row, col)
            old = _centre(src.ImagePositionPatient, src.ImageOrientationPatient, src.PixelSpacing,
                          row / 2 - 0.25, col / 2 - 0.25)
            np.testing.assert_allclose(new, old, atol=1e-3)
        assert np.abs(np.subtract(out.ImagePositionPatient, src.ImagePositionPatient, dtype=float)).max() > 0.05
        for keyword in ("ImageOrientationPatient", "SliceThickness", "SliceLocation", "FrameOfReferenceUID",
                        "StudyInstanceUID", "PatientID", "RescaleSlope", "RescaleIntercept"):
            assert out.get(keyword) == src.get(keyword), (name, keyword)


def test_new_ipp_follows_the_issue_formula_row_then_column_spacing():
    """Non-square pixels and an oblique orientation: row spacing moves along the column direction."""
    ds = _read(pydicom_file("CT_small.dcm"))
    ds.PixelSpacing = [0.8, 0.5]  # rows 0.8 mm apart, columns 0.5 mm apart
    ds.ImageOrientationPatient = [0.6, 0.8, 0.0, 0.0, 0.0, -1.0]
    ds.ImagePositionPatient = [10.0, 20.0, 30.0]
    upscale_geometry(ds, 2)
    expected = np.array([10, 20, 30]) - 0.25 * 0.5 * np.array([0.6, 0.8, 0]) - 0.25 * 0.8 * np.array([0, 0, -1])
    np.testing.assert_allclose(np.array(ds.ImagePositionPatient, float), expected, atol=1e-6)
    assert [float(v) for v in ds.PixelSpacing] == [0.4, 0.25]


def test_pixels_are_the_models_output_in_the_sources_encoding(upscaled):
    _, sources, outputs = upscaled
    for name in ("CT_small.dcm", "MR_small.dcm", "eCT_Supplemental.dcm", "dx.dcm"):
        src, out = _read(sources[name]), _read(outputs[name])
        assert out.BitsStored == src.BitsStored and out.PixelRepresentation == src.PixelRepresentation
        # The fixture is nearest-neighbour upsampling: every 2x2 block repeats its source pixel.
        difference = out.pixel_array.astype(np.int64) - nearest(src.pixel_array, 2).astype(np.int64)
        assert np.abs(difference).max() <= 1, name


def test_enhanced_multiframe_functional_groups(upscaled):
    _, sources, outputs = upscaled
    src, out = _read(sources["eCT_Supplemental.dcm"]), _read(outputs["eCT_Supplemental.dcm"])
    old_measures = src.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    new_measures = out.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    np.testing.assert_allclose([float(v) for v in new_measures.PixelSpacing],
                               [float(v) / 2 for v in old_measures.PixelSpacing])
    assert new_measures.SliceThickness == old_measures.SliceThickness
    orientation = src.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient
    for old_frame, new_frame in zip(src.PerFrameFunctionalGroupsSequence, out.PerFrameFunctionalGroupsSequence):
        old_ipp = old_frame.PlanePositionSequence[0].ImagePositionPatient
        expected = _centre(old_ipp, orientation, old_measures.PixelSpacing, -0.25, -0.25)
        np.testing.assert_allclose(np.array(new_frame.PlanePositionSequence[0].ImagePositionPatient, float),
                                   expected, atol=1e-4)
    assert (out.Rows, out.Columns, out.NumberOfFrames) == (2 * src.Rows, 2 * src.Columns, src.NumberOfFrames)
    step = out.SharedFunctionalGroupsSequence[0].DerivationImageSequence[0]
    assert step.DerivationCodeSequence[0].CodeValue == SR_DERIVATION_CODE.value == "113085"


def test_per_frame_pixel_measures_use_each_frames_own_spacing_and_orientation():
    ds = _read(pydicom_file("eCT_Supplemental.dcm"))
    shared = ds.SharedFunctionalGroupsSequence[0]
    del shared.PixelMeasuresSequence
    spacings = [[0.5, 0.4], [0.9, 0.3]]
    orientations = [[1, 0, 0, 0, 1, 0], [0, 1, 0, 0, 0, -1]]
    positions = []
    for frame, spacing, orientation in zip(ds.PerFrameFunctionalGroupsSequence, spacings, orientations):
        measures, plane = pydicom.Dataset(), pydicom.Dataset()
        measures.PixelSpacing, plane.ImageOrientationPatient = spacing, orientation
        frame.PixelMeasuresSequence, frame.PlaneOrientationSequence = [measures], [plane]
        positions.append(np.array(frame.PlanePositionSequence[0].ImagePositionPatient, float))
    upscale_geometry(ds, 2)
    for frame, spacing, orientation, position in zip(ds.PerFrameFunctionalGroupsSequence, spacings, orientations,
                                                     positions):
        assert [float(v) for v in frame.PixelMeasuresSequence[0].PixelSpacing] == [s / 2 for s in spacing]
        expected = _centre(position, orientation, spacing, -0.25, -0.25)
        np.testing.assert_allclose(np.array(frame.PlanePositionSequence[0].ImagePositionPatient, float), expected)


def test_detector_and_scanned_spacings_are_halved_and_unscalable_images_refused(upscaled):
    _, sources, outputs = upscaled
    src, out = _read(sources["dx.dcm"]), _read(outputs["dx.dcm"])
    assert [float(v) for v in out.ImagerPixelSpacing] == [float(v) / 2 for v in src.ImagerPixelSpacing]
    ds = _read(pydicom_file("CT_small.dcm"))
    ds.NominalScannedPixelSpacing = [0.3, 0.2]
    upscale_geometry(ds, 2)
    assert [float(v) for v in ds.NominalScannedPixelSpacing] == [0.15, 0.1]
    ultrasound = _read(pydicom_file("CT_small.dcm"))
    ultrasound.SequenceOfUltrasoundRegions = [pydicom.Dataset()]
    with pytest.raises(GeometryError, match="cannot rescale SequenceOfUltrasoundRegions"):
        upscale_geometry(ultrasound, 2)
    lost = _read(pydicom_file("CT_small.dcm"))
    del lost.PixelSpacing
    with pytest.raises(GeometryError, match="Image Position .* without Pixel Spacing"):
        upscale_geometry(lost, 2)


def test_overlays_are_upscaled_with_the_image(upscaled):
    _, sources, outputs = upscaled
    src, out = _read(sources["MR-SIEMENS-DICOM-WithOverlays.dcm"]), _read(outputs["MR-SIEMENS-DICOM-WithOverlays.dcm"])
    before, after = src.overlay_array(0x6000), out.overlay_array(0x6000)
    assert before.sum() > 0 and (out[0x6000, 0x0010].value, out[0x6000, 0x0011].value) == (out.Rows, out.Columns)
    np.testing.assert_array_equal(after, nearest(before, 2))


def test_derivation_says_super_resolution(upscaled):
    _, sources, outputs = upscaled
    out = _read(outputs["CT_small.dcm"])
    code = out.DerivationCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == ("113085", "DCM", "Spatial resampling")
    assert out.DerivationDescription.startswith("x2 super-resolution by medclear")
    assert "nearest-sr" in out.DerivationDescription and "strength 1" in out.DerivationDescription
    assert out.SourceImageSequence[0].ReferencedSOPInstanceUID == _read(sources["CT_small.dcm"]).SOPInstanceUID


@pytest.mark.dicom3tools
def test_upscaled_outputs_add_no_dciodvfy_or_dcentvfy_errors(upscaled):
    _, sources, outputs = upscaled
    for name, output in outputs.items():
        assert new_errors(sources[name], output) == set(), name
        result = subprocess.run(["dcentvfy", str(sources[name]), str(output)], capture_output=True, text=True)
        assert [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")] == [], name


def test_preview_shows_nearest_bicubic_and_model(upscaled):
    _, sources, outputs = upscaled
    preview = np.asarray(Image.open(outputs["CT_small.dcm"].with_name("CT_small.preview.png")))
    rows, cols = _read(outputs["CT_small.dcm"]).Rows, _read(outputs["CT_small.dcm"]).Columns
    assert preview.shape == (rows, 3 * cols + 2 * 4)
    left, middle, right = (preview[:, i * (cols + 4) : i * (cols + 4) + cols] for i in range(3))
    np.testing.assert_array_equal(left, nearest(left[::2, ::2], 2))  # blocks of 2x2
    assert not np.array_equal(middle, left)  # bicubic is smooth, not blocky
    np.testing.assert_array_equal(right, left)  # this fixture model is nearest upsampling


def test_tiled_super_resolution_equals_whole_image(models):
    frames = np.random.default_rng(0).random((2, 150, 133), dtype=np.float32)
    calls = []
    with pipeline.open_model(models["sr"]) as backend:
        def infer(batch):
            calls.append(batch.shape)
            return backend.infer(batch)

        whole = enhance_frames(frames, infer, TilePlan(size_multiple=1, tile=0, scale=2))
        tiled = enhance_frames(frames, infer, TilePlan(size_multiple=1, tile=48, overlap=16, batch=3, scale=2))
    assert whole.shape == tiled.shape == (2, 300, 266)
    assert len(calls) > 4 and max(shape[2] for shape in calls[2:]) == 48  # really tiled
    np.testing.assert_allclose(tiled, whole, atol=1e-5)
    assert np.abs(whole - nearest(frames, 2)).max() > 1e-3  # and the model adds detail


def test_strength_blends_with_bicubic_and_refuses_above_one(models):
    image = np.random.default_rng(1).normal(40, 30, (40, 52)).astype(np.float32)
    with pipeline.open_model(models["sr"]) as backend:
        full = pipeline.enhance_values(backend, image, "CT")
        off = pipeline.enhance_values(backend, image, "CT", strength=0)
        half = pipeline.enhance_values(backend, image, "CT", strength=0.5)
        with pytest.raises(ValueError, match="super-resolution model takes 0 .bicubic. to 1"):
            pipeline.enhance_values(backend, image, "CT", strength=1.5)
    assert full.shape == off.shape == (80, 104)
    np.testing.assert_allclose(off, bicubic(image, 2), atol=1e-3)  # affine normalization: bicubic in HU
    np.testing.assert_allclose(half, (off + full) / 2, atol=1e-3)
    assert np.abs(full - off).max() > 1


def test_padding_pixels_come_back_as_blocks(models):
    image = np.random.default_rng(2).normal(0, 50, (24, 20)).astype(np.float32)
    padding = np.zeros(image.shape, bool)
    padding[:, :4] = True
    image[padding] = -3000
    with pipeline.open_model(models["sr"]) as backend:
        out = pipeline.enhance_values(backend, image, "CT", padding=padding)
    assert out.shape == (48, 40)
    assert np.all(out[:, :8] == -3000) and np.all(out[:, 8:] > -1000)


def test_cli_strength_above_one_and_too_large_images_are_refused(tmp_path, models, capsys):
    source = pydicom_file("CT_small.dcm")  # 128 x 128: 65536 values once upscaled
    assert main([str(source), "-o", str(tmp_path / "out"), "--model", str(models["sr"]), "--strength", "2"]) == 2
    assert "--strength: strength 2 is for denoising models" in capsys.readouterr().err
    assert main([str(source), "-o", str(tmp_path / "out"), "--model", str(models["sr"]), "--max-pixels", "40000"]) == 1
    assert "65536 values after x2 super-resolution exceeds the limit of 40000" in capsys.readouterr().err


def test_npy_output_is_upscaled_modality_values(tmp_path, models):
    source = pydicom_file("CT_small.dcm")
    assert main([str(source), "-o", str(tmp_path), "--model", str(models["nearest"]), "--format", "npy", "-q"]) == 0
    values = np.load(tmp_path / "CT_small.enhanced.npy")
    ds = _read(source)
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert values.shape == (1, 256, 256)
    np.testing.assert_allclose(values[0], nearest(hu, 2), atol=0.01)


def test_task_chooses_the_default_model_and_checks_a_given_one(tmp_path, models, monkeypatch, capsys):
    source = pydicom_file("CT_small.dcm")
    for variable in (select_module.MODEL_ENV, select_module.SR2_MODEL_ENV):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(select_module, "MODELS_DIR", tmp_path / "models")
    assert main([str(source), "-o", str(tmp_path / "a"), "--task", "sr2", "-q"]) == 2
    err = capsys.readouterr().err
    assert "no default model for --task sr2" in err and "medclear_sr2.fp32.onnx, medclear_sr2.int8.onnx" in err
    write_tiny_sr_onnx(tmp_path / "models" / "medclear_sr2.int8.onnx", model_name="shipped-sr")
    write_tiny_onnx(tmp_path / "models" / "medclear_student.fp32.onnx", size_multiple=1, model_name="shipped-dn")
    assert main([str(source), "-o", str(tmp_path / "sr"), "--task", "sr2", "-q"]) == 0
    assert _read(tmp_path / "sr" / "CT_small.enhanced.dcm").Rows == 256
    assert main([str(source), "-o", str(tmp_path / "dn"), "-q"]) == 0  # default task: the denoiser
    assert _read(tmp_path / "dn" / "CT_small.enhanced.dcm").Rows == 128
    capsys.readouterr()
    assert main([str(source), "-o", str(tmp_path / "b"), "--task", "sr2", "--model", str(models["denoise"])]) == 2
    assert "not sr2 (scale 2); choose the model for --task sr2" in capsys.readouterr().err
    assert main([str(source), "-o", str(tmp_path / "c"), "--task", "denoise", "--model", str(models["sr"])]) == 2
    assert "task 'sr2' (scale 2), not denoise" in capsys.readouterr().err
    monkeypatch.setenv(select_module.SR2_MODEL_ENV, str(models["sr"]))
    assert select_module.default_model(task="sr2") == models["sr"]


def test_open_model_task_check_and_derive_shape_check(models):
    with pytest.raises(BackendError, match="task 'denoise' .scale 1., not sr2"):
        pipeline.open_model(models["denoise"], task="sr2")
    from runtime.derived import Derivation, derive
    from runtime.pixels import read_encoding, stored_values

    source = _read(pydicom_file("CT_small.dcm"))
    encoding = read_encoding(source)
    stored = stored_values(source, encoding)
    with pytest.raises(ValueError, match="do not fit 256 x 256"):
        derive(source, stored, encoding, Derivation("x", "medclear test", "m", "id", scale=2))
    untouched = copy.deepcopy(source)
    out = derive(source, nearest(stored, 2), encoding, Derivation("x", "medclear test", "m", "id", scale=2))
    assert source.to_json_dict() == untouched.to_json_dict() and out.Rows == 256


def test_the_dicom_node_upscales_through_the_same_pipeline(tmp_path, models):
    from benchmarks.orthanc import free_port
    from node_fixtures import ct_series, node_in_process, send, spool_files, wait_for

    source = ct_series(tmp_path / "in", 1, "sr")[0]
    settings = {"spool": tmp_path / "spool", "forward": f"PACS@127.0.0.1:{free_port()}", "port": free_port(),
                "bind": "127.0.0.1", "model": models["nearest"], "settle_s": 0.1, "retry_base_s": 30}
    with node_in_process(**settings) as node:
        assert set(send([source], node.receiver.port).values()) == {0}
        wait_for(lambda: node.metrics.counters["enhanced"] == 1, 30, "one upscaled instance")
    (derived,) = [p for p in spool_files(tmp_path / "spool", "outgoing") if ".derived" in str(p.parent)]
    src, out = _read(source), _read(derived)
    assert (out.Rows, out.Columns) == (2 * src.Rows, 2 * src.Columns)
    assert out.DerivationCodeSequence[0].CodeValue == "113085"


def test_help_documents_the_task_and_super_resolution():
    from runtime.enhance import build_parser

    text = build_parser().format_help()
    for phrase in ("--task {denoise,sr2}", "MEDCLEAR_SR2_MODEL", "models/medclear_sr2.fp32.onnx",
                   "input (nearest x2) | bicubic | model", "0 = bicubic, 1 = the model", "Pixel Spacing",
                   "run this command twice"):
        assert phrase in text, phrase


@pytest.mark.slow
@pytest.mark.dicom3tools
def test_every_packaged_image_upscales_conformantly(tmp_path, models):
    """The runtime sweep (tests/test_runtime_sweep.py) with the SR model: ~45 s."""
    import re

    from runtime_fixtures import run_cli
    from test_runtime_sweep import FILES, NOT_ENHANCEABLE, OUTPUT_OF

    result = run_cli(*map(str, FILES), "-o", str(tmp_path), "--model", str(models["nearest"]), "--tile", "512",
                     "-q", timeout=900)
    assert "Traceback" not in result.stderr and int(re.search(r"(\d+) done", result.stdout).group(1)) >= 78
    reasons = dict(re.findall(r"^medclear: (?:FAILED|skipped) (.+?): (.*)$", result.stderr, re.M))
    refused = {path: reason for path, reason in reasons.items() if not NOT_ENHANCEABLE.search(reason)}
    # Expected refusals: ultrasound regions, and outputs over --max-pixels (deid-data's 2614 x 3072
    # radiograph doubles to 32 M values, over the default 25 M).
    expected = re.compile(r"super-resolution cannot rescale SequenceOfUltrasoundRegions"
                          r"|after x2 super-resolution exceeds the limit of \d+ \(--max-pixels\)")
    assert all(expected.search(r) for r in refused.values()), refused
    upscaled = [job for source, job in OUTPUT_OF.items() if str(source) not in reasons]
    for job in upscaled:
        output = job.output(tmp_path, "dicom")
        assert output.is_file() and new_errors(job.source, output) == set(), job.source
        assert _read(output).Rows == 2 * _read(job.source).Rows


def test_an_sr2_run_without_a_model_routes_files_by_modality(tmp_path, monkeypatch, capsys):
    from runtime.routing import modality_groups, routes_by_modality
    from runtime.inputs import Job

    monkeypatch.delenv(select_module.SR2_MODEL_ENV, raising=False)
    models_dir = tmp_path / "models"
    monkeypatch.setattr(select_module, "MODELS_DIR", models_dir)
    ct, mr = pydicom_file("CT_small.dcm"), pydicom_file("MR_small.dcm")
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"not dicom")
    jobs = [Job(path, Path(path.stem)) for path in (mr, ct, broken)]
    # Only the MR model installed: an MR-only run needs nothing else; a CT file finds no x2 model.
    mr_model = write_tiny_sr_onnx(models_dir / "medclear_sr2_mr.fp32.onnx", model_name="mr-sr", modalities=["MR"])
    assert modality_groups(jobs[:1], "sr2") == [(mr_model, jobs[:1])]
    with pytest.raises(select_module.ModelNotFoundError, match="no default model for --task sr2"):
        modality_groups(jobs, "sr2")
    # With the CT model too: MR files to the MR model, the rest (the broken file included: it fails there) to CT.
    ct_model = write_tiny_sr_onnx(models_dir / "medclear_sr2.int8.onnx", model_name="ct-sr", modalities=["CT"])
    assert modality_groups(jobs, "sr2") == [(mr_model, jobs[:1]), (ct_model, jobs[1:])]
    assert routes_by_modality("sr2", None, remote=False)
    assert not routes_by_modality("sr2", ct_model, False)
    assert not routes_by_modality("sr2", None, remote=True)
    monkeypatch.setenv(select_module.SR2_MODEL_ENV, str(ct_model))
    assert not routes_by_modality("sr2", None, remote=False)  # the variable names one model for every file
    monkeypatch.delenv(select_module.SR2_MODEL_ENV)

    assert main([str(mr), str(ct), "-o", str(tmp_path / "dry"), "--task", "sr2", "--dry-run"]) == 0
    listed = capsys.readouterr().out
    assert f"dry run with model {mr_model}" in listed and f"dry run with model {ct_model}" in listed
    assert main([str(mr), str(ct), str(broken), "-o", str(tmp_path / "out"), "--task", "sr2", "-q"]) == 1
    captured = capsys.readouterr()
    assert "2 done, 0 skipped, 1 failed" in captured.out
    assert "medclear_sr2_mr.fp32.onnx on onnxruntime" in captured.out and "medclear_sr2.int8.onnx on" in captured.out
    assert "FAILED" in captured.err and "broken.dcm" in captured.err
    assert _read(tmp_path / "out" / "MR_small.enhanced.dcm").Rows == 128
    assert _read(tmp_path / "out" / "CT_small.enhanced.dcm").Rows == 256
    # A strength the x2 models refuse is refused before any file is touched.
    assert main([str(mr), str(ct), "-o", str(tmp_path / "strong"), "--task", "sr2", "--strength", "2", "-q"]) == 2
    assert not (tmp_path / "strong").exists() or not any((tmp_path / "strong").rglob("*.dcm"))
