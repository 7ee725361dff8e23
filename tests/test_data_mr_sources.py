"""The data sources beside phantoms and scans: "atlas" (real MR anatomy from the MNI152 T1 template nilearn
ships), "natural" (scikit-image's bundled photographs: fine texture) and "natural_ct" (those as CT)."""

from __future__ import annotations

import builtins

import numpy as np
import pytest

from trainer.data import atlas, natural
from trainer.data.config import DataConfig
from trainer.data.datasets import data_summary, load_sources, split_sources
from trainer.data.reference import clean_reference


def test_slabs_are_apart_and_indices_stay_inside_them():
    assert atlas.TRAIN_SLAB[1] + 10 <= atlas.VALIDATION_SLAB[0]  # >= 10 mm of brain between the sets
    indices = atlas.slab_indices(atlas.TRAIN_SLAB, 24)
    assert len(indices) == 24 and indices == sorted(set(indices))
    assert atlas.TRAIN_SLAB[0] <= indices[0] and indices[-1] < atlas.TRAIN_SLAB[1]
    assert atlas.slab_indices(atlas.VALIDATION_SLAB, 0) == []
    with pytest.raises(ValueError, match="slab"):
        atlas.slab_indices((10, 12), 3)


def test_atlas_slices_are_brain_anatomy_in_training_and_validation_only():
    cfg = DataConfig(sources=["atlas"], modalities=["MR"], mr_atlas_slices=4, mr_atlas_validation_slices=2,
                     validation_fraction=0.1, max_reference_noise=0.005)
    images = load_sources(cfg)
    training, test = split_sources(images, cfg, "test")
    _, validation = split_sources(images, cfg, "validation")
    assert test == []
    assert [i.name for i in training] == [f"atlas:mni152-t1-z{z:03d}" for z in atlas.slab_indices(atlas.TRAIN_SLAB, 4)]
    assert [i.name for i in validation] == [f"atlas:mni152-t1-z{z:03d}" for z in atlas.slab_indices(atlas.VALIDATION_SLAB, 2)]
    for image in training + validation:
        assert image.modality == "MR" and image.source == "atlas" and image.pixel_mm == atlas.ATLAS_PIXEL_MM
        values = image.values
        assert values.dtype == np.float32 and np.isfinite(values).all() and values.min() == 0.0
        brain = values > 0.1 * values.max()
        assert 0.05 < brain.mean() < 0.8  # a head inside a zero background
        assert values[brain].std() > 0.1 * values.max()  # grey/white matter contrast, not a flat mask
    # the screen keeps them whole (its Haar MAD reads the template's 8-bit steps as noise)
    assert all(clean_reference(i, 0.005, 64) is i for i in training)
    summary = data_summary(cfg)
    assert summary["sources"] == ["atlas"] and summary["validation"]["names"] == [i.name for i in validation]


def test_atlas_counts_are_checked_when_the_config_is_read():
    with pytest.raises(ValueError, match="mr_atlas_slices"):
        DataConfig(mr_atlas_slices=atlas.TRAIN_SLAB[1] - atlas.TRAIN_SLAB[0] + 1)
    with pytest.raises(ValueError, match="mr_atlas_validation_slices"):
        DataConfig(mr_atlas_validation_slices=-1)
    assert load_sources(DataConfig(sources=["atlas"], modalities=["CT"])) == []  # MR only


def test_missing_nilearn_is_a_clear_error(monkeypatch):
    real_import = builtins.__import__

    def no_nilearn(name, *args, **kwargs):
        if name.startswith("nilearn"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_nilearn)
    with pytest.raises(RuntimeError, match="nilearn"):
        atlas.atlas_slices(1, 0)


def test_natural_photos_are_mr_like_images_split_by_name():
    cfg = DataConfig(sources=["natural"], modalities=["MR"], validation_fraction=0.1, max_reference_noise=0.005)
    images = load_sources(cfg)
    training, test = split_sources(images, cfg, "test")
    _, validation = split_sources(images, cfg, "validation")
    assert test == []
    assert [i.name for i in training] == [f"natural:{n}" for n in natural.TRAIN_PHOTOS]
    assert [i.name for i in validation] == [f"natural:{n}" for n in natural.VALIDATION_PHOTOS]
    assert not set(natural.TRAIN_PHOTOS) & set(natural.VALIDATION_PHOTOS)
    for image in images:
        assert image.modality == "MR" and image.values.ndim == 2 and image.values.dtype == np.float32
        assert 0 <= image.values.min() < image.values.max() <= natural.NATURAL_SCALE
        assert clean_reference(image, 0.005, 64) is image  # not screened (texture reads as noise)
    assert load_sources(DataConfig(sources=["natural"], modalities=["CT"])) == []
    assert data_summary(cfg)["training"]["names"] == [f"natural:{n}" for n in natural.TRAIN_PHOTOS]


def test_template_and_photographs_are_not_scanned_images():
    """data.real_image_share and the CT own-noise match count only images from one real scan."""
    cfg = DataConfig(sources=["natural", "atlas"], modalities=["MR"], mr_atlas_slices=1, mr_atlas_validation_slices=0)
    images = load_sources(cfg)
    assert {i.source for i in images} == {"natural", "atlas"} and not any(i.scanned for i in images)
    assert load_sources(cfg, test_only=True) == []  # neither holds a test image: not even loaded


def test_training_photographs_as_ct_slices_in_a_body_outline_train_only():
    """Source "natural_ct": the training photographs as soft-tissue HU inside an elliptical body,
    air outside the scanner's circle (the forward projection needs it); training only, not a scan."""
    cfg = DataConfig(sources=["natural_ct"], modalities=["CT"], phantom_size=96, validation_fraction=0.1)
    images = load_sources(cfg)
    training, test = split_sources(images, cfg, "test")
    _, validation = split_sources(images, cfg, "validation")
    assert test == [] and validation == [] and load_sources(cfg, test_only=True) == []
    assert [i.name for i in training] == [f"natural_ct:{n}" for n in natural.TRAIN_PHOTOS]
    rows, cols = (np.mgrid[:96, :96] - 47.5) / 48.0
    outside_circle = rows ** 2 + cols ** 2 > 1.0
    for image in images:
        assert image.modality == "CT" and image.values.shape == (96, 96) and not image.scanned
        assert np.all(image.values[outside_circle] == natural.AIR_HU)
        body = image.values[image.values > natural.AIR_HU]
        assert body.size > 0.3 * image.values.size and body.std() > 10  # texture, not a flat disc
        assert natural.NATURAL_CT_HU[0] <= body.min() and body.max() <= natural.NATURAL_CT_HU[1]
    assert load_sources(DataConfig(sources=["natural_ct"], modalities=["MR"])) == []  # CT only
