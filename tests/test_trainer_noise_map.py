"""Noise-map students (model contract ``noise_map``): the model, its training data and fine-tuning
a blind checkpoint into one."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from runtime.noise import normalized_noise_level
from runtime.normalization import NormalizationState
from trainer.checkpoint import load_checkpoint, load_model
from trainer.config import Config, from_dict
from trainer.data import DataConfig, build_heldout_set, build_training_set
from trainer.data.datasets import heldout_noise_level, model_input
from trainer.data.noise_levels import LevelTable, level_table
from trainer.models import create_model
from trainer.train import init_model, train

WINDOWS = [[-0.5, 1.5], [-2.35, -0.25]]
SMALL = dict(sources=["phantom"], modalities=["CT", "MR"], noise_aug_prob=0.0, phantom_count=2, phantom_size=64, heldout_phantoms=1,
             validation_phantoms=1, mr_phantoms=2, mr_validation_phantoms=1, ct_angles=24, ct_noise_realizations=1,
             patch_size=32, patches_per_epoch=8, ct_hu_range=[-160, 240], elastic_prob=0.0)


def _student(noise_map: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("student", widths=[4, 8], input_windows=WINDOWS, noise_map=noise_map)


def test_noise_map_student_takes_image_and_level_and_uses_the_level():
    model = _student(True).eval()
    assert model.input_channels == 2
    torch.nn.init.normal_(model.noise_conv.weight, std=0.5)
    torch.nn.init.normal_(model.tail.weight, std=0.5)
    image = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        low = model(torch.cat([image, torch.full_like(image, 0.01)], 1))
        high = model(torch.cat([image, torch.full_like(image, 0.2)], 1))
    assert low.shape == (1, 1, 16, 16)
    assert (low - high).abs().max() > 1e-3  # the level changes the output
    with pytest.raises(ValueError, match="2 input channel"):
        model(image)
    with pytest.raises(ValueError, match="needs input_windows"):
        create_model("student", widths=[4, 8], noise_map=True)


def test_noise_map_input_is_image_plus_constant_level_channel():
    degraded = np.random.default_rng(0).random((8, 8), dtype=np.float32)
    assert model_input(degraded).shape == (1, 8, 8)
    both = model_input(degraded, 0.03)
    assert both.shape == (2, 8, 8) and both.dtype == np.float32
    assert np.array_equal(both[0], degraded) and np.all(both[1] == np.float32(0.03))


def test_level_tracks_true_gaussian_noise_in_normalized_units():
    rng = np.random.default_rng(1)
    clean = np.tile(np.linspace(0.0, 1.0, 128, dtype=np.float32), (128, 1))
    state = NormalizationState(offset=100.0, scale=50.0)
    for sigma in (0.01, 0.05):
        noisy = clean + rng.normal(0, sigma, clean.shape).astype(np.float32)
        level = normalized_noise_level(noisy[None], [state], "MR")
        assert level == pytest.approx(sigma, rel=0.15)
    # CT: measured in soft tissue, in HU, then divided by the state's scale (HU per unit).
    hu_state = NormalizationState(offset=-160.0, scale=400.0)
    soft = np.full((96, 96), 40.0) + rng.normal(0, 20.0, (96, 96))
    level = normalized_noise_level(((soft - hu_state.offset) / hu_state.scale)[None].astype(np.float32), [hu_state], "CT")
    assert level == pytest.approx(20.0 / 400.0, rel=0.15)
    assert normalized_noise_level(np.zeros((1, 4, 4), np.float32), [state], "MR") == 0.0  # nothing measurable


def test_training_patches_are_told_their_whole_images_level_at_their_noise():
    # Gaussian MR noise over a range of sigmas, no interpolating augmentation: each patch's
    # level is what the runtime measures on its whole image at the patch's sigma.
    cfg = DataConfig(**{**SMALL, "modalities": ["MR"], "phantom_size": 128, "patch_size": 64}, mr_noise="gaussian",
                     train_mr_sigma_range=[0.01, 0.1], rotation_degrees=0.0, noise_map=True)
    dataset = build_training_set(cfg)
    levels, noise = [], []
    for index in range(len(dataset)):
        degraded, clean = dataset[index]
        assert degraded.shape == (2, 64, 64) and clean.shape == (1, 64, 64)
        assert torch.all(degraded[1] == degraded[1, 0, 0])  # constant map
        levels.append(float(degraded[1, 0, 0]))
        noise.append(float((degraded[0] - clean[0]).std()))
    assert max(noise) > 2 * min(noise)
    np.testing.assert_allclose(levels, noise, rtol=0.15)
    table = dataset.images[0].variants[0].level_table
    assert table.parameters[0] == pytest.approx(0.01) and table.parameters[-1] == pytest.approx(0.1)
    np.testing.assert_allclose(table.levels, table.parameters, rtol=0.1)  # the whole image reads its sigma
    blind = build_training_set(DataConfig(**SMALL))[0][0]
    assert blind.shape == (1, 32, 32) and build_training_set(DataConfig(**SMALL)).images[0].variants[0].level_table is None
    with pytest.raises(ValueError, match="noise_aug_prob 0"):
        DataConfig(**{**SMALL, "noise_aug_prob": 0.5}, noise_map=True)


def test_runtime_normalization_feeds_patches_as_the_runtime_normalizes_their_whole_image():
    # The same draws with data.runtime_normalization on and off: each patch pair differs by one affine map,
    # the one from the clean reference's percentile fit to the fit on the whole degraded image at that noise.
    from runtime.normalization import denormalize, fit_normalization
    from trainer.data.datasets import spec_for

    base = {**SMALL, "modalities": ["MR"], "phantom_size": 128, "patch_size": 64}
    kwargs = dict(train_mr_sigma_range=[0.02, 0.1], rotation_degrees=0.0, noise_map=True, augment=False)
    plain = build_training_set(DataConfig(**base, **kwargs))
    runtime = build_training_set(DataConfig(**base, **kwargs, runtime_normalization=True))
    gains = []
    for index in range(len(plain)):
        (noisy, clean), (noisy_rt, clean_rt) = plain[index], runtime[index]
        gain, offset = np.polyfit(clean[0].numpy().ravel(), clean_rt[0].numpy().ravel(), 1)
        np.testing.assert_allclose(clean_rt[0], gain * clean[0] + offset, atol=1e-5)
        np.testing.assert_allclose(noisy_rt[0], gain * noisy[0] + offset, atol=1e-5)
        gains.append(gain)
    assert min(gains) < 0.99  # noise widens the degraded image's percentiles: a real change
    table = runtime.images[0].variants[0].level_table
    sigma = table.parameters[-1]
    pool = runtime.images[0]
    rng = np.random.default_rng(0)
    from trainer.data.datasets import _draw_noise
    degraded = _draw_noise(pool.clean, pool.state, "rician", sigma, rng)
    fitted = fit_normalization(denormalize(degraded, pool.state), spec_for("MR", DataConfig(**base)))
    gain, offset = table.affine_at(sigma)
    assert gain == pytest.approx(pool.state.scale / fitted.scale, rel=0.02)
    assert offset == pytest.approx((pool.state.offset - fitted.offset) / fitted.scale, abs=0.01)
    assert plain.images[0].variants[0].level_table.affine_at(sigma) is None
    with pytest.raises(ValueError, match="noise_map"):
        DataConfig(runtime_normalization=True)


def test_level_table_interpolates_in_log_parameter_and_clamps():
    table = LevelTable((0.01, 0.1), (0.02, 0.2))
    assert table.at(0.01) == pytest.approx(0.02) and table.at(0.1) == pytest.approx(0.2)
    assert table.at(np.sqrt(0.01 * 0.1)) == pytest.approx(0.11)  # halfway in log
    assert table.at(1.0) == pytest.approx(0.2) and table.at(0.001) == pytest.approx(0.02)
    calls = []
    state = NormalizationState(0.0, 1.0)
    flat = level_table((5.0, 5.0), lambda p: calls.append(p) or np.zeros((32, 32), np.float32), state, "MR")
    assert calls == [5.0] and flat.at(123.0) == 0.0


def test_heldout_level_is_the_runtime_measurement_of_the_whole_slice():
    image = build_heldout_set(DataConfig(**SMALL), "validation")[0]
    assert heldout_noise_level(image) == normalized_noise_level(image.degraded[None], [image.state], image.modality)


def test_blind_checkpoint_fine_tunes_into_a_noise_map_model_that_starts_as_the_same_function(tmp_path):
    train(tiny_config(noise_map=False), tmp_path / "blind")
    blind_path = tmp_path / "blind" / "best.pt"
    mapped_cfg = tiny_config(noise_map=True)
    model, _ = init_model(blind_path, mapped_cfg.model.kwargs)
    blind, _ = load_model(blind_path)
    image = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(torch.cat([image, torch.full_like(image, 0.05)], 1)), blind(image))
    result = train(mapped_cfg, tmp_path / "mapped", init=blind_path)
    assert np.isfinite(result["validation"]["psnr"])
    reloaded, _ = load_model(tmp_path / "mapped" / "best.pt")
    assert reloaded.input_channels == 2
    with pytest.raises(ValueError, match="data.noise_map"):
        train(tiny_config(noise_map=True, data_map=False), tmp_path / "bad", init=blind_path)


def test_qat_float_kd_distils_the_float_noise_map_student_into_its_own_qat(tmp_path):
    train(tiny_config(noise_map=True), tmp_path / "float")
    student = tmp_path / "float" / "best.pt"
    qat_cfg = tiny_config(noise_map=True, stage="qat")
    qat_cfg.qat.float_kd = 1.0
    train(qat_cfg, tmp_path / "qat", student=student)
    logged = [json.loads(line) for line in (tmp_path / "qat" / "log.jsonl").read_text().splitlines()]
    steps = [r for r in logged if "loss" in r]
    assert steps and all("kd_out" in r for r in steps)
    # Right after calibration the quantized model is close to its float: the distance to the float's
    # output (fed the same image + level channels) is far below the distance to the clean reference.
    assert 0 < steps[0]["kd_out"] < 0.5 * steps[0]["l1"]
    assert load_checkpoint(tmp_path / "qat" / "best.pt")["teacher_checkpoint"] == str(student)
    # --resume without --student finds the float teacher in the checkpoint and keeps distilling from it.
    qat_cfg.train.steps += 2
    train(qat_cfg, tmp_path / "qat", resume=True)
    resumed = [json.loads(line) for line in (tmp_path / "qat" / "log.jsonl").read_text().splitlines()]
    later = [r for r in resumed if "loss" in r and r["step"] > steps[-1]["step"]]
    assert later and all("kd_out" in r for r in later)
    plain = tiny_config(noise_map=True, stage="qat")
    train(plain, tmp_path / "plain", student=student)
    assert not any("kd_out" in line for line in (tmp_path / "plain" / "log.jsonl").read_text().splitlines())


def test_qat_float_kd_ensemble_distils_toward_the_floats_flip_average(tmp_path):
    train(tiny_config(noise_map=True), tmp_path / "float")
    student = tmp_path / "float" / "best.pt"
    first_kd = {}
    for size in (1, 4):
        cfg = tiny_config(noise_map=True, stage="qat")
        cfg.qat.float_kd, cfg.qat.float_kd_ensemble = 1.0, size
        train(cfg, tmp_path / f"qat{size}", student=student)
        logged = [json.loads(line) for line in (tmp_path / f"qat{size}" / "log.jsonl").read_text().splitlines()]
        first_kd[size] = next(r["kd_out"] for r in logged if "kd_out" in r)
    # Right after calibration the quantized copy is close to the float's own pass, not to the average of the
    # float over four flips (a randomly initialised student is far from flip-equivariant).
    assert first_kd[4] > 2 * first_kd[1]
    with pytest.raises(ValueError, match="float_kd_ensemble"):
        from_dict(Config, {"stage": "qat", "qat": {"float_kd_ensemble": 3}})


def tiny_config(noise_map: bool, data_map: bool | None = None, stage: str = "teacher") -> Config:
    """A tiny config (teacher stage: no teacher needed; qat: needs a student) of a blind or noise-map student."""
    return from_dict(Config, {
        "stage": stage,
        "model": {"name": "student", "kwargs": {"widths": [4, 8], "input_windows": WINDOWS, "noise_map": noise_map}},
        "data": {**SMALL, "noise_map": noise_map if data_map is None else data_map},
        "train": {"steps": 2, "batch_size": 2, "lr": 1e-3, "eval_every": 2, "log_every": 1, "progress": False},
        "eval": {"max_images": 2},
    })


def test_noise_map_jitter_scales_the_told_level_within_its_bounds_and_leaves_the_patch_alone():
    base = {**SMALL, "modalities": ["MR"], "phantom_size": 128, "patch_size": 64}
    kwargs = dict(mr_noise="gaussian", train_mr_sigma_range=[0.01, 0.1], rotation_degrees=0.0, noise_map=True)
    exact = build_training_set(DataConfig(**base, **kwargs))
    jittered = build_training_set(DataConfig(**base, **kwargs, noise_map_jitter=0.25))
    ratios = []
    for index in range(len(exact)):
        (noisy, clean), (noisy_j, clean_j) = exact[index], jittered[index]
        torch.testing.assert_close(noisy_j[0], noisy[0])  # the same draw of image and noise
        torch.testing.assert_close(clean_j, clean)
        assert torch.all(noisy_j[1] == noisy_j[1, 0, 0])
        ratios.append(float(noisy_j[1, 0, 0] / noisy[1, 0, 0]))
    assert all(1 / 1.25 - 1e-6 <= r <= 1.25 + 1e-6 for r in ratios)
    assert max(abs(np.log(r)) for r in ratios) > 0.02  # a real change, not the exact level
    with pytest.raises(ValueError, match="noise_map_jitter"):
        DataConfig(noise_map_jitter=0.2)
    with pytest.raises(ValueError, match="noise_map_jitter"):
        DataConfig(noise_map=True, noise_map_jitter=-0.1)
