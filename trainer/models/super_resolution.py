"""x2 super-resolution models: a small TensorRT-friendly student and an EDSR-style teacher.

Both take a normalized low-resolution image ``[N, 1, H, W]`` and return ``[N, 1, 2H, 2W]``:
a fixed nearest-neighbour x2 upsampling of the input plus a learned residual that a
sub-pixel convolution (Shi et al. 2016, "PixelShuffle"; ONNX DepthToSpace) brings to the
output grid. Low-resolution pixel ``i`` is taken to cover output pixels ``2i`` and ``2i + 1``
(area alignment, the grid of trainer.data.super_resolution and of the runtime's geometry).

The student uses only Conv, ReLU, Add, Clip, Resize (nearest) and one DepthToSpace, which
TensorRT 8.5+ builds in INT8; its first layer sees the input through the same intensity
windows as the denoising student (:class:`~trainer.models.student.WindowedHead`).
"""

from __future__ import annotations

import torch
from torch import nn

from trainer.models.registry import register_model
from trainer.models.student import WindowedHead, conv_relu


class _ResidualUpsampler(nn.Module):
    """``nearest_up(x) + pixel_shuffle(tail(body(head(x))))``; the tail starts at zero, so an
    untrained model is nearest-neighbour upsampling and training only adds a correction."""

    scale = 2
    size_multiple = 1

    def __init__(self, head: nn.Module, body: nn.Module, width: int) -> None:
        super().__init__()
        self.head, self.body = head, body
        self.tail = nn.Conv2d(width, self.scale**2, 3, padding=1)
        self.shuffle = nn.PixelShuffle(self.scale)
        self.upsample = nn.Upsample(scale_factor=self.scale, mode="nearest")
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, list[torch.Tensor]]]:
        """Output plus ``features`` (head and body outputs, for feature distillation)."""
        features = self.head(x)
        body = self.body(features) + features
        return self.upsample(x) + self.shuffle(self.tail(body)), {"features": [features, body], "deep": []}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_aux(x)[0]


@register_model("sr2_student")
class SRStudent(_ResidualUpsampler):
    """``blocks`` 3x3 conv+ReLU layers of ``width`` channels at the input resolution."""

    def __init__(self, width: int = 16, blocks: int = 4, input_windows: list[list[float]] | None = None) -> None:
        if width < 1 or blocks < 1:
            raise ValueError(f"sr2_student needs width >= 1 and blocks >= 1, got {width}, {blocks}")
        head = WindowedHead(input_windows, width) if input_windows is not None else conv_relu(1, width)
        body = nn.Sequential(*(conv_relu(width, width) for _ in range(blocks)))
        super().__init__(head, body, width)


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

    def __init__(self, width: int = 48, blocks: int = 8, res_scale: float = 0.2) -> None:
        if width < 1 or blocks < 1:
            raise ValueError(f"sr2_teacher needs width >= 1 and blocks >= 1, got {width}, {blocks}")
        head = nn.Conv2d(1, width, 3, padding=1)
        body = nn.Sequential(*(ResBlock(width, res_scale) for _ in range(blocks)),
                             nn.Conv2d(width, width, 3, padding=1))
        super().__init__(head, body, width)
