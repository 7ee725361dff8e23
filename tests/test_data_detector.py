"""Degraded radiographs clipped to the range their file can hold (data.clip_xray_to_detector):
the image a model is trained, validated and dose-curve scored on is the one a DICOM file of it
holds (issue 11; docs/DATA.md)."""

import dataclasses

import numpy as np
import pydicom
import pytest

from runtime.image_contract import modality_image
from runtime.normalization import denormalize
from runtime.pixels import PixelEncoding, from_modality, modality_range, to_modality
from trainer.data import DataConfig, build_heldout_set, build_training_set
from trainer.data.offline import offline_dicom_entries

XRAY_PHANTOMS = dict(sources=["phantom"], modalities=["DX"], xray_phantoms=2, xray_validation_phantoms=2,
                     phantom_size=96, heldout_phantoms=0, patch_size=32, patches_per_epoch=64, augment=False,
                     noise_aug_prob=0.0, xray_noise="quantum", xray_photons=[300], train_xray_photon_range=[150, 300])


def _encoding(**changes) -> PixelEncoding:
    base = PixelEncoding(bits_allocated=16, bits_stored=10, signed=False, photometric="MONOCHROME2", slope=1.0,
                         intercept=0.0, padding_value=None, padding_range_limit=None, modality="CR")
    return dataclasses.replace(base, **changes)


def test_modality_range_is_what_the_stored_range_maps_to():
    assert modality_range(_encoding()) == (0.0, 1023.0)
    assert modality_range(_encoding(photometric="MONOCHROME1")) == (0.0, 1023.0)
    signed = _encoding(bits_stored=12, signed=True, slope=2.0, intercept=-1024.0, modality="CT")
    assert modality_range(signed) == (-2048.0 * 2 - 1024.0, 2047.0 * 2 - 1024.0)
    # Every value the encoding round-trips lies inside the range, and the ends are reached.
    low, high = modality_range(signed)
    stored = np.array([[-9000.0, 0.0, 9000.0]])
    back = to_modality(from_modality(stored, signed), signed)
    assert back.min() == low and back.max() == high


def test_synthetic_radiographs_saturate_at_their_open_field_when_asked():
    clipped = build_heldout_set(DataConfig(**XRAY_PHANTOMS, clip_xray_to_detector=True), "validation")
    plain = build_heldout_set(DataConfig(**XRAY_PHANTOMS), "validation")
    by_name = {(i.name, i.degradation): i for i in plain}
    for image in clipped:
        unclipped = by_name[(image.name, image.degradation)].degraded
        floor = float(image.clean.min())
        if image.name.endswith("-0"):  # even: a saturating detector
            assert image.degraded.min() >= floor
            below = unclipped < floor
            assert below.mean() > 0.05  # the open field's noise reached below it before
            np.testing.assert_array_equal(image.degraded[~below], unclipped[~below])
        else:
            np.testing.assert_array_equal(image.degraded, unclipped)


def test_training_patches_are_clipped_like_the_evaluation_images():
    data = build_training_set(DataConfig(**XRAY_PHANTOMS, clip_xray_to_detector=True))
    saturating = [pool for pool in data.images if pool.limits is not None]
    assert len(saturating) == 1 and saturating[0].limits[0] == pytest.approx(float(saturating[0].clean.min()))
    lowest = min(float(data[i][0][0].min()) for i in range(len(data)))
    free = [pool for pool in data.images if pool.limits is None]
    assert lowest < float(free[0].clean.min())  # the other image's noise is not clipped
    assert all(pool.limits is None for pool in build_training_set(DataConfig(**XRAY_PHANTOMS)).images)


def test_real_radiograph_test_image_is_what_its_dicom_file_holds():
    """RG3 (10-bit CR): its dark border sits at the stored floor, so low-dose noise there is lost in
    a file. With the flag the evaluated image equals its own DICOM round trip; without, it does not."""
    path = dict(offline_dicom_entries())["pydicom-data/RG3_J2KR.dcm"]
    _, encoding, _ = modality_image(pydicom.dcmread(path))
    config = dict(sources=["offline"], modalities=["CR"], xray_noise="quantum", xray_photons=[1000])

    def round_trip_error(clip: bool) -> float:
        image = next(i for i in build_heldout_set(DataConfig(**config, clip_xray_to_detector=clip), "test")
                     if "RG3" in i.name)
        values = denormalize(image.degraded, image.state)
        written = to_modality(from_modality(values, encoding), encoding)
        return float(np.abs(written - values).max())

    assert round_trip_error(clip=True) <= 0.5 + 1e-3  # rounding to stored integers only
    assert round_trip_error(clip=False) > 5  # the border's noise below the floor
