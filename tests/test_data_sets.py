"""Training/held-out sets: determinism, the fixed split, offline images and the summary."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from trainer.data import DataConfig, build_heldout_set, build_training_set, data_summary
from trainer.data.datasets import load_sources, normalization_table, spec_for, split_sources
from trainer.data.split import is_heldout, split_value

SMALL = dict(sources=["phantom"], phantom_count=3, phantom_size=64, heldout_phantoms=1, ct_angles=24,
             ct_noise_realizations=1, patch_size=32, patches_per_epoch=6)


def _items(dataset) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(d.numpy(), c.numpy()) for d, c in (dataset[i] for i in range(len(dataset)))]


def test_items_are_float32_patch_pairs():
    dataset = build_training_set(DataConfig(**SMALL))
    assert len(dataset) == 6
    degraded, clean = dataset[0]
    assert degraded.dtype == clean.dtype == torch.float32
    assert degraded.shape == clean.shape == (1, 32, 32)
    assert not torch.equal(degraded, clean)
    with pytest.raises(IndexError):
        dataset[6]


def test_training_set_is_deterministic_given_a_seed():
    first = _items(build_training_set(DataConfig(**SMALL)))
    again = _items(build_training_set(DataConfig(**SMALL)))
    for (a, b), (c, d) in zip(first, again):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    other = _items(build_training_set(DataConfig(**SMALL, seed=1)))
    assert not all(np.array_equal(a, c) for (a, _), (c, _) in zip(first, other))


def test_set_epoch_changes_patches_reproducibly():
    dataset = build_training_set(DataConfig(**SMALL))
    epoch0 = dataset[2][0].numpy()
    dataset.set_epoch(1)
    epoch1 = dataset[2][0].numpy()
    assert not np.array_equal(epoch0, epoch1)
    dataset.set_epoch(0)
    np.testing.assert_array_equal(dataset[2][0].numpy(), epoch0)


def test_without_augmentation_clean_patches_come_from_the_image():
    dataset = build_training_set(DataConfig(**SMALL, augment=False))
    _, clean = dataset[0]
    clean = clean.numpy()[0]
    assert any(
        _contains(pool.clean, clean) for pool in dataset.images
    ), "an unaugmented patch must be a crop of a training image"


def _contains(image: np.ndarray, patch: np.ndarray) -> bool:
    size = patch.shape[0]
    for top in range(image.shape[0] - size + 1):
        for left in range(image.shape[1] - size + 1):
            if np.array_equal(image[top : top + size, left : left + size], patch):
                return True
    return False


def test_phantom_heldout_set_is_fixed_and_separate():
    cfg = DataConfig(**SMALL)
    heldout = build_heldout_set(cfg)
    names = {h.name for h in heldout}
    assert names == {"phantom:shepp-logan", "phantom:heldout-0"}
    for h in heldout:
        assert h.degraded.dtype == h.clean.dtype == np.float32 and h.degraded.shape == (64, 64)
        assert h.degradation == "ct_dose_0.25_ramp" and h.level == 0.25 and h.kernel == "ramp" and h.spec.kind == "hu_linear"
    training_clean = [pool.clean for pool in build_training_set(cfg).images]
    for h in heldout:
        assert not any(np.array_equal(h.clean, clean) for clean in training_clean)


def test_split_rule_is_stable_and_by_name():
    assert split_value("offline:pydicom/CT_small.dcm") == split_value("offline:pydicom/CT_small.dcm")
    assert is_heldout("heldout:phantom:x", 0.0) and not is_heldout("train:phantom:x", 0.99)
    values = [split_value(f"group-{i}") for i in range(2000)]
    assert 0.27 < np.mean(np.asarray(values) < 0.3) < 0.33  # uniform enough for the fraction


def test_config_round_trip_and_errors():
    cfg = DataConfig(**SMALL)
    assert DataConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown DataConfig keys: bogus"):
        DataConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="dose_fractions"):
        DataConfig(dose_fractions=[0.0])
    with pytest.raises(ValueError, match="ct_hu_range"):
        DataConfig(ct_hu_range=[240, -160])


def test_full_dose_reference_gives_noisy_references_in_training_only():
    plain = DataConfig(**SMALL, augment=False, ct_hu_range=[-160, 240])
    paired = DataConfig(**SMALL, augment=False, ct_hu_range=[-160, 240], ct_full_dose_reference=True)
    (d0, c0), (d1, c1) = build_training_set(plain)[0], build_training_set(paired)[0]
    # Same patch of the same slice: the reference is now a noisy full-dose scan ...
    assert not torch.equal(c0, c1) and float((c1 - c0).std()) > 1e-3
    # ... and the input is noisier than its reference (a lower dose of the same scan).
    assert float((d1 - c1).std()) > float((c1 - c0).std())
    # Held-out references stay the original slices.
    for a, b in zip(build_heldout_set(plain), build_heldout_set(paired)):
        np.testing.assert_array_equal(a.clean, b.clean)
    assert data_summary(paired)["degradation"]["ct"]["full_dose_reference"] is True


def test_ct_hu_range_sets_the_ct_normalization_everywhere():
    cfg = DataConfig(**SMALL, ct_hu_range=[-160, 240])
    spec = spec_for("CT", cfg)
    assert (spec.kind, spec.hu_min, spec.hu_max) == ("hu_linear", -160.0, 240.0)
    assert normalization_table(cfg)["CT"] == spec.to_dict()
    assert spec_for("MR", cfg).kind == "percentile"
    # Held-out slices are normalized with it: 40 HU (the window's centre) is 0.5, unclipped.
    image = next(i for i in build_heldout_set(cfg) if i.modality == "CT")
    assert image.spec == spec
    hu = image.clean * (spec.hu_max - spec.hu_min) + spec.hu_min
    assert hu.min() < -900 and image.clean.min() < 0  # air stays representable below the range


# The offline images (pydicom + pydicom-data) are decoded once per process (~5 s).
OFFLINE = dict(sources=["offline"], ct_angles=12, ct_noise_realizations=1, patch_size=32, patches_per_epoch=4)


@pytest.fixture(scope="module")
def offline_split():
    cfg = DataConfig(**OFFLINE)
    return cfg, split_sources(load_sources(cfg), cfg)


def _thumb(values: np.ndarray) -> np.ndarray:
    from skimage.transform import resize

    t = resize(values.astype(np.float64), (32, 32), anti_aliasing=True)
    return (t - t.mean()) / (t.std() + 1e-9)


def test_offline_images_are_deduplicated(offline_split):
    _, (training, heldout) = offline_split
    names = [i.name for i in training + heldout]
    assert len(names) == len(set(names))
    # 693 is stored as J2K lossy/lossless and uncompressed: one image, the lossless one.
    copies = [n for n in names if "/693_" in n]
    assert copies == ["offline:pydicom-data/693_J2KR.dcm#0"]
    assert not any("16x16" in n or "/CT2/" in n for n in names)  # thumbnails skipped


def test_heldout_real_ct_slices_never_reach_training(offline_split):
    cfg, (training, heldout) = offline_split
    real_ct = [i for i in heldout if i.modality == "CT" and i.values.shape == (512, 512)]
    assert len(real_ct) >= 2
    assert {i.group for i in training}.isdisjoint({i.group for i in heldout})
    for held in real_ct:
        for train in training:
            if train.values.shape == held.values.shape:
                similarity = float(np.mean(_thumb(held.values) * _thumb(train.values)))
                assert similarity < 0.95, (held.name, train.name, similarity)
    assert sum(i.modality == "CT" and i.values.shape == (512, 512) for i in training) >= 2


def test_offline_heldout_set_and_summary(offline_split):
    cfg, (training, heldout) = offline_split
    cfg = DataConfig(**{**OFFLINE, "modalities": ["MR", "CR"]})
    pairs = build_heldout_set(cfg)
    assert {p.modality for p in pairs} == {"MR", "CR"}
    for p in pairs:
        assert p.spec.kind == "percentile" and max(p.clean.shape) <= cfg.heldout_max_side
        assert 0.005 < float(np.std(p.degraded - p.clean)) < 0.1
    summary = data_summary(cfg)
    json.dumps(summary)
    assert set(summary["heldout"]["names"]) == {p.name for p in pairs}
    assert summary["training"]["images"] > 0 and summary["seed"] == 0
    assert not set(summary["heldout"]["names"]) & set(summary["training"]["names"])


def test_directory_source_degrades_clean_images(tmp_path):
    from tests.test_data_pairing import write_series

    write_series(tmp_path / "series", [0, 5, 10], [1, 2, 3])
    cfg = DataConfig(sources=[str(tmp_path)], modalities=["CT"], ct_angles=16, ct_noise_realizations=1,
                     patch_size=32, patches_per_epoch=4, heldout_fraction=0.0)
    dataset = build_training_set(cfg)
    assert len(dataset.images) == 3 and dataset.images[0].variants[0].label == "ct_dose_0.25_ramp"
    summary = data_summary(cfg)
    assert summary["training"]["by_source"] == {"dir": 3} and summary["training"]["names"] == []
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_training_set(DataConfig(sources=[str(tmp_path / "nope")]))


def test_dataloader_workers_match_the_single_process_order():
    from torch.utils.data import DataLoader

    dataset = build_training_set(DataConfig(**SMALL))
    single = torch.cat([d for d, _ in DataLoader(dataset, batch_size=2, num_workers=0)])
    workers = torch.cat([d for d, _ in DataLoader(dataset, batch_size=2, num_workers=2)])
    assert torch.equal(single, workers)


def test_heldout_inputs_do_not_depend_on_the_training_seed():
    a = build_heldout_set(DataConfig(**SMALL))
    b = build_heldout_set(DataConfig(**SMALL, seed=5))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.degraded, y.degraded)


def test_mr_phantoms_are_band_limited_only_when_configured():
    """data.mr_phantom_band band-limits the MR phantoms (training and validation) as the magnitude of
    an acquisition of part of their band, the fraction drawn from the name; scans are left alone."""
    import dataclasses

    from trainer.data.kspace import band_limited_phantoms
    from trainer.data.sources import mr_phantom_images

    phantoms = mr_phantom_images(2, 64, validation_count=1)
    scan = dataclasses.replace(phantoms[0], name="offline:scan.dcm#0", source="offline")
    assert band_limited_phantoms([*phantoms, scan], None)[0] is phantoms[0]
    limited = band_limited_phantoms([*phantoms, scan], [0.5, 0.6])
    assert limited[-1] is scan
    for before, after in zip(phantoms, limited):
        assert after.name == before.name and (after.values >= 0).all() and not np.allclose(after.values, before.values)
        # Band-limited to at most 0.6 of Nyquist: (almost) no energy left beyond it (the magnitude adds a little).
        k = np.abs(np.fft.fftfreq(64)) / 0.5
        beyond = (k[:, None] > 0.6) | (k[None, :] > 0.6)
        energy = lambda values: float((np.abs(np.fft.fft2(values))[beyond] ** 2).sum())  # noqa: E731
        assert energy(after.values) < 0.05 * energy(before.values)
    np.testing.assert_array_equal(band_limited_phantoms(phantoms, [0.5, 0.6])[0].values, limited[0].values)
    with pytest.raises(ValueError, match="not both"):
        DataConfig(mr_phantom_band=[0.5, 1.0], sr_mr_phantom_band=[0.5, 1.0])
    with pytest.raises(ValueError, match="mr_phantom_band"):
        DataConfig(mr_phantom_band=[0.5, 1.5])
    # Wired into the data layer: load_sources band-limits the MR phantoms (training and validation)
    # and the data summary says so.
    plain = DataConfig(sources=["phantom"], modalities=["MR"], mr_phantoms=1, mr_validation_phantoms=1, phantom_size=64)
    banded = dataclasses.replace(plain, mr_phantom_band=[0.5, 0.6])
    before, after = load_sources(plain), load_sources(banded)
    assert [i.name for i in after] == [i.name for i in before] and len(after) == 2
    assert all(not np.allclose(a.values, b.values) for a, b in zip(after, before))
    assert data_summary(banded)["degradation"]["mr"]["phantom_band"] == [0.5, 0.6]
