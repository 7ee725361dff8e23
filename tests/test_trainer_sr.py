"""x2 super-resolution in the trainer: the degradations keep the area grid, training pairs line
up, the models start as nearest upsampling, and teacher -> distill -> QAT runs end to end."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.baselines import upscale
from trainer.config import load_config
from trainer.data import DataConfig, build_heldout_set, build_training_set
from trainer.data.sources import mr_phantom_images
from trainer.data.super_resolution import (
    blur_area_downsample, dct_downsample, dct_upsample, degradation_label, downsample, kspace_downsample,
    kspace_lowpass, kspace_upsample, reference_values,
)
from trainer.losses import LossConfig, ReconstructionLoss, noise_balance_weights
from trainer.models import count_flops, create_model
from trainer.train import train

CONFIGS = Path(__file__).resolve().parents[1] / "trainer" / "configs"
TINY_SR_DATA = {"task": "sr2", "sources": ["phantom"], "modalities": ["CT", "MR"], "patch_size": 32,
                "patches_per_epoch": 64, "phantom_count": 2, "phantom_size": 64, "heldout_phantoms": 1,
                "validation_phantoms": 1, "mr_phantoms": 2, "mr_validation_phantoms": 1, "ct_hu_range": [-160, 240]}


def band_limited(rows: int, cols: int, offset: float = 0.0) -> np.ndarray:
    """A periodic image whose frequencies all survive halving the matrix, sampled at ``+offset``."""
    y, x = np.arange(rows)[:, None] + offset, np.arange(cols)[None, :] + offset
    return np.sin(2 * np.pi * 3 * x / cols + 0.4) + 0.5 * np.cos(2 * np.pi * 5 * y / rows) + 0.2 * np.sin(
        2 * np.pi * (2 * x / cols + 4 * y / rows))


def test_kspace_truncation_samples_at_the_area_centres():
    highres = band_limited(64, 48)
    lowres = kspace_downsample(highres)
    assert lowres.shape == (32, 24)
    # Low-resolution pixel i sits at high-resolution position 2i + 0.5 (not on pixel 2i).
    np.testing.assert_allclose(lowres, band_limited(64, 48, offset=0.5)[::2, ::2], atol=1e-5)
    assert np.abs(lowres - highres[::2, ::2]).max() > 0.05  # the half-pixel shift is real


def test_kspace_truncation_removes_the_high_frequencies():
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((64, 64))
    lowres = kspace_downsample(noise)
    # White noise keeps a quarter of its energy (the central quarter of k-space), scaled.
    assert np.var(lowres) == pytest.approx(np.var(noise) / 4, rel=0.15)


def test_zero_filled_kspace_interpolation_inverts_the_truncation_of_a_band_limited_image():
    highres = band_limited(64, 48)
    lowres = kspace_downsample(highres)
    np.testing.assert_allclose(kspace_upsample(lowres), highres, atol=1e-5)
    np.testing.assert_allclose(upscale(lowres, "zero-fill"), highres, atol=1e-5)  # the benchmark's baseline
    assert np.abs(upscale(lowres, "lanczos") - highres).max() > 1e-3  # which Lanczos-3 only approximates
    wide = np.random.default_rng(2).standard_normal((64, 64))
    assert np.abs(kspace_upsample(kspace_downsample(wide)) - wide).max() > 0.5  # beyond the band: lost
    with pytest.raises(ValueError, match="x2"):
        upscale(lowres, "zero-fill", scale=3)


def dct_band_limited(rows: int, cols: int) -> np.ndarray:
    """An image whose DCT-II lies in the lowest half of each axis (what halving keeps)."""
    from scipy import fft

    spectrum = np.zeros((rows, cols))
    spectrum[: rows // 2, : cols // 2] = np.random.default_rng(4).standard_normal((rows // 2, cols // 2))
    return fft.idctn(spectrum, norm="ortho")


def test_dct_truncation_keeps_the_area_grid_and_zero_filling_inverts_it():
    highres = dct_band_limited(64, 48)
    lowres = dct_downsample(highres)
    assert lowres.shape == (32, 24) and lowres.dtype == np.float32
    np.testing.assert_allclose(dct_upsample(lowres), highres, atol=1e-5)
    np.testing.assert_allclose(upscale(lowres, "zero-fill-dct"), highres, atol=1e-5)  # the benchmark's baseline
    np.testing.assert_allclose(dct_downsample(np.full((8, 6), 3.0)), np.full((4, 3), 3.0), atol=1e-6)  # mean kept
    # Low-resolution pixel i sits at high-resolution position 2i + 0.5: the lowest DCT-II cosine survives
    # halving and is sampled there, edges included.
    cosine = np.tile(np.cos(np.pi * (np.arange(64) + 0.5) / 64)[:, None], (1, 8))
    expected = np.cos(np.pi * (2 * np.arange(32) + 1) / 64)  # the same cosine at 2i + 0.5 (+ 0.5: pixel centres)
    np.testing.assert_allclose(dct_downsample(cosine)[:, 3], expected, atol=1e-5)


def test_dct_truncation_does_not_wrap_a_non_periodic_image():
    """The DFT truncation treats the image as periodic: a ramp's jump between its last and first
    rows rings through the whole border; the DCT's mirrored image has no jump."""
    ramp = np.tile(np.linspace(0.0, 1.0, 64)[:, None], (1, 64))
    dft_error = np.abs(kspace_upsample(kspace_downsample(ramp)) - ramp)[:4].max()
    dct_error = np.abs(dct_upsample(dct_downsample(ramp)) - ramp)[:4].max()
    assert dct_error < 0.02 < 0.1 < dft_error, (dct_error, dft_error)


def test_the_mr_kspace_setting_chooses_the_truncation_and_names_it():
    image = np.tile(np.linspace(0.0, 1.0, 32)[:, None], (1, 32)).astype(np.float32)
    dct = DataConfig(**{**TINY_SR_DATA, "sr_mr_kspace": "dct"})
    assert DataConfig(**TINY_SR_DATA).sr_mr_kspace == "dft"  # the configs before it reproduce
    np.testing.assert_array_equal(downsample(image, "MR", dct), dct_downsample(image))
    np.testing.assert_array_equal(downsample(image, "MR", DataConfig(**TINY_SR_DATA)), kspace_downsample(image))
    np.testing.assert_array_equal(downsample(image, "CT", dct), blur_area_downsample(image, dct.sr_blur_sigma))
    assert degradation_label("MR", dct) == "sr2_kspace_dct"
    assert degradation_label("MR", DataConfig(**TINY_SR_DATA)) == "sr2_kspace"
    with pytest.raises(ValueError, match="sr_mr_kspace"):
        DataConfig(**{**TINY_SR_DATA, "sr_mr_kspace": "fft"})


def test_kspace_lowpass_keeps_the_band_and_removes_what_lies_beyond():
    highres = band_limited(64, 64)  # every frequency at most 5/64 cycles per pixel: 0.16 of Nyquist
    np.testing.assert_allclose(kspace_lowpass(highres, 0.5), highres, atol=1e-5)
    noise = np.random.default_rng(1).standard_normal((128, 128))
    half = kspace_lowpass(noise, 0.5)
    spectrum = np.abs(np.fft.fft2(half))
    k = np.abs(np.fft.fftfreq(128)) / 0.5
    assert spectrum[k > 0.5 + 1e-9].max() < 1e-6 * spectrum.max()  # nothing beyond the kept band (float32)
    assert np.var(half) < np.var(noise) / 4  # at most the central quarter of k-space, tapered
    with pytest.raises(ValueError, match="fraction"):
        kspace_lowpass(noise, 1.5)


def test_mr_phantoms_are_band_limited_references_only_when_configured():
    phantom = mr_phantom_images(1, 64)[0]
    plain = DataConfig(**{**TINY_SR_DATA, "phantom_size": 64})
    assert reference_values(phantom, plain) is phantom.values
    banded = DataConfig(**{**TINY_SR_DATA, "phantom_size": 64, "sr_mr_phantom_band": [0.5, 0.6]})
    values = reference_values(phantom, banded)
    assert values.shape == phantom.values.shape and not np.allclose(values, phantom.values)
    np.testing.assert_array_equal(values, reference_values(phantom, banded))  # drawn from the name: repeatable
    # Halving the matrix loses (almost) nothing of a reference band-limited at half Nyquist.
    assert np.abs(kspace_lowpass(values, 0.5) - values).max() < 0.1 * np.abs(values - phantom.values).max()
    with pytest.raises(ValueError, match="sr_mr_phantom_band"):
        DataConfig(**{**TINY_SR_DATA, "sr_mr_phantom_band": [0.5, 1.2]})


def test_blur_area_downsample_is_the_block_mean_and_crops_odd_sides():
    image = np.arange(7 * 9, dtype=np.float32).reshape(7, 9)
    small = blur_area_downsample(image, 0.0)
    assert small.shape == (3, 4)
    assert small[1, 2] == pytest.approx(image[2:4, 4:6].mean())
    blurred = blur_area_downsample(image, 1.0)
    assert not np.allclose(blurred, small)


def test_upscale_baselines_keep_the_grid():
    highres = band_limited(64, 64).astype(np.float32)
    lowres = blur_area_downsample(highres, 0.0)
    errors = {m: float(np.sqrt(np.mean((upscale(lowres, m) - highres)[8:-8, 8:-8] ** 2))) for m in ("nearest", "bicubic", "lanczos")}
    assert errors["bicubic"] < errors["nearest"] / 3 and errors["lanczos"] < errors["nearest"] / 3, errors
    with pytest.raises(ValueError, match="upscale method"):
        upscale(lowres, "spline")


def test_training_pairs_line_up_and_heldout_pairs_are_low_and_high_resolution():
    cfg = DataConfig.from_dict({**TINY_SR_DATA, "sr_blur_sigma": 0.0})
    dataset = build_training_set(cfg)
    for index in range(12):
        lowres, highres = dataset[index]
        assert lowres.shape == (1, 16, 16) and highres.shape == (1, 32, 32)
        # CT pairs are exact block means, MR pairs (k-space) close to them: aligned either way.
        block = highres[0].reshape(16, 2, 16, 2).mean(dim=(1, 3))
        assert float((lowres[0] - block).abs().mean()) < 0.05
        torch.testing.assert_close(dataset[index][0], lowres)  # reproducible draws
    held = build_heldout_set(cfg, "validation")
    assert {h.modality for h in held} == {"CT", "MR"}
    for pair in held:
        assert pair.clean.shape == (2 * pair.degraded.shape[0], 2 * pair.degraded.shape[1])
        assert pair.degradation in ("sr2_kspace", "sr2_blur0_area")


def test_ct_training_pairs_are_exact_block_means_without_blur():
    cfg = DataConfig.from_dict({**TINY_SR_DATA, "modalities": ["CT"], "sr_blur_sigma": 0.0})
    dataset = build_training_set(cfg)
    lowres, highres = dataset[3]
    torch.testing.assert_close(lowres[0], highres[0].reshape(16, 2, 16, 2).mean(dim=(1, 3)), atol=1e-5, rtol=0)


def test_sr_models_start_as_nearest_upsampling_and_the_student_is_10x_cheaper():
    windows = [[-0.5, 1.5], [-2.35, -0.25], [1.0, 8.0]]
    x = torch.randn(2, 1, 10, 14)
    for name, kwargs in (("sr2_student", {"width": 8, "blocks": 2, "input_windows": windows}),
                         ("sr2_teacher", {"width": 8, "blocks": 2})):
        model = create_model(name, **kwargs)
        assert model.scale == 2
        torch.testing.assert_close(model(x), x.repeat_interleave(2, 2).repeat_interleave(2, 3))
    shipped = {stage: load_config(CONFIGS / f"sr2_{stage}.json").model for stage in ("teacher", "distill")}
    flops = {stage: count_flops(create_model(spec.name, **spec.kwargs)) for stage, spec in shipped.items()}
    assert flops["teacher"] >= 10 * flops["distill"], flops


def test_lanczos_base_is_pillows_lanczos_and_loads_nearest_base_weights():
    from runtime.resample import lanczos

    rng = np.random.default_rng(0)
    for name, kwargs in (("sr2_student", {"width": 4, "blocks": 1}), ("sr2_teacher", {"width": 4, "blocks": 1})):
        model = create_model(name, base="lanczos3", **kwargs).eval()
        for shape in ((40, 52), (7, 9)):  # borders included: weights renormalized over the taps inside the image
            x = rng.random(shape, dtype=np.float32) * 3 - 1
            with torch.no_grad():
                got = model(torch.from_numpy(x)[None, None])[0, 0].numpy()
            np.testing.assert_allclose(got, lanczos(x, 2), atol=5e-6, rtol=0)
    nearest_model = create_model("sr2_student", width=4, blocks=1)
    with torch.no_grad():
        nearest_model.tail.weight.normal_(0.0, 0.05)
    lanczos_model = create_model("sr2_student", width=4, blocks=1, base="lanczos3")
    lanczos_model.load_state_dict(nearest_model.state_dict())  # the fixed kernels are not in the state dict
    x = torch.rand(1, 1, 12, 12)
    with torch.no_grad():  # the same residual on a different base
        torch.testing.assert_close(lanczos_model(x) - torch.from_numpy(lanczos(x[0, 0].numpy(), 2)),
                                   nearest_model(x) - x.repeat_interleave(2, 2).repeat_interleave(2, 3), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="base"):
        create_model("sr2_student", base="bicubic")


def test_lanczos8_base_interpolates_a_band_limited_image_closer_than_lanczos3():
    """MR halved in k-space is band-limited: the wider windowed sinc of the MR x2 model's base is
    nearer the exact (zero-filled k-space) interpolation than Lanczos-3, away from the borders."""
    image = kspace_lowpass(np.random.default_rng(3).standard_normal((96, 96)).astype(np.float32), 0.45)
    lowres = torch.from_numpy(kspace_downsample(image))[None, None]
    errors = {}
    for base in ("lanczos3", "lanczos8"):
        model = create_model("sr2_student", width=4, blocks=1, base=base).eval()
        with torch.no_grad():
            errors[base] = float(np.abs(model(lowres)[0, 0].numpy() - image)[20:-20, 20:-20].max())
    assert errors["lanczos8"] < errors["lanczos3"] / 3, errors


def test_the_dct_zero_fill_teacher_is_a_checkpoint_that_computes_dct_upsample(tmp_path):
    """`python -m trainer.checkpoint fixed sr2_dct_zero_fill T.pt` saves the classical teacher an MR
    x2 student distils: it loads like any checkpoint and is the DCT zero-filling, exactly."""
    import subprocess
    import sys

    from trainer.checkpoint import load_model

    target = tmp_path / "zero_fill.pt"
    subprocess.run([sys.executable, "-m", "trainer.checkpoint", "fixed", "sr2_dct_zero_fill", str(target)],
                   check=True, capture_output=True, cwd=CONFIGS.parents[1])
    teacher, ckpt = load_model(target)
    assert ckpt["model_name"] == "sr2_dct_zero_fill" and ckpt["state_dict"] == {}
    lowres = np.random.default_rng(5).random((2, 1, 12, 20)).astype(np.float32)
    with torch.no_grad():
        output, aux = teacher.forward_with_aux(torch.from_numpy(lowres))
    assert output.shape == (2, 1, 24, 40) and aux["features"] == []
    for index in range(2):
        np.testing.assert_allclose(output[index, 0].numpy(), dct_upsample(lowres[index, 0]), atol=1e-5)
    trained = subprocess.run([sys.executable, "-m", "trainer.checkpoint", "fixed", "sr2_student", str(tmp_path / "s.pt")],
                             capture_output=True, text=True, cwd=CONFIGS.parents[1])
    assert trained.returncode == 2 and "has trainable weights" in trained.stderr  # random weights are no teacher


def test_the_separable_lanczos8_base_equals_its_2d_kernels():
    """Lanczos-8 runs as two 1-D passes; Lanczos and its renormalization over the taps inside the
    image are separable, so it gives the 2-D kernels' numbers, borders included."""
    import torch.nn.functional as F

    from trainer.models.super_resolution import lanczos_phase_kernels

    model = create_model("sr2_student", width=4, blocks=1, base="lanczos8").eval()
    x = torch.rand(2, 1, 23, 30)
    kernels = lanczos_phase_kernels(8)
    expected = F.conv2d(x, kernels, padding=8) / F.conv2d(torch.ones_like(x), kernels, padding=8)
    with torch.no_grad():
        torch.testing.assert_close(model.base_phases(x), expected, atol=1e-5, rtol=0)
    assert count_flops(model, (1, 1, 256, 256)) < count_flops(create_model("sr2_student", width=4, blocks=1,
                                                                            base="lanczos3"), (1, 1, 256, 256))


def test_init_moves_a_nearest_base_student_to_the_lanczos_base_as_exactly_lanczos(tmp_path):
    from runtime.resample import lanczos
    from trainer.checkpoint import save_checkpoint
    from trainer.train import init_model

    torch.manual_seed(0)
    student = create_model("sr2_student", width=4, blocks=1)
    with torch.no_grad():
        for parameter in student.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    path = tmp_path / "nearest.pt"
    save_checkpoint(path, student)
    rebased, _ = init_model(path, {"width": 4, "blocks": 1, "base": "lanczos3"})
    assert rebased.base == "lanczos3" and rebased.model_kwargs["base"] == "lanczos3"  # saved checkpoints say so
    for name, value in student.state_dict().items():  # the trained features are kept, the tail restarts at zero
        expected = torch.zeros_like(value) if name.startswith("tail.") else value
        torch.testing.assert_close(rebased.state_dict()[name], expected)
    x = torch.rand(1, 1, 9, 11)
    with torch.no_grad():
        np.testing.assert_allclose(rebased(x)[0, 0].numpy(), lanczos(x[0, 0].numpy(), 2), atol=5e-6, rtol=0)
    same, _ = init_model(path, {"width": 4, "blocks": 1})  # no base asked: nothing changes
    assert same.base == "nearest" and same.tail.weight.abs().sum() > 0


def test_relativistic_gan_loss_and_patch_discriminator():
    loss = ReconstructionLoss(LossConfig(l1=0.5, ssim=0.3, adversarial=0.2, gan="relativistic", disc_width=8))
    ref = torch.rand(2, 1, 32, 32)
    pred = torch.rand(2, 1, 32, 32, requires_grad=True)
    assert loss.discriminator(ref).shape == (2, 1, 4, 4)  # one logit per patch
    total, parts = loss(pred, ref)
    assert total.item() == pytest.approx(0.5 * parts["l1"] + 0.3 * parts["ssim_loss"] + 0.2 * parts["adv"], rel=1e-5)
    total.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    loss.discriminator_loss(pred, ref).backward()
    with pytest.raises(ValueError, match="same-size"):
        noise_balance_weights(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 16, 16), 0.01)


@pytest.mark.slow
def test_sr_teacher_distill_qat_end_to_end(tmp_path):
    tiny = {"train": {"steps": 6, "batch_size": 4, "lr": 2e-3, "eval_every": 3, "log_every": 2, "progress": False},
            "eval": {"max_images": 2}}
    stages = {
        "teacher": {"stage": "teacher", "model": {"name": "sr2_teacher", "kwargs": {"width": 8, "blocks": 1}}},
        "distill": {"stage": "distill", "model": {"name": "sr2_student", "kwargs": {
            "width": 4, "blocks": 1, "input_windows": [[-0.5, 1.5], [-2.35, -0.25]]}},
                    "distill": {"output_kd": 0.5, "feature_kd": 0.0}},
        "qat": {"stage": "qat", "qat": {"calib_batches": 2, "skip_modules": ["tail"]}},
    }
    paths = {}
    for stage, body in stages.items():
        path = tmp_path / f"{stage}.json"
        path.write_text(json.dumps({**body, "data": TINY_SR_DATA, **tiny}))
        paths[stage] = path
    teacher = train(load_config(paths["teacher"]), tmp_path / "teacher")
    student = train(load_config(paths["distill"]), tmp_path / "distill", teacher=tmp_path / "teacher" / "best.pt")
    quantized = train(load_config(paths["qat"]), tmp_path / "qat", student=tmp_path / "distill" / "best.pt")
    for result in (teacher, student, quantized):
        metrics = result["validation"]
        # psnr_input is the bicubic baseline of the same pairs: finite, and the same for every stage.
        assert np.isfinite(metrics["psnr"]) and metrics["psnr_input"] == pytest.approx(teacher["validation"]["psnr_input"])
    assert np.isfinite(quantized["qat_minus_fp32_db"])
