"""Clean references: noisy real MR/X-ray frames are binned or dropped, noisy real CT slices dropped; phantoms."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from trainer.data import DataConfig
from trainer.data.datasets import load_sources, split_sources
from trainer.data.reference import bin2, clean_reference, ct_own_noise_hu, own_noise_fraction
from trainer.data.phantoms import random_phantom, tissue_texture
from trainer.data.sources import (
    SourceImage, flat_phantom_images, head_phantom_images, mr_phantom_images, phantom_images, xray_phantom_images,
)


def smooth_body(size: int, seed: int = 0) -> np.ndarray:
    """A smooth positive 'anatomy' spanning about 0-1000."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=(size, size)), size / 16)
    field = (field - field.min()) / (field.max() - field.min())
    return (100 + 900 * field).astype(np.float32)


def source(values: np.ndarray, modality: str = "MR") -> SourceImage:
    return SourceImage("offline:test.dcm#0", modality, values, 1.0, "offline:test", "offline")


def test_own_noise_fraction_measures_added_noise():
    body = smooth_body(256)
    noisy = body + np.random.default_rng(1).normal(0, 20, body.shape).astype(np.float32)
    assert own_noise_fraction(body) < 0.002
    assert 0.015 < own_noise_fraction(noisy) < 0.03  # 20 over a range of about 900


def test_noisy_reference_is_binned_until_clean_enough_or_dropped():
    body = smooth_body(256)
    noisy = body + np.random.default_rng(2).normal(0, 6, body.shape).astype(np.float32)  # ~0.7 %
    clean = clean_reference(source(body), 0.005, 64)
    assert clean is not None and clean.values is body  # already clean: untouched
    binned = clean_reference(source(noisy), 0.005, 64)
    assert binned is not None and binned.values.shape == (128, 128) and binned.name.endswith("@bin2")
    assert binned.pixel_mm == 2.0 and own_noise_fraction(binned.values) <= 0.005
    assert clean_reference(source(noisy[:100, :100]), 0.005, 64) is None  # binning would go below 64
    assert clean_reference(source(noisy, "CT"), 0.005, 64).values is noisy  # CT: the simulator handles it
    assert clean_reference(source(noisy), 0.0, 64).values is noisy  # screening off


def test_bin2_averages_blocks():
    x = np.arange(25, dtype=np.float32).reshape(5, 5)
    assert np.allclose(bin2(x), [[3.0, 5.0], [13.0, 15.0]])


def test_mr_phantoms_are_noiseless_mr_images_in_train_and_validation_only():
    images = mr_phantom_images(2, 192, validation_count=1)
    assert [i.name for i in images] == ["phantom:mr-train-0", "phantom:mr-train-1", "phantom:mr-val-0"]
    assert all(i.modality == "MR" and i.values.min() >= 0 and i.values.max() <= 1000 for i in images)
    assert own_noise_fraction(images[0].values) < 0.005  # passes the screen it is meant for
    assert not np.array_equal(images[0].values, images[1].values)
    cfg = DataConfig(sources=["phantom"], modalities=["CT", "MR"], phantom_count=1, phantom_size=64,
                     heldout_phantoms=1, mr_phantoms=2, mr_validation_phantoms=1, ct_angles=24)
    everything = load_sources(cfg)
    training, test = split_sources(everything, cfg, "test")
    _, validation = split_sources(everything, cfg, "validation")
    assert {i.name for i in training if i.modality == "MR"} == {"phantom:mr-train-0", "phantom:mr-train-1"}
    assert [i.name for i in validation if i.modality == "MR"] == ["phantom:mr-val-0"]
    assert all(i.modality == "CT" for i in test)


def test_mr_phantom_texture_is_fine_correlated_structure_on_the_same_phantom():
    plain = mr_phantom_images(3, 192, validation_count=1)
    textured = mr_phantom_images(3, 192, validation_count=1, texture=0.06)
    assert [i.name for i in textured] == [i.name for i in plain]
    for a, b in zip(plain, textured):
        assert a.pixel_mm == b.pixel_mm  # the same phantom otherwise: the texture has its own generator
        assert b.values.min() >= 0 and np.array_equal(a.values == 0, b.values == 0)  # air stays air
        body = a.values > 50
        ratio = b.values[body] / a.values[body]
        assert float(np.std(ratio)) <= 0.06 * 1.05
    assert max(float(np.std((b.values / np.maximum(a.values, 1e-6))[a.values > 50])) for a, b in zip(plain, textured)) > 0.01
    assert np.array_equal(mr_phantom_images(1, 192, texture=0.06)[0].values, textured[0].values)  # seeded by name
    field = tissue_texture((256, 256), np.random.default_rng(3), 0.05) - 1.0
    assert 0 < float(field.std()) <= 0.05
    neighbour_correlation = np.corrcoef(field[:, :-1].ravel(), field[:, 1:].ravel())[0, 1]
    assert neighbour_correlation > 0.5  # spatially correlated, unlike the white noise it must be told from


def changed_training_phantoms(**option) -> list[tuple]:
    """``(plain, changed)`` pairs of the training CT phantoms made with ``option``, after checking
    that the option changes neither the names, the pixel sizes nor any validation or test phantom."""
    plain = phantom_images(3, 160, test_count=1, validation_count=1)
    changed = phantom_images(3, 160, test_count=1, validation_count=1, **option)
    assert [i.name for i in changed] == [i.name for i in plain]
    pairs = []
    for a, b in zip(plain, changed):
        assert a.pixel_mm == b.pixel_mm
        if a.name.startswith("phantom:train-"):
            pairs.append((a, b))
        else:
            assert np.array_equal(a.values, b.values), a.name  # validation and test phantoms stay as they were
    return pairs


def test_ct_phantom_texture_reaches_training_phantoms_only_and_leaves_air_alone():
    pairs = changed_training_phantoms(train_texture=0.015)
    for a, b in pairs:
        air = a.values <= -1000
        assert np.allclose(b.values[air], a.values[air], atol=1e-3)  # on attenuation: air stays air
        soft = (a.values > -100) & (a.values < 200)
        assert float(np.std(b.values[soft] - a.values[soft])) <= 0.015 * 1.05 * float(np.max(a.values[soft] + 1000))
    # The RMS is drawn per phantom in [0, max]: at least one of them carries texture of a few HU.
    assert max(float(np.std((b.values - a.values)[(a.values > -100) & (a.values < 200)])) for a, b in pairs) > 0.5
    with pytest.raises(ValueError, match="ct_phantom_texture"):
        DataConfig(ct_phantom_texture=0.5)


def test_ct_phantom_air_structure_reaches_training_phantoms_air_only():
    pairs = changed_training_phantoms(train_air_hu=40.0)
    for a, b in pairs:
        air = a.values <= -1000
        assert np.array_equal(b.values[~air], a.values[~air])  # the body is untouched
        assert b.values[air].min() > -1000 - 40 * 3 and b.values[air].max() < -700  # still air or foam, never tissue
    assert max(float(np.std(b.values[a.values <= -1000] - a.values[a.values <= -1000])) for a, b in pairs) > 1.0
    structured = [b for _, b in pairs]
    again = [b for _, b in changed_training_phantoms(train_air_hu=40.0)]
    assert all(np.array_equal(x.values, y.values) for x, y in zip(structured, again))  # seeded
    with pytest.raises(ValueError, match="ct_phantom_air_structure"):
        DataConfig(ct_phantom_air_structure=-1.0)


@pytest.mark.parametrize("share, expected", [(0.5, [1, 0, 1, 0]), (0.0, [0, 0, 0, 0]), (0.25, [1, 0, 0, 0]), (1.0, [1, 1, 1, 1])])
def test_training_radiograph_saturation_share_leaves_validation_alone(share: float, expected: list[int]):
    images = xray_phantom_images(4, 64, validation_count=2, train_saturated_share=share)
    saturated = [int(i.detector_range is not None) for i in images]
    assert saturated[:4] == expected and saturated[4:] == [1, 0]  # validation: the even-numbered half
    assert all(i.detector_range == (float(i.values.min()), float("inf")) for i in images if i.detector_range)
    with pytest.raises(ValueError, match="xray_train_saturated_share"):
        DataConfig(xray_train_saturated_share=-0.1)


def test_radiograph_phantoms_are_noiseless_dx_images_in_train_and_validation_only():
    images = xray_phantom_images(1, 192, validation_count=2)
    assert [i.name for i in images] == ["phantom:xray-train-0", "phantom:xray-val-0", "phantom:xray-val-1"]
    assert all(i.modality == "DX" and i.values.min() >= 0 for i in images)
    assert own_noise_fraction(images[1].values) < 0.005
    body = images[1].values > 0.05 * images[1].values.max()
    assert 0.2 < body.mean() < 0.9  # a body in an open field, not a blank or a full frame
    again = xray_phantom_images(0, 192, validation_count=1)[0]
    assert np.array_equal(again.values, images[1].values)  # seeded by name
    cfg = DataConfig(sources=["phantom"], modalities=["CT", "DX"], phantom_count=1, phantom_size=64,
                     heldout_phantoms=1, xray_phantoms=1, xray_validation_phantoms=2, ct_angles=24)
    everything = load_sources(cfg)
    training, test = split_sources(everything, cfg, "test")
    _, validation = split_sources(everything, cfg, "validation")
    assert [i.name for i in training if i.modality == "DX"] == ["phantom:xray-train-0"]
    assert [i.name for i in validation if i.modality == "DX"] == ["phantom:xray-val-0", "phantom:xray-val-1"]
    assert all(i.modality == "CT" for i in test)


def assert_training_only(kind: str, **phantom_counts: int) -> None:
    """Two ``phantom:KIND-i`` phantoms that a CT phantom config with ``phantom_counts`` adds
    are training images, and neither validation nor test holds any."""
    cfg = DataConfig(sources=["phantom"], modalities=["CT"], phantom_count=1, phantom_size=64,
                     heldout_phantoms=1, validation_phantoms=1, ct_angles=24, **phantom_counts)
    everything = load_sources(cfg)
    training, test = split_sources(everything, cfg, "test")
    _, validation = split_sources(everything, cfg, "validation")
    assert {f"phantom:{kind}-0", f"phantom:{kind}-1"} <= {i.name for i in training}
    assert not any(kind in i.name for i in test + validation)


def test_head_phantoms_have_a_skull_around_brain_and_are_training_only():
    images = head_phantom_images(2, 192)
    assert [i.name for i in images] == ["phantom:head-train-0", "phantom:head-train-1"]
    head = images[0].values
    assert head.min() == -1000.0 and 700 < head.max() < 1900  # air outside, dense bone in the skull
    brain = (head > 15) & (head < 50)
    skull = head > 600
    assert brain.mean() > 0.15 and 0.02 < skull.mean() < 0.2
    centre = ndimage.label(~skull)[0]
    assert centre[96, 96] != centre[0, 0]  # the bone ring closes: the brain is inside, the air outside
    partial = (head > -900) & (head < -100)
    assert partial.any()  # averaged-down edges: values between air and tissue as partial volume gives
    assert 100 < images[0].pixel_mm * 192 < 320  # a head's field of view, mm
    assert np.array_equal(head_phantom_images(1, 192)[0].values, head)  # seeded by name
    plain = head_phantom_images(1, 192, grain=False)[0].values  # the same head without the brain grain
    assert len(np.unique(plain)) < len(np.unique(head)) / 10
    assert 0.2 < float(np.std(head - plain)) and float(np.abs(head - plain).max()) < 10.0
    assert_training_only("head-train", head_phantoms=2)
    cfg = DataConfig(sources=["phantom"], modalities=["CT"], phantom_count=1, phantom_size=64, heldout_phantoms=1,
                     validation_phantoms=1, head_phantoms=1, head_validation_phantoms=2, ct_angles=24)
    everything = load_sources(cfg)
    validation = split_sources(everything, cfg, "validation")[1]
    assert [i.name for i in validation if "head" in i.name] == ["phantom:head-val-0", "phantom:head-val-1"]
    grainless = DataConfig.from_dict({**cfg.to_dict(), "head_phantom_grain": False})
    grainless_validation = split_sources(load_sources(grainless), grainless, "validation")[1]
    head_val = [i.values for i in validation + grainless_validation if i.name == "phantom:head-val-0"]
    assert np.array_equal(*head_val)  # validation heads keep their grain whatever the training heads do
    assert not any("head" in i.name for i in split_sources(everything, cfg, "test")[1])


def test_flat_phantoms_are_piecewise_constant_and_training_only():
    flat = flat_phantom_images(2, 128)
    assert [i.name for i in flat] == ["phantom:flat-train-0", "phantom:flat-train-1"]
    values = flat[0].values
    assert len(np.unique(values)) < 40  # a handful of tissue values, no texture between them
    textured = random_phantom(128, np.random.default_rng([7, 3, 0]))  # the same draws, texture added
    tissue = (values > -200) & (values < 200)
    assert np.array_equal(values[~tissue], textured[~tissue])  # the same body; only the texture differs
    assert 2.0 < float(np.std(textured[tissue] - values[tissue])) < 12.0
    assert np.array_equal(flat_phantom_images(1, 128)[0].values, values)  # seeded by name
    assert_training_only("flat-train", ct_flat_phantoms=2)
    for name in ("ct_flat_phantoms", "head_phantoms", "head_validation_phantoms"):
        with pytest.raises(ValueError, match=f"^{name} -1 must be >= 0"):
            DataConfig(**{name: -1})


def test_noisy_real_ct_slice_is_no_reference_when_screened():
    rng = np.random.default_rng(3)
    body = np.full((128, 128), 40.0, np.float32)  # soft tissue
    noisy = body + rng.normal(0, 10, body.shape).astype(np.float32)
    quiet = body + rng.normal(0, 1, body.shape).astype(np.float32)
    assert clean_reference(source(noisy, "CT"), 0.005, 64, max_ct_noise_hu=3.0) is None
    assert clean_reference(source(quiet, "CT"), 0.005, 64, max_ct_noise_hu=3.0).values is quiet
    assert clean_reference(source(noisy, "CT"), 0.005, 64, max_ct_noise_hu=0.0).values is noisy  # screening off
    phantom = SourceImage("phantom:x", "CT", noisy, 1.0, "heldout:x", "phantom")
    assert clean_reference(phantom, 0.005, 64, max_ct_noise_hu=3.0) is phantom  # noiseless by construction
    assert ct_own_noise_hu(np.full((16, 16), -1000.0)) == 0.0  # no soft tissue: nothing to measure


def test_dose_curve_screens_references_and_says_so_in_help():
    from benchmarks.quality import REFERENCE_SCREEN, data_config, parse_args

    cfg = data_config(parse_args(["--dose-curve", "--sources", "phantom"]))
    assert cfg.max_ct_reference_noise_hu == REFERENCE_SCREEN["max_ct_reference_noise_hu"] == 3.0
    assert cfg.max_reference_noise == 0.005
    off = data_config(parse_args(["--dose-curve", "--sources", "phantom", "--max-ct-reference-noise", "0"]))
    assert off.max_ct_reference_noise_hu == 0.0
    assert data_config(parse_args(["--sources", "phantom"])).max_ct_reference_noise_hu == 0.0  # quality: unchanged


def test_packaged_dx_radiograph_is_found_and_screened_out_as_a_reference():
    # deid-data's cat radiograph is the only real DX (MONOCHROME2) in the packages; its processed
    # high-frequency content reads as 0.6-0.7 % noise at every binning, so it is no clean reference.
    from trainer.data.sources import offline_images

    dx = [image for image in offline_images(("DX",), 64) if image.name.startswith("offline:deid-data/")]
    assert [image.name for image in dx] == ["offline:deid-data/animals/cat.dcm#0"]
    assert own_noise_fraction(dx[0].values) > 0.005
    assert clean_reference(dx[0], 0.005, 64) is None
