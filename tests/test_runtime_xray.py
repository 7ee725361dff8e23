"""X-ray end to end: CR and DX, MONOCHROME1 and MONOCHROME2, enhanced (not skipped) when the
model's contract lists them; geometry and photometric kept, strength 0 exact, inversion undone."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
from runtime_fixtures import make_smoothing_model, make_xray, new_errors, pydicom_file, reference_smoothing

from runtime.enhance import main
from runtime.model_contract import ModelContract

KEPT = ("Modality", "SOPClassUID", "Rows", "Columns", "PhotometricInterpretation", "BitsAllocated", "BitsStored",
        "PixelRepresentation", "ImagerPixelSpacing", "PixelSpacing", "PatientOrientation", "StudyInstanceUID")


@pytest.fixture(scope="module")
def xray_runs(tmp_path_factory):
    """The packaged CR radiographs and made CR/DX ones, enhanced at strength 1 and 0."""
    root = tmp_path_factory.mktemp("xray")
    contract = ModelContract(modalities=("CT", "MR", "CR", "DX"), model_name="xray-smoothing")
    model = make_smoothing_model(root / "model.onnx", contract=contract)
    (root / "in").mkdir()
    sources = {name: shutil.copy(pydicom_file(name), root / "in" / name) for name in ("RG1_J2KR.dcm", "RG3_J2KR.dcm")}
    for modality, photometric in (("CR", "MONOCHROME2"), ("DX", "MONOCHROME1"), ("DX", "MONOCHROME2")):
        name = f"{modality}_{photometric}.dcm"
        sources[name] = make_xray(root / "in" / name, modality, photometric)
    runs = {}
    for strength in ("1", "0"):
        out = root / f"out{strength}"
        code = main([*map(str, sources.values()), "-o", str(out), "--model", str(model), "-q", "--strength", strength])
        runs[strength] = (code, {name: out / name.replace(".dcm", ".enhanced.dcm") for name in sources})
    return sources, runs


def test_cr_and_dx_are_enhanced_not_skipped(xray_runs):
    sources, runs = xray_runs
    for code, outputs in runs.values():
        assert code == 0
        assert all(path.is_file() for path in outputs.values()), outputs
    headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in sources.values()]
    photometrics = {(ds.Modality, ds.PhotometricInterpretation) for ds in headers}
    assert photometrics == {("CR", "MONOCHROME1"), ("CR", "MONOCHROME2"), ("DX", "MONOCHROME1"), ("DX", "MONOCHROME2")}


def test_geometry_and_photometric_interpretation_are_kept(xray_runs):
    sources, runs = xray_runs
    for name, output in runs["1"][1].items():
        src, out = pydicom.dcmread(sources[name]), pydicom.dcmread(output)
        for keyword in KEPT:
            assert out.get(keyword) == src.get(keyword), (name, keyword)
        assert out.ImageType[0] == "DERIVED"
        assert out.DerivationDescription.endswith("% of the p0.5-p99.5 range; strength 1"), name


def test_strength_zero_gives_back_the_stored_pixels(xray_runs):
    sources, runs = xray_runs
    for name, output in runs["0"][1].items():
        np.testing.assert_array_equal(pydicom.dcmread(output).pixel_array, pydicom.dcmread(sources[name]).pixel_array)


def test_monochrome1_inversion_round_trips(xray_runs):
    """Inversion and normalization are affine and the fixture's smoothing keeps constants, so the
    stored output is the smoothing of the stored input; a missing re-inversion would flip it."""
    sources, runs = xray_runs
    for name, output in runs["1"][1].items():
        src, out = pydicom.dcmread(sources[name]), pydicom.dcmread(output)
        stored, enhanced = src.pixel_array.astype(np.float64), out.pixel_array.astype(np.float64)
        expected = reference_smoothing(stored.astype(np.float32))
        assert np.abs(enhanced - expected)[1:-1, 1:-1].max() <= 1.0, name
        assert np.abs(enhanced - stored).max() > 5, name  # and it did change the image


@pytest.mark.dicom3tools
def test_xray_outputs_add_no_dciodvfy_errors(xray_runs):
    sources, runs = xray_runs
    for name, output in runs["1"][1].items():
        assert new_errors(sources[name], output) == set(), name
