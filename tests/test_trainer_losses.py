"""Losses: SSIM against scikit-image, the weighted mix, adversarial and distillation terms."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.metrics import structural_similarity

from trainer.distill import ENSEMBLE_SIZES, ENSEMBLE_TRANSFORMS, DistillConfig, DistillLoss, ensembled_output
from trainer.losses import LossConfig, ReconstructionLoss, ssim
from trainer.models import create_model


def smooth_image(seed: int, size: int = 48) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(1, 1, size // 8, size // 8, generator=g), size=(size, size), mode="bilinear")


def test_ssim_of_identical_images_is_one():
    x = smooth_image(0)
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-6)
    total, parts = ReconstructionLoss(LossConfig())(x, x)
    assert total.item() == pytest.approx(0.0, abs=1e-6) and parts["l1"] == 0.0


@pytest.mark.parametrize("data_range", [1.0, 4.0])
def test_ssim_matches_scikit_image(data_range):
    ref = smooth_image(1) * data_range
    noisy = ref + 0.05 * data_range * torch.randn(ref.shape, generator=torch.Generator().manual_seed(2))
    expected = structural_similarity(ref[0, 0].numpy().astype(np.float64), noisy[0, 0].numpy().astype(np.float64),
                                     data_range=data_range, gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False)
    assert ssim(noisy, ref, data_range=data_range).item() == pytest.approx(expected, abs=2e-3)


def test_ssim_falls_with_noise_and_has_gradient():
    ref = smooth_image(3)
    g = torch.Generator().manual_seed(4)
    values = [ssim(ref + s * torch.randn(ref.shape, generator=g), ref).item() for s in (0.01, 0.05, 0.2)]
    assert values[0] > values[1] > values[2]
    pred = (ref + 0.1).requires_grad_()
    (1 - ssim(pred, ref)).backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0


def test_default_weights_mix_l1_and_ssim():
    ref, pred = smooth_image(5), smooth_image(6)
    total, parts = ReconstructionLoss(LossConfig())(pred, ref)
    assert total.item() == pytest.approx(0.7 * parts["l1"] + 0.3 * parts["ssim_loss"], rel=1e-5)


def test_adversarial_term_and_discriminator_step():
    loss = ReconstructionLoss(LossConfig(l1=0.5, ssim=0.3, adversarial=0.2, disc_width=8))
    ref, pred = smooth_image(7, 32), smooth_image(8, 32).requires_grad_()
    total, parts = loss(pred, ref)
    assert total.item() == pytest.approx(0.5 * parts["l1"] + 0.3 * parts["ssim_loss"] + 0.2 * parts["adv"], rel=1e-5)
    d_loss = loss.discriminator_loss(pred, ref)
    d_loss.backward()
    assert all(p.grad is not None for p in loss.discriminator.parameters())


def test_distillation_output_and_feature_terms():
    student = create_model("student", widths=[4, 8])
    teacher = create_model("unetpp", base_width=4, depth=3)
    kd = DistillLoss(DistillConfig(output_kd=1.0, feature_kd=0.5), student, teacher)
    x = smooth_image(9, 16)
    s_out, s_aux = student.forward_with_aux(x)
    t_out, t_aux = teacher.forward_with_aux(x + 0.1)
    total, parts = kd(s_out, s_aux, t_out, t_aux)
    assert parts["kd_out"] == pytest.approx(0.1, abs=1e-5)  # both models start as the identity
    assert total.item() == pytest.approx(parts["kd_out"] + 0.5 * parts["kd_feat"], rel=1e-5)
    assert len(kd.adapters.adapters) == 2  # the student's two levels


def _flipped(x: torch.Tensor, transform: tuple[bool, bool, bool]) -> torch.Tensor:
    """One of ENSEMBLE_TRANSFORMS written out independently of trainer.distill."""
    transpose, flip_cols, flip_rows = transform
    x = x.transpose(-1, -2) if transpose else x
    x = x.flip(-1) if flip_cols else x
    return x.flip(-2) if flip_rows else x


def _unflipped(y: torch.Tensor, transform: tuple[bool, bool, bool]) -> torch.Tensor:
    transpose, flip_cols, flip_rows = transform
    y = y.flip(-2) if flip_rows else y
    y = y.flip(-1) if flip_cols else y
    return y.transpose(-1, -2) if transpose else y


def test_self_ensemble_is_the_mean_of_undone_passes_and_equivariant_over_its_group():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(2, 1, 3, padding=1)  # random kernel: not flip-equivariant
    x = torch.randn(2, 2, 12, 12)
    x[:, 1] = 0.05  # a constant noise-map channel, as a noise_map model gets
    with torch.no_grad():
        assert torch.equal(ensembled_output(conv, x, 1), conv(x))
        for size in ENSEMBLE_SIZES[1:]:
            group = ENSEMBLE_TRANSFORMS[:size]
            mean = sum(_unflipped(conv(_flipped(x, t)), t) for t in group) / size
            out = ensembled_output(conv, x, size)
            torch.testing.assert_close(out, mean)
            assert (out - conv(x)).abs().mean() > 1e-3  # the average differs from one pass
            for t in group:  # a group: transforming the input transforms the output alike
                torch.testing.assert_close(ensembled_output(conv, _flipped(x, t), size), _flipped(out, t))
        symmetric = torch.nn.Conv2d(1, 1, 3, padding=1, bias=False)
        symmetric.weight.copy_(torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]]).view(1, 1, 3, 3) / 16)
        image = x[:, :1]
        torch.testing.assert_close(ensembled_output(symmetric, image, 8), symmetric(image))


@pytest.mark.parametrize("size", [0, 3, 16])
def test_self_ensemble_size_must_be_a_group(size):
    with pytest.raises(ValueError, match="ensemble"):
        ensembled_output(torch.nn.Identity(), torch.zeros(1, 1, 4, 4), size)
    with pytest.raises(ValueError, match="teacher_ensemble"):
        DistillConfig(teacher_ensemble=size)
    with pytest.raises(ValueError, match="feature_kd"):
        DistillConfig(feature_kd=0.5, teacher_ensemble=2)


def test_noise_balance_weights_favour_low_noise_samples_and_average_one():
    from trainer.losses import noise_balance_weights

    clean = smooth_image(5).repeat(3, 1, 1, 1)
    g = torch.Generator().manual_seed(6)
    degraded = clean + torch.tensor([0.01, 0.05, 0.2]).view(3, 1, 1, 1) * torch.randn(clean.shape, generator=g)
    weights = noise_balance_weights(degraded, clean, floor=0.01)
    assert weights.shape == (3,) and weights.mean().item() == pytest.approx(1.0, abs=1e-6)
    assert weights[0] > weights[1] > weights[2]
    assert (weights[0] / weights[2]).item() == pytest.approx((0.2 + 0.01) / (0.01 + 0.01), rel=0.1)
    # A power above 1 leans further toward the low-noise sample: the ratio is raised to that power.
    squared = noise_balance_weights(degraded, clean, floor=0.01, power=2.0)
    assert squared.mean().item() == pytest.approx(1.0, abs=1e-6)
    assert (squared[0] / squared[2]).item() == pytest.approx((weights[0] / weights[2]).item() ** 2, rel=1e-4)
    with pytest.raises(ValueError, match="noise_balance_power"):
        LossConfig(noise_balance=0.01, noise_balance_power=0.0)


def test_weighted_reconstruction_loss_is_the_weighted_mean_of_per_sample_losses():
    ref = smooth_image(7).repeat(2, 1, 1, 1)
    pred = ref.clone()
    pred[1] += 0.1  # only the second sample is wrong
    loss = ReconstructionLoss(LossConfig(l1=1.0, ssim=0.0))
    plain, _ = loss(pred, ref)
    assert plain.item() == pytest.approx(0.05, abs=1e-5)
    down, _ = loss(pred, ref, torch.tensor([1.5, 0.5]))
    assert down.item() == pytest.approx(0.025, abs=1e-5)
    assert ssim(pred, ref, per_sample=True).shape == (2,)
    assert ssim(pred, ref, per_sample=True)[0].item() == pytest.approx(1.0, abs=1e-6)


def test_rmse_term_weighs_a_concentrated_error_more_than_l1_does():
    ref = torch.zeros(2, 1, 16, 16)
    spread = torch.full_like(ref[:1], 0.01)  # a small error everywhere
    edge = torch.zeros_like(ref[:1])
    edge[..., :, :1] = 0.16  # the same L1 in one column, as at an edge
    pred = torch.cat([spread, edge])
    loss = ReconstructionLoss(LossConfig(l1=0.0, ssim=0.0, rmse=1.0))
    per_sample = [loss(p[None], r[None])[0].item() for p, r in zip(pred, ref)]
    assert per_sample[0] == pytest.approx(0.01, rel=1e-4) and per_sample[1] == pytest.approx(0.04, rel=1e-4)
    total, parts = loss(pred, ref, torch.tensor([1.5, 0.5]))
    assert total.item() == pytest.approx(1.5 * 0.01 / 2 + 0.5 * 0.04 / 2, rel=1e-4) and "rmse" in parts
    assert "rmse" not in ReconstructionLoss(LossConfig())(pred, ref)[1]  # off by default
    perfect = pred.clone().requires_grad_(True)
    ReconstructionLoss(LossConfig(rmse=1.0))(perfect, perfect.detach())[0].backward()
    assert torch.isfinite(perfect.grad).all()  # a perfect sample has a finite gradient


def test_gradient_term_ignores_an_offset_and_counts_a_moved_edge():
    ref = torch.zeros(1, 1, 16, 16)
    ref[..., 8:] = 1.0  # a vertical edge between columns 7 and 8
    offset, moved = ref + 0.1, torch.zeros_like(ref)
    moved[..., 7:] = 1.0  # the edge one column to the left
    loss = ReconstructionLoss(LossConfig(l1=0.0, ssim=0.0, gradient=1.0))
    assert loss(offset, ref)[0].item() == pytest.approx(0.0, abs=1e-7)
    total, parts = loss(moved, ref)
    # the difference is one unit column: two unit steps in x per row (of 15 column pairs), none in y
    assert total.item() == pytest.approx((2 / 15 + 0.0) / 2, rel=1e-5) and "gradient" in parts
    assert "gradient" not in ReconstructionLoss(LossConfig())(moved, ref)[1]  # off by default


def test_window_term_counts_only_what_the_window_shows():
    ref = torch.zeros(2, 1, 16, 16)
    ref[0] = 3.0  # bone-like: above the [0, 1] window
    pred = ref + 0.5  # the same error in both samples
    loss = ReconstructionLoss(LossConfig(l1=1.0, ssim=0.0, windows=[[0.0, 1.0, 2.0]]))
    per_sample = [loss(p[None], r[None])[1]["window0"] for p, r in zip(pred, ref)]
    assert per_sample == [pytest.approx(0.0), pytest.approx(0.5)]  # clipped away in bone, seen at 0
    total, parts = loss(pred, ref)
    assert total.item() == pytest.approx(0.5 + 2.0 * 0.25, rel=1e-5)  # L1 0.5 plus 2 x the mean window term
    wide = ReconstructionLoss(LossConfig(l1=1.0, ssim=0.0, rmse=1.0, windows=[[-2.0, 2.0, 1.0]]))
    assert wide(pred[1:], ref[1:])[1]["window0"] == pytest.approx((0.5 + 0.5) / 4, rel=1e-5)  # over the width 4
    assert "window0" not in ReconstructionLoss(LossConfig())(pred, ref)[1]  # off by default


@pytest.mark.parametrize("window", [[1.0, 0.0, 1.0], [0.0, 1.0, -1.0], [0.0, 1.0], [0.0, float("nan"), 1.0], [0, "1", 1]])
def test_window_term_rejects_a_malformed_window(window):
    with pytest.raises(ValueError, match="loss.windows"):
        LossConfig(windows=[window])
    with pytest.raises(ValueError, match="loss.windows weighs"):
        LossConfig(l1=0.0, rmse=0.0, windows=[[0.0, 1.0, 1.0]])
