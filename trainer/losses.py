"""Training losses: L1, differentiable SSIM, an optional small adversarial term, and their mix.

Defaults follow the project issue: 0.7 * L1 + 0.3 * (1 - SSIM); with the adversarial term
0.5 / 0.3 / 0.2. An optional per-sample RMSE term weighs large (edge) errors as PSNR does.
SSIM takes an explicit data range: the normalized image spans about [0, 1] (for CT the full HU
range [-1024, 3071]), so ``data_range=1.0`` by default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn
import torch.nn.functional as F


@dataclass
class LossConfig:
    """Weights of the reconstruction loss terms (plain data)."""

    l1: float = 0.7
    ssim: float = 0.3
    # Per-sample root-mean-square error (the quantity PSNR is made of). Beside L1 it weighs a
    # sample's large errors (at edges) more than its many small ones; 0: off.
    rmse: float = 0.0
    # Per-sample L1 of the difference of horizontal and vertical neighbour differences: blind to a
    # constant offset, it counts where an edge moved or rang, the error that keeps the model below
    # NLM at low CT noise (docs/TRAINING.md); 0: off.
    gradient: float = 0.0
    adversarial: float = 0.0  # > 0 enables the discriminator (e.g. 0.5 / 0.3 / 0.2)
    ssim_window: int = 11
    ssim_sigma: float = 1.5
    data_range: float = 1.0
    disc_width: int = 32
    disc_lr: float = 1e-4
    # "standard": BCE real/fake; "relativistic": ESRGAN's relativistic average GAN (each logit
    # judged against the mean logit of the other kind).
    gan: str = "standard"
    # > 0: weight each sample by 1 / (its noise RMS + noise_balance), normalized to mean 1 over
    # the batch, so that low-noise patches count as much as high-noise ones (the benchmark
    # averages PSNR in dB over dose levels, not squared errors). 0: plain mean.
    noise_balance: float = 0.0
    # The weights above raised to this power: 1 is about what a mean of per-sample PSNRs asks of
    # an L1 loss; above 1 leans further toward the low-noise samples, trading dB at high noise
    # (where the model is far above classical filters) for dB at low noise (where it is not).
    noise_balance_power: float = 1.0
    # Display windows [low, high, weight] in normalized units: each adds weight * (l1 * L1 + rmse *
    # RMSE) of the output and reference clipped to [low, high], over the window's width, so that the
    # errors a reader sees in that window (what PSNR in it counts) weigh more than those it clips
    # away (inside bone, beyond air). With ct_hu_range [-160, 240], [0, 1] is CT's soft-tissue window
    # (and the displayed range of MR and X-ray) and [-2.975, 0.775] CT's lung window W1500/L-600.
    windows: list[list[float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.noise_balance) and math.isfinite(self.noise_balance_power)) \
                or self.noise_balance < 0 or not self.noise_balance_power > 0:
            raise ValueError(f"loss.noise_balance {self.noise_balance} must be finite and >= 0, and "
                             f"loss.noise_balance_power {self.noise_balance_power} finite and > 0")
        for window in self.windows:
            numbers = all(isinstance(v, (int, float)) and math.isfinite(v) for v in window)
            if len(window) != 3 or not numbers or not window[0] < window[1] or window[2] < 0:
                raise ValueError(f"loss.windows: each entry must be [low, high, weight] with low < high "
                                 f"and weight >= 0, got {window!r}")
        if self.windows and self.l1 == 0 and self.rmse == 0:
            raise ValueError("loss.windows weighs the L1 and RMSE terms in each window: set loss.l1 or loss.rmse > 0")


def gaussian_window(size: int, sigma: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """Normalized 2-D gaussian kernel, shape [1, 1, size, size]."""
    coords = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(
    pred: torch.Tensor,
    ref: torch.Tensor,
    data_range: float = 1.0,
    window: int = 11,
    sigma: float = 1.5,
    per_sample: bool = False,
) -> torch.Tensor:
    """Mean SSIM (Wang et al. 2004, K1=0.01, K2=0.03) of [N, 1, H, W] tensors; 'valid' windows only.

    ``per_sample``: return one SSIM per sample, shape [N], instead of the batch mean.
    """
    if pred.shape != ref.shape or pred.dim() != 4 or pred.shape[1] != 1:
        raise ValueError(f"ssim expects two [N, 1, H, W] tensors of one shape, got {tuple(pred.shape)} and {tuple(ref.shape)}")
    if min(pred.shape[-2:]) < window:
        raise ValueError(f"ssim window {window} is larger than the image {tuple(pred.shape[-2:])}")
    pred, ref = pred.float(), ref.float()
    kernel = gaussian_window(window, sigma, pred.device)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_p, mu_r = F.conv2d(pred, kernel), F.conv2d(ref, kernel)
    var_p = F.conv2d(pred * pred, kernel) - mu_p**2
    var_r = F.conv2d(ref * ref, kernel) - mu_r**2
    cov = F.conv2d(pred * ref, kernel) - mu_p * mu_r
    num = (2 * mu_p * mu_r + c1) * (2 * cov + c2)
    den = (mu_p**2 + mu_r**2 + c1) * (var_p + var_r + c2)
    ssim_map = num / den
    return ssim_map.mean(dim=(1, 2, 3)) if per_sample else ssim_map.mean()


def gradient_l1(difference: torch.Tensor) -> torch.Tensor:
    """Per-sample mean absolute horizontal and vertical neighbour difference of ``difference``
    ([N, 1, H, W] -> [N]): the L1 distance between two images' gradients."""
    dx = (difference[..., :, 1:] - difference[..., :, :-1]).abs().mean(dim=(1, 2, 3))
    dy = (difference[..., 1:, :] - difference[..., :-1, :]).abs().mean(dim=(1, 2, 3))
    return (dx + dy) / 2.0


def weighted_l1(difference: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The mean over samples of ``weights`` [N] times each sample's mean absolute ``difference``."""
    return (weights * difference.abs().mean(dim=(1, 2, 3))).mean()


def weighted_rmse(difference: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The mean over samples of ``weights`` [N] times each sample's root-mean-square ``difference``."""
    # The epsilon keeps the square root's gradient finite for a perfect sample.
    return (weights * (difference.pow(2).mean(dim=(1, 2, 3)) + 1e-12).sqrt()).mean()


def noise_balance_weights(
    degraded: torch.Tensor, clean: torch.Tensor, floor: float, power: float = 1.0
) -> torch.Tensor:
    """Per-sample weights (1 / (RMS(degraded - clean) + floor)) ** power, normalized to mean 1, shape [N]."""
    if degraded.shape != clean.shape:
        raise ValueError("loss.noise_balance needs same-size (noisy, clean) pairs; set it to 0 for super-resolution")
    rms = (degraded.float() - clean.float()).pow(2).mean(dim=(1, 2, 3)).sqrt()
    weights = (1.0 / (rms + floor)) ** power
    return weights / weights.mean()


class Discriminator(nn.Module):
    """Small SRGAN-style patch discriminator: strided conv + LeakyReLU blocks and a 1x1 conv to one
    logit per receptive field (``blocks`` = 3: 16x downsampled, ~46-pixel patches), so texture is
    judged locally, as in PatchGAN/ESRGAN."""

    def __init__(self, width: int = 32, blocks: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(1, width, 3, padding=1), nn.LeakyReLU(0.2, inplace=True)]
        ch = width
        for i in range(blocks):
            out = width * 2 ** min(i + 1, 3)
            layers += [nn.Conv2d(ch, out, 3, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
            ch = out
        layers += [nn.Conv2d(ch, 1, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def gan_loss(logits_a: torch.Tensor, logits_b: torch.Tensor, kind: str) -> torch.Tensor:
    """Loss for calling ``a`` real and ``b`` fake: standard BCE, or relativistic average (ESRGAN:
    ``a`` judged against the mean of ``b`` and vice versa)."""
    if kind == "relativistic":
        logits_a, logits_b = logits_a - logits_b.mean(), logits_b - logits_a.mean()
    elif kind != "standard":
        raise ValueError(f"loss.gan must be 'standard' or 'relativistic', got {kind!r}")
    return F.binary_cross_entropy_with_logits(logits_a, torch.ones_like(logits_a)) + F.binary_cross_entropy_with_logits(
        logits_b, torch.zeros_like(logits_b))


class ReconstructionLoss(nn.Module):
    """Weighted L1 + (1 - SSIM) [+ adversarial]; returns the total and its parts."""

    def __init__(self, cfg: LossConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.discriminator = Discriminator(cfg.disc_width) if cfg.adversarial > 0 else None

    def forward(
        self, pred: torch.Tensor, ref: torch.Tensor, weights: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """``weights``: optional per-sample weights [N] (mean 1), e.g. from noise_balance_weights."""
        c = self.cfg
        difference = pred.float() - ref.float()
        per_sample_ssim = ssim(pred, ref, c.data_range, c.ssim_window, c.ssim_sigma, per_sample=True)
        if weights is None:
            weights = torch.ones(difference.shape[0], device=difference.device)
        l1 = weighted_l1(difference, weights)
        ssim_loss = (weights * (1.0 - per_sample_ssim)).mean()
        total = c.l1 * l1 + c.ssim * ssim_loss
        parts = {"l1": l1.item(), "ssim_loss": ssim_loss.item()}
        if c.rmse > 0:
            rmse = weighted_rmse(difference, weights)
            total = total + c.rmse * rmse
            parts["rmse"] = rmse.item()
        for index, (low, high, weight) in enumerate(c.windows):
            # Where the output lies outside the window and the reference inside, the clip passes no
            # gradient; the unclipped terms above pull such an output back.
            windowed = (pred.float().clamp(low, high) - ref.float().clamp(low, high)) / (high - low)
            term = c.l1 * weighted_l1(windowed, weights)
            if c.rmse > 0:
                term = term + c.rmse * weighted_rmse(windowed, weights)
            total = total + weight * term
            parts[f"window{index}"] = term.item()
        if c.gradient > 0:
            gradient = (weights * gradient_l1(difference)).mean()
            total = total + c.gradient * gradient
            parts["gradient"] = gradient.item()
        if self.discriminator is not None:
            # Generator side: make the discriminator (stepped separately) call the output real.
            fake = self.discriminator(pred.float())
            if c.gan == "relativistic":
                adv = gan_loss(fake, self.discriminator(ref.float()).detach(), c.gan)
            else:
                adv = F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
            total = total + c.adversarial * adv
            parts["adv"] = adv.item()
        return total, parts

    def discriminator_loss(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """The discriminator's loss for telling ``real`` from ``fake`` (detached here)."""
        assert self.discriminator is not None
        return gan_loss(self.discriminator(real.float()), self.discriminator(fake.detach().float()), self.cfg.gan)
