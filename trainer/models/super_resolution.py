"""x2 super-resolution models: a small TensorRT-friendly student and an EDSR-style teacher.

Both take a normalized low-resolution image ``[N, 1, H, W]`` and return ``[N, 1, 2H, 2W]``:
a fixed x2 upsampling of the input (``base``) plus a learned residual that a sub-pixel
convolution (Shi et al. 2016, "PixelShuffle"; ONNX DepthToSpace) brings to the output grid.
Low-resolution pixel ``i`` is taken to cover output pixels ``2i`` and ``2i + 1`` (area alignment,
the grid of trainer.data.super_resolution and of the runtime's geometry). ``base`` is
``"nearest"`` (the models shipped before the seventeenth session) or ``"lanczos3"`` (shipped since): Lanczos-3 as four fixed 7x7 phase
convolutions (one per output pixel of each 2x2 block) that share the residual's DepthToSpace,
with the weights renormalized over the taps inside the image as Pillow does, so the untrained
model is the classical baseline the SR benchmark compares against (``runtime.resample.lanczos``).
``"lanczos8"`` is the same with 17-tap kernels (a wider windowed sinc): closer to the ideal
interpolation of a band-limited image, which is what an MR image halved in k-space is. The
Lanczos-3 kernels stay 2-D (computed as two 1-D passes they had 0.13 GFLOP less per 512² input
but ran 1.07x slower in FP32 on ONNX Runtime's CPU, docs/TRAINING.md); Lanczos-8's are applied
as two 1-D passes (a 17x1 convolution, then a grouped 1x17 one; 0.11 GFLOP per 512² input
with its renormalization, instead of 1.2 as 17x17 kernels). Lanczos is separable and so is the renormalization (the taps
inside the image form a rectangle), so both give the same numbers.

The student uses only Conv, ReLU, Add, Clip, Resize (nearest) or Mul/Div (the Lanczos base's
renormalization) and one DepthToSpace, which TensorRT 8.5+ builds in INT8 (the fixed Lanczos
convolution is a plain ``conv2d`` with a buffer, not a module, so QAT leaves it in float); its
first layer sees the input through the same intensity windows as the denoising student
(:class:`~trainer.models.student.WindowedHead`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainer.models.registry import create_model, register_model
from trainer.models.student import WindowedHead, conv_relu


SCALE = 2
BASES = ("nearest", "lanczos3", "lanczos8")
SEPARABLE_BASES = ("lanczos8",)  # applied as two 1-D passes (module docstring)
LANCZOS_A = 3


def lanczos_phase_taps(a: int = LANCZOS_A) -> torch.Tensor:
    """``[2, 2a+1]`` 1-D Lanczos-``a`` taps of the two output phases along one axis, float64:
    output pixel ``2i`` lies 0.25 input pixels before input pixel ``i``'s centre and ``2i + 1``
    0.25 after it."""
    offsets = torch.arange(-a, a + 1, dtype=torch.float64)

    def taps(shift: float) -> torch.Tensor:
        distance = offsets - shift
        weights = torch.sinc(distance) * torch.sinc(distance / a)
        return torch.where(distance.abs() < a, weights, torch.zeros_like(weights))

    return torch.stack((taps(-0.25), taps(0.25)))


def lanczos_phase_kernels(a: int = LANCZOS_A) -> torch.Tensor:
    """``[4, 1, 2a+1, 2a+1]`` Lanczos-``a`` weights of the four output pixels of each 2x2 block
    (channel ``2 * row_phase + column_phase``, the order PixelShuffle reads)."""
    phases = lanczos_phase_taps(a)
    kernels = [torch.outer(phases[row], phases[col]) for row in range(2) for col in range(2)]
    return torch.stack(kernels).unsqueeze(1).float()


def _separable_conv(x: torch.Tensor, row_taps: torch.Tensor, column_taps: torch.Tensor) -> torch.Tensor:
    """``[N, 1, H, W]`` -> ``[N, 4, H, W]``: the two row phases (a ``K x 1`` convolution), then
    each one's two column phases (a ``1 x K`` convolution in two groups), channel
    ``2 * row_phase + column_phase`` as :func:`lanczos_phase_kernels` orders them."""
    pad = row_taps.shape[-2] // 2
    rows = F.conv2d(x, row_taps, padding=(pad, 0))
    return F.conv2d(rows, column_taps, padding=(0, pad), groups=2)


class _ResidualUpsampler(nn.Module):
    """``base_up(x) + pixel_shuffle(tail(body(head(x))))``; the tail starts at zero, so an
    untrained model is its fixed base upsampling and training only adds a correction."""

    scale = SCALE
    size_multiple = 1

    def __init__(self, head: nn.Module, body: nn.Module, width: int, base: str = "nearest") -> None:
        super().__init__()
        if base not in BASES:
            raise ValueError(f"base {base!r} must be one of {', '.join(BASES)}")
        self.head, self.body, self.base = head, body, base
        self.tail = nn.Conv2d(width, self.scale**2, 3, padding=1)
        self.shuffle = nn.PixelShuffle(self.scale)
        self.upsample = nn.Upsample(scale_factor=self.scale, mode="nearest")
        # Fixed weights, not a parameter or a module: not trained, not in the state dict (old
        # checkpoints load unchanged), not quantized.
        lanczos_a = int(base[len("lanczos"):]) if base.startswith("lanczos") else LANCZOS_A
        if base in SEPARABLE_BASES:
            taps = lanczos_phase_taps(lanczos_a).float()  # [2, K]
            self.register_buffer("lanczos_row_taps", taps[:, None, :, None], persistent=False)  # [2, 1, K, 1]
            # [4, 1, 1, K]: each row phase's two column phases (grouped convolution)
            self.register_buffer("lanczos_column_taps", taps.repeat(2, 1)[:, None, None, :], persistent=False)
        else:
            self.register_buffer("lanczos_kernels", lanczos_phase_kernels(lanczos_a), persistent=False)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def base_phases(self, x: torch.Tensor) -> torch.Tensor:
        """The Lanczos base as ``[N, 4, H, W]`` phases, its weights renormalized over the taps that
        fall inside the image (``x * 0 + 1``: a ones map that exports as Mul/Add, no Shape ops)."""
        ones = x * 0 + 1
        if self.base in SEPARABLE_BASES:
            taps = (self.lanczos_row_taps, self.lanczos_column_taps)
            return _separable_conv(x, *taps) / _separable_conv(ones, *taps)
        pad = self.lanczos_kernels.shape[-1] // 2
        weighted = F.conv2d(x, self.lanczos_kernels, padding=pad)
        weight_sum = F.conv2d(ones, self.lanczos_kernels, padding=pad)
        return weighted / weight_sum

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, list[torch.Tensor]]]:
        """Output plus ``features`` (head and body outputs, for feature distillation)."""
        features = self.head(x)
        body = self.body(features) + features
        residual = self.tail(body)
        if self.base != "nearest":
            output = self.shuffle(self.base_phases(x) + residual)
        else:
            output = self.upsample(x) + self.shuffle(residual)
        return output, {"features": [features, body], "deep": []}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_aux(x)[0]


def rebase_upsampler(model: nn.Module, base: str) -> nn.Module:
    """A copy of x2 ``model`` on another fixed ``base`` (its ``model_kwargs`` say so), every weight
    kept but the tail's: that was trained to correct the old base, so it restarts at zero and the
    new model starts as exactly its new base, with the trained features."""
    rebased = create_model(model.model_name, **{**model.model_kwargs, "base": base})
    rebased.load_state_dict(model.state_dict())  # the base kernels are buffers outside the state dict
    with torch.no_grad():
        rebased.tail.weight.zero_()
        rebased.tail.bias.zero_()
    return rebased


@register_model("sr2_student")
class SRStudent(_ResidualUpsampler):
    """``blocks`` 3x3 conv+ReLU layers of ``width`` channels at the input resolution."""

    def __init__(self, width: int = 16, blocks: int = 4, input_windows: list[list[float]] | None = None,
                 base: str = "nearest") -> None:
        if width < 1 or blocks < 1:
            raise ValueError(f"sr2_student needs width >= 1 and blocks >= 1, got {width}, {blocks}")
        head = WindowedHead(input_windows, width) if input_windows is not None else conv_relu(1, width)
        body = nn.Sequential(*(conv_relu(width, width) for _ in range(blocks)))
        super().__init__(head, body, width, base)


class ResBlock(nn.Module):
    """EDSR residual block: conv, ReLU, conv, scaled skip (no batch norm, Lim et al. 2017)."""

    def __init__(self, width: int, res_scale: float) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(width, width, 3, padding=1))
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.body(x)


@register_model("sr2_teacher")
class SRTeacher(_ResidualUpsampler):
    """EDSR-style body: ``blocks`` residual blocks of ``width`` channels (float only)."""

    def __init__(self, width: int = 48, blocks: int = 8, res_scale: float = 0.2, base: str = "nearest") -> None:
        if width < 1 or blocks < 1:
            raise ValueError(f"sr2_teacher needs width >= 1 and blocks >= 1, got {width}, {blocks}")
        head = nn.Conv2d(1, width, 3, padding=1)
        body = nn.Sequential(*(ResBlock(width, res_scale) for _ in range(blocks)),
                             nn.Conv2d(width, width, 3, padding=1))
        super().__init__(head, body, width, base)


@register_model("sr2_dct_zero_fill")
class DCTZeroFill(nn.Module):
    """Zero-filled DCT-II x2 interpolation as a fixed module (no weights): the exact inverse of the
    "dct" MR degradation (``data.sr_mr_kspace``) for a band-limited image, i.e. the ideal
    interpolation of the image mirrored about its edges. A global operation, not a convolution,
    so it runs in no engine; it serves as a classical teacher that an x2 student distils
    (``python -m trainer.checkpoint fixed sr2_dct_zero_fill TEACHER.pt``; docs/TRAINING.md)."""

    scale = SCALE
    size_multiple = 1
    widths: tuple[int, ...] = ()  # no features to distil

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, list[torch.Tensor]]]:
        # The data layer's matrices (imported here: trainer.data pulls in the dataset code).
        from trainer.data.super_resolution import dct_upsample_matrix

        rows, cols = (torch.tensor(dct_upsample_matrix(size), dtype=x.dtype, device=x.device) for size in x.shape[-2:])
        return rows @ x @ cols.T, {"features": [], "deep": []}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_aux(x)[0]
