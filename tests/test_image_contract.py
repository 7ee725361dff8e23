"""The image contract round trip on every real image available offline."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from runtime.image_contract import (
    AIR_HU,
    OUT_OF_FIELD_HU,
    excluded_pixels,
    modality_image,
    modality_values,
    prepare,
    restore,
)
from runtime.model_contract import ModelContract, ModelContractError
from runtime.normalization import CT_DEFAULT, PERCENTILE_DEFAULT, NormalizationSpec, normalize
from runtime.pixels import PixelEncoding, UnsupportedImageError, from_modality, to_modality
from trainer.data.offline import offline_dicom_entries


# Why a packaged file is no image for this sweep: no pixel data, not DICOM, colour, 1-bit, or a
# Modality LUT Sequence (unsupported by the runtime).
NOT_AN_IMAGE = re.compile(
    r"no 'Pixel Data'|DICOM File Meta Information header|is not greyscale|Bits Allocated 1 is not supported"
    r"|Modality LUT Sequence is not supported"
)
# pydicom's test files that are broken on purpose or that the installed decoders cannot read, with
# the error each gives. Any other file that fails to decode is a regression.
UNDECODABLE = {
    "pydicom/JPEG-lossy.dcm": "Unable to decode",  # pylibjpeg: misplaced marker segment
    "pydicom/JPEG2000-embedded-sequence-delimiter.dcm": "Unable to decode",
    "pydicom/MR_truncated.dcm": "less than expected",
    "pydicom/badVR.dcm": "invalid literal for int()",
    "pydicom/meta_missing_tsyntax.dcm": "no (0002,0010) 'Transfer Syntax UID'",
    "pydicom/nested_priv_SQ.dcm": "Missing required element: (0028,0100) 'Bits Allocated'",
}
# pydicom 3.0 + pydicom-data 1.0 hold 236 candidate files, 82 of them images this sweep decodes.
# Newer packages may add images; fewer means files went missing (pydicom-data not installed?).
IMAGES_IN_THE_PACKAGES = 82


def _sweep() -> tuple[list[Path], dict[str, str]]:
    """(files that decode and prepare, {label: why} for every other packaged file)."""
    images, rejected = [], {}
    for label, path in offline_dicom_entries():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # packaged test files are deliberately odd
                ds = pydicom.dcmread(path)
                ds.pixel_array  # noqa: B018 - decoding is the check
                prepare(ds, PERCENTILE_DEFAULT)
        except Exception as error:  # judged by test_every_file_is_an_image_or_rejected_for_a_known_reason
            rejected[label] = f"{type(error).__name__}: {error}"
            continue
        images.append(path)
    return images, rejected


OFFLINE_IMAGES, REJECTED = _sweep()


def test_offline_images_are_available():
    modalities = {str(pydicom.dcmread(p, stop_before_pixels=True).get("Modality", "")) for p in OFFLINE_IMAGES}
    assert len(OFFLINE_IMAGES) >= IMAGES_IN_THE_PACKAGES
    assert {"CT", "MR", "CR"} <= modalities


def test_every_file_is_an_image_or_rejected_for_a_known_reason():
    def expected(label: str, why: str) -> bool:
        return UNDECODABLE[label] in why if label in UNDECODABLE else NOT_AN_IMAGE.search(why) is not None

    assert {label: why for label, why in REJECTED.items() if not expected(label, why)} == {}


@pytest.mark.parametrize("path", OFFLINE_IMAGES, ids=lambda p: p.name)
def test_round_trip_is_exact(path):
    ds = pydicom.dcmread(path)
    spec = CT_DEFAULT if ds.get("Modality") == "CT" else PERCENTILE_DEFAULT
    prepared = prepare(ds, spec)
    assert prepared.normalized.dtype == np.float32
    assert np.isfinite(prepared.normalized).all()
    stored = restore(prepared.normalized, prepared)
    assert stored.dtype == prepared.original_stored.dtype
    np.testing.assert_array_equal(stored, prepared.original_stored)


def test_ct_is_in_hounsfield_units():
    path = next(p for p in OFFLINE_IMAGES if p.name == "CT_small.dcm")
    ds = pydicom.dcmread(path)
    prepared = prepare(ds, CT_DEFAULT)
    hu = prepared.normalized * (CT_DEFAULT.hu_max - CT_DEFAULT.hu_min) + CT_DEFAULT.hu_min
    expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_allclose(hu[0], expected, atol=1e-2)


def _encoding(**overrides) -> PixelEncoding:
    base = dict(bits_allocated=16, bits_stored=12, signed=False, photometric="MONOCHROME2")
    base.update(overrides)
    return PixelEncoding(**base)


def test_monochrome1_is_inverted_so_brighter_is_larger():
    encoding = _encoding(photometric="MONOCHROME1", bits_stored=8, bits_allocated=8)
    stored = np.array([[0, 255]], dtype=np.uint8)
    values = to_modality(stored, encoding)
    assert values[0, 0] > values[0, 1]
    np.testing.assert_array_equal(from_modality(values, encoding), stored)


@pytest.mark.parametrize(
    ("signed", "bits", "low", "high"), [(False, 12, 0, 4095), (True, 12, -2048, 2047), (True, 16, -32768, 32767)]
)
def test_output_is_clipped_to_the_representable_range(signed, bits, low, high):
    encoding = _encoding(signed=signed, bits_stored=bits, slope=1.0, intercept=-1024.0)
    out = from_modality(np.array([-1e6, 1e6]), encoding)
    assert out.tolist() == [low, high]


def test_padding_pixels_keep_their_value():
    ds = pydicom.dcmread(next(p for p in OFFLINE_IMAGES if p.name == "CT_small.dcm"))
    ds.PixelPaddingValue = int(ds.pixel_array.min())
    prepared = prepare(ds, CT_DEFAULT)
    assert prepared.padding is not None and prepared.padding.any()
    stored = restore(prepared.normalized + 0.5, prepared)  # the "model" brightens everything
    np.testing.assert_array_equal(stored[prepared.padding], prepared.original_stored[prepared.padding])
    assert (stored[~prepared.padding] != prepared.original_stored[~prepared.padding]).any()


def test_only_a_ct_normalization_excludes_values_below_air():
    values = np.full((1, 6, 6), -3024.0, np.float32)
    values[0, 1:5, 1:5] = np.linspace(-1400, 2000, 16).reshape(4, 4)  # noisy air to bone stays image
    np.testing.assert_array_equal(excluded_pixels(values, CT_DEFAULT), values < OUT_OF_FIELD_HU)
    assert excluded_pixels(values, CT_DEFAULT).sum() == 20
    assert excluded_pixels(values, PERCENTILE_DEFAULT) is None
    padding = np.zeros(values.shape, bool)
    padding[0, 2, 2] = True
    assert excluded_pixels(values, CT_DEFAULT, padding).sum() == 21
    assert excluded_pixels(values, PERCENTILE_DEFAULT, padding) is padding
    assert excluded_pixels(np.zeros((1, 4, 4), np.float32), CT_DEFAULT) is None
    assert excluded_pixels(np.full((1, 2, 2), -np.inf, np.float32), CT_DEFAULT) is None  # left to the finite check


def test_a_real_scans_out_of_field_fill_is_normalized_as_air_and_restored():
    """693_J2KR fills the corners outside its reconstruction circle with -3024 HU while declaring
    -2000 as its Pixel Padding Value: the fill is found by value, seen as air, written back as is."""
    ds = pydicom.dcmread(next(p for p in OFFLINE_IMAGES if p.name == "693_J2KR.dcm"))
    values = modality_image(ds)[0]
    outside = values < OUT_OF_FIELD_HU
    assert 0.1 < outside.mean() < 0.4 and (values[outside] == -3024.0).all()
    prepared = prepare(ds, CT_DEFAULT)
    np.testing.assert_array_equal(prepared.padding, outside)
    np.testing.assert_allclose(prepared.normalized[outside], normalize(np.float32(AIR_HU), prepared.states[0]), atol=1e-6)
    stored = restore(prepared.normalized + 0.5, prepared)
    np.testing.assert_array_equal(stored[outside], prepared.original_stored[outside])
    np.testing.assert_array_equal(modality_values(prepared.normalized, prepared)[outside], values[outside])


def test_percentile_normalization_maps_percentiles_to_unit_range():
    ds = pydicom.dcmread(next(p for p in OFFLINE_IMAGES if p.name == "MR_small.dcm"))
    prepared = prepare(ds, NormalizationSpec(kind="percentile", low_percentile=1, high_percentile=99))
    low, high = np.percentile(prepared.normalized, [1, 99])
    assert low == pytest.approx(0.0, abs=1e-5) and high == pytest.approx(1.0, abs=1e-5)


def test_non_greyscale_is_refused_with_a_reason():
    ds = Dataset()
    ds.PixelData = b"\0" * 12
    ds.PhotometricInterpretation = "RGB"
    with pytest.raises(UnsupportedImageError, match="RGB"):
        prepare(ds, CT_DEFAULT)
    with pytest.raises(UnsupportedImageError, match="no pixel data"):
        prepare(Dataset(), CT_DEFAULT)


def test_model_contract_round_trips_through_metadata():
    contract = ModelContract(modalities=("CT", "MR"), size_multiple=4, precision="int8", checkpoint_sha256="ab" * 32)
    again = ModelContract.from_metadata(contract.to_metadata())
    assert again == contract
    assert again.normalization_for("mr").kind == "percentile"
    assert again.normalization_for("CT").kind == "hu_linear"


def test_noise_conditioning_is_blind_by_default_and_written():
    metadata = ModelContract().to_metadata()
    assert metadata["medclear.noise_conditioning"] == "blind"
    del metadata["medclear.noise_conditioning"]  # model files from before the key still load
    assert ModelContract.from_metadata(metadata).noise_conditioning == "blind"


@pytest.mark.parametrize("value", ["noise_level", "BLIND", ""])
def test_other_noise_conditioning_is_refused_naming_the_value(value):
    metadata = ModelContract().to_metadata()
    metadata["medclear.noise_conditioning"] = value
    with pytest.raises(ModelContractError, match=rf"x.onnx: noise conditioning {value!r} .*supports 'blind', 'noise_map'"):
        ModelContract.from_metadata(metadata, source="x.onnx")


def test_noise_map_contract_has_two_input_channels_and_one_output_channel():
    contract = ModelContract.from_metadata(ModelContract(noise_conditioning="noise_map", scale=2).to_metadata())
    assert contract.noise_conditioning == "noise_map" and contract.input_channels == 2
    assert contract.output_shape((3, 2, 8, 16)) == (3, 1, 16, 32)
    assert ModelContract().input_channels == 1


def test_model_contract_missing_key_says_how_to_fix():
    metadata = ModelContract().to_metadata()
    del metadata["medclear.normalization"]
    with pytest.raises(ModelContractError, match="compiler export"):
        ModelContract.from_metadata(metadata, source="x.onnx")


def test_modality_lut_is_refused_rather_than_ignored():
    ds = pydicom.dcmread(next(p for p in OFFLINE_IMAGES if p.name == "CT_small.dcm"))
    ds.ModalityLUTSequence = [Dataset()]
    with pytest.raises(UnsupportedImageError, match="Modality LUT"):
        prepare(ds, CT_DEFAULT)


def test_per_frame_rescale_is_read_and_disagreement_refused():
    ds = pydicom.dcmread(next(p for p in OFFLINE_IMAGES if p.name == "CT_small.dcm"))
    del ds.RescaleSlope, ds.RescaleIntercept

    def frame(intercept: float) -> Dataset:
        transform = Dataset()
        transform.RescaleSlope, transform.RescaleIntercept = 1, intercept
        item = Dataset()
        item.PixelValueTransformationSequence = [transform]
        return item

    ds.PerFrameFunctionalGroupsSequence = [frame(-1024)]
    assert prepare(ds, CT_DEFAULT).encoding.intercept == -1024
    ds.PerFrameFunctionalGroupsSequence = [frame(-1024), frame(0)]
    with pytest.raises(UnsupportedImageError, match="differ between frames"):
        prepare(ds, CT_DEFAULT)


def test_modality_values_undo_the_normalization():
    ds = pydicom.dcmread(next(p for p in OFFLINE_IMAGES if p.name == "CT_small.dcm"))
    prepared = prepare(ds, CT_DEFAULT)
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    values = modality_values(prepared.normalized, prepared)
    assert values.dtype == np.float32 and values.shape == (1, *hu.shape)
    np.testing.assert_allclose(values[0], hu, atol=1e-3)


def test_noise_conditioning_follows_from_input_channels_and_back():
    from runtime.model_contract import conditioning_for_channels

    for conditioning in ("blind", "noise_map"):
        channels = ModelContract(noise_conditioning=conditioning).input_channels
        assert conditioning_for_channels(channels) == conditioning
    with pytest.raises(ValueError, match=r"1 \(the image\) or 2 \(the image and its noise map\).*not 3"):
        conditioning_for_channels(3)
