"""Pairing low/full-dose DICOM series, and serving them as training/held-out pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from trainer.data import DataConfig, build_heldout_set, build_training_set
from trainer.data.offline import offline_dicom_dirs
from trainer.data.pairing import find_dose_dirs, pair_series


def _ct_small() -> pydicom.Dataset:
    path = next(d / "CT_small.dcm" for d in offline_dicom_dirs() if (d / "CT_small.dcm").exists())
    return pydicom.dcmread(path)


def write_series(folder: Path, zs, instances, *, offset: int = 0, positions: bool = True, prefix: str = "IM") -> list[Path]:
    """A small CT series: copies of CT_small.dcm at slice positions ``zs``, pixel values + offset."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, (z, instance) in enumerate(zip(zs, instances)):
        ds = _ct_small()
        if positions:
            ds.ImagePositionPatient = [-158.0, -179.0, float(z)]
            ds.SliceLocation = float(z)
        else:
            del ds.ImagePositionPatient
            del ds.SliceLocation
        ds.InstanceNumber = int(instance)
        ds.ImageComments = f"z={z}"
        pixels = ds.pixel_array.astype(np.int16) + np.int16(offset + int(z))
        ds.PixelData = pixels.tobytes()
        path = folder / f"{prefix}{index:03d}.dcm"
        ds.save_as(path)
        paths.append(path)
    return paths


def test_pairs_by_slice_position(tmp_path):
    write_series(tmp_path / "full_dose", [0, 5, 10], [1, 2, 3])
    # Low-dose files are named and numbered differently; only their positions agree.
    write_series(tmp_path / "quarter_dose", [10, 0, 5], [7, 9, 8], offset=3, prefix="LD")
    low_dir, full_dir = find_dose_dirs(tmp_path)
    pairs = pair_series(low_dir, full_dir)
    assert len(pairs) == 3
    for pair in pairs:
        assert pydicom.dcmread(pair.low).ImageComments == pydicom.dcmread(pair.full).ImageComments
        assert pair.key.startswith("position")


def test_pairs_by_instance_number_without_positions(tmp_path):
    write_series(tmp_path / "full", [0, 5, 10], [1, 2, 3], positions=False)
    write_series(tmp_path / "low", [10, 0, 5], [3, 1, 2], positions=False, prefix="LD")
    pairs = pair_series(tmp_path / "low", tmp_path / "full")
    assert [p.key for p in pairs] == ["instance 1", "instance 2", "instance 3"]
    for pair in pairs:
        assert pydicom.dcmread(pair.low).ImageComments == pydicom.dcmread(pair.full).ImageComments


def test_unmatched_slice_is_a_clear_error(tmp_path):
    write_series(tmp_path / "full_dose", [0, 5], [1, 2])
    extra = write_series(tmp_path / "quarter_dose", [0, 5, 15], [1, 2, 3], prefix="LD")[-1]
    with pytest.raises(ValueError, match=rf"{extra.name}.*no full-dose slice at position 15\.00"):
        pair_series(tmp_path / "quarter_dose", tmp_path / "full_dose")


def test_missing_low_dose_slice_is_a_clear_error(tmp_path):
    missing = write_series(tmp_path / "full_dose", [0, 5], [1, 2])[-1]
    write_series(tmp_path / "quarter_dose", [0], [1], prefix="LD")
    with pytest.raises(ValueError, match=rf"{missing.name}.*no low-dose slice"):
        pair_series(tmp_path / "quarter_dose", tmp_path / "full_dose")


def test_non_dicom_files_are_ignored_when_pairing(tmp_path):
    write_series(tmp_path / "full_dose", [0], [1])
    write_series(tmp_path / "quarter_dose", [0], [1], prefix="LD")
    (tmp_path / "quarter_dose" / "README.txt").write_text("not dicom")
    assert len(pair_series(tmp_path / "quarter_dose", tmp_path / "full_dose")) == 1


def _paired_config(tmp_path: Path, **overrides) -> DataConfig:
    values = dict(sources=[], paired_low_dir=str(tmp_path / "quarter_dose"), paired_full_dir=str(tmp_path / "full_dose"),
                  patch_size=32, patches_per_epoch=8, heldout_fraction=0.0, modalities=["CT"])
    values.update(overrides)
    return DataConfig(**values)


def test_paired_directories_serve_real_low_dose_pairs(tmp_path):
    write_series(tmp_path / "full_dose", [0, 5], [1, 2])
    write_series(tmp_path / "quarter_dose", [0, 5], [1, 2], offset=41, prefix="LD")
    dataset = build_training_set(_paired_config(tmp_path, augment=False))
    degraded, clean = dataset[0]
    assert degraded.shape == (1, 32, 32)
    # The low-dose series was written 41 HU brighter: the pair carries exactly that offset.
    np.testing.assert_allclose((degraded - clean).numpy(), 41.0 / 4095.0, atol=1e-6)
    assert dataset.images[0].variants[0].label == "ct_paired_quarter_dose"


def test_augmentation_moves_both_images_alike(tmp_path):
    write_series(tmp_path / "full_dose", [0, 5], [1, 2])
    write_series(tmp_path / "quarter_dose", [0, 5], [1, 2], offset=41, prefix="LD")
    dataset = build_training_set(_paired_config(tmp_path, augment=True, noise_aug_prob=0.0, elastic_prob=1.0))
    for index in range(len(dataset)):
        degraded, clean = dataset[index]
        # Rotation, elastic warp and flips are one map for both: the constant offset survives.
        np.testing.assert_allclose((degraded - clean).numpy(), 41.0 / 4095.0, atol=1e-5)


def test_paired_directory_as_a_source_and_heldout(tmp_path):
    write_series(tmp_path / "full_dose" / "P1", [0, 5], [1, 2])
    write_series(tmp_path / "quarter_dose" / "P1", [0, 5], [1, 2], offset=10, prefix="LD")
    cfg = DataConfig(sources=[str(tmp_path)], modalities=["CT"], heldout_fraction=0.999999)
    heldout = build_heldout_set(cfg)  # every group held out
    assert len(heldout) == 2 and {h.degradation for h in heldout} == {"ct_paired_quarter_dose"}
    assert all(h.degraded.shape == (128, 128) for h in heldout)
    with pytest.raises(ValueError, match="no training images"):
        build_training_set(cfg)
