"""Derived DICOM: conformant tags, HU preserved, dciodvfy/dcentvfy clean relative to the source."""

from __future__ import annotations

import subprocess

import numpy as np
import pydicom
import pytest
from runtime_fixtures import make_smoothing_model, new_errors, pydicom_file, reference_smoothing

from runtime.derived import DERIVATION_CODE, derive, Derivation
from runtime.enhance import main
from runtime.pixels import read_encoding, stored_values

pytestmark = pytest.mark.dicom3tools

DERIVATION = Derivation("Denoised by test", "medclear test", "test-model", "abc123")


@pytest.fixture(scope="module")
def enhanced(tmp_path_factory):
    """Run the CLI once over a CT, an MR, an enhanced CT, an enhanced MR and lossy sources."""
    root = tmp_path_factory.mktemp("derived")
    model = make_smoothing_model(root / "model.onnx")
    names = ["CT_small.dcm", "MR_small.dcm", "eCT_Supplemental.dcm", "emri_small_big_endian.dcm",
             "SC_jpeg_no_color_transform.dcm", "MR2_J2KI.dcm", "JPEG-lossy.dcm",
             "emri_small_RLE.dcm"]  # an Enhanced MR without functional groups
    sources = {}
    for name in names:
        try:
            sources[name] = pydicom_file(name)
        except FileNotFoundError:
            pass
    code = main([*map(str, sources.values()), "-o", str(root / "out"), "--model", str(model), "-q", "--tile", "256"])
    outputs = {name: root / "out" / (path.stem + ".enhanced.dcm") for name, path in sources.items()}
    return code, sources, {n: o for n, o in outputs.items() if o.exists()}


def test_derived_instance_tags(enhanced):
    _, sources, outputs = enhanced
    src, out = pydicom.dcmread(sources["CT_small.dcm"]), pydicom.dcmread(outputs["CT_small.dcm"])
    assert out.SOPInstanceUID != src.SOPInstanceUID
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert out.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert out.SeriesInstanceUID != src.SeriesInstanceUID and out.SeriesNumber != src.SeriesNumber
    assert "medclear enhanced (test-smoothing " in out.SeriesDescription  # enhanced, and by which model
    for keyword in ("PatientName", "PatientID", "StudyInstanceUID", "FrameOfReferenceUID",
                    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
                    "RescaleSlope", "RescaleIntercept", "BitsStored", "PixelRepresentation", "Rows", "Columns"):
        assert out.get(keyword) == src.get(keyword), keyword
    assert list(out.ImageType[:2]) == ["DERIVED", "SECONDARY"] and list(out.ImageType[2:]) == list(src.ImageType[2:])
    assert out.HighBit == out.BitsStored - 1
    code = out.DerivationCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator) == (DERIVATION_CODE.value, "DCM")
    reference = out.SourceImageSequence[0]
    assert reference.ReferencedSOPInstanceUID == src.SOPInstanceUID
    assert reference.PurposeOfReferenceCodeSequence[0].CodeValue == "121322"
    equipment = out.ContributingEquipmentSequence[-1]
    assert equipment.Manufacturer == "medclear"
    assert equipment.PurposeOfReferenceCodeSequence[0].CodeValue == "109103"


def test_hu_are_preserved_and_image_is_smoothed(enhanced):
    _, sources, outputs = enhanced
    src, out = pydicom.dcmread(sources["CT_small.dcm"]), pydicom.dcmread(outputs["CT_small.dcm"])
    to_hu = lambda ds: ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)  # noqa: E731
    before, after = to_hu(src), to_hu(out)
    # CT normalization is linear in HU and so is the fixture model: in HU the output is the
    # same 3x3 smoothing of the input, up to rounding to stored integers (interior pixels).
    expected = reference_smoothing(before.astype(np.float32))
    assert np.abs(after - expected)[1:-1, 1:-1].max() <= 1.0
    assert np.abs(after - before).max() > 10  # and it did change the image


def test_enhanced_multiframe_keeps_functional_groups(enhanced):
    _, sources, outputs = enhanced
    src, out = pydicom.dcmread(sources["eCT_Supplemental.dcm"]), pydicom.dcmread(outputs["eCT_Supplemental.dcm"])
    assert out.NumberOfFrames == src.NumberOfFrames
    assert len(out.PerFrameFunctionalGroupsSequence) == len(src.PerFrameFunctionalGroupsSequence)
    step = out.SharedFunctionalGroupsSequence[0].DerivationImageSequence[0]
    assert step.SourceImageSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    assert out.SourceImageEvidenceSequence[0].StudyInstanceUID == src.StudyInstanceUID
    assert out.ImageType[0] == "DERIVED"


def test_lossy_sources_are_flagged(enhanced):
    _, sources, outputs = enhanced
    lossy = [name for name in ("SC_jpeg_no_color_transform.dcm", "MR2_J2KI.dcm", "JPEG-lossy.dcm") if name in outputs]
    assert lossy, "no lossy source available"
    for name in lossy:
        assert pydicom.dcmread(outputs[name]).LossyImageCompression == "01", name
    assert pydicom.dcmread(outputs["CT_small.dcm"]).get("LossyImageCompression", "00") == "00"


def test_outputs_pass_dciodvfy_and_dcentvfy(enhanced):
    code, sources, outputs = enhanced
    assert outputs.keys() >= {"CT_small.dcm", "MR_small.dcm", "eCT_Supplemental.dcm", "emri_small_big_endian.dcm",
                              "emri_small_RLE.dcm"}
    for name, output in outputs.items():
        assert new_errors(sources[name], output) == set(), name
        result = subprocess.run(["dcentvfy", str(sources[name]), str(output)], capture_output=True, text=True)
        errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]
        assert errors == [], name


def test_new_errors_detects_a_broken_output(enhanced, tmp_path):
    """The dciodvfy comparison can fail: drop a Type 1 attribute and it reports it."""
    _, sources, outputs = enhanced
    broken = pydicom.dcmread(outputs["CT_small.dcm"])
    del broken.SOPClassUID
    broken.save_as(tmp_path / "broken.dcm")
    assert new_errors(sources["CT_small.dcm"], tmp_path / "broken.dcm")


def test_derive_keeps_source_untouched_and_padding():
    source = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    source.PixelPaddingValue = -2000 if source.PixelRepresentation else 0
    encoding = read_encoding(source)
    stored = stored_values(source, encoding)
    before = source.to_json_dict()
    out = derive(source, stored, encoding, DERIVATION)
    assert source.to_json_dict() == before
    assert out.PixelPaddingValue == source.PixelPaddingValue
    np.testing.assert_array_equal(out.pixel_array, stored[0])
