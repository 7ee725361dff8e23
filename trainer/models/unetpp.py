"""U-Net++ teacher (Zhou et al., 2018, "UNet++: A Nested U-Net Architecture").

Node X^{i,j} sits at depth i (resolution 1/2^i) and column j. Column 0 is the encoder;
X^{i,j} (j > 0) convolves the concatenation of all X^{i,k} (k < j) with the upsampled
X^{i+1,j-1}: the nested dense skip pathways. Deep supervision puts a 1x1 head on every
X^{0,j}. The output is residual: x + f(x).
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from trainer.models.registry import register_model


class ConvBlock(nn.Sequential):
    """Two 3x3 conv + BatchNorm + ReLU (the paper's node)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(
            nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )


@register_model("unetpp")
class UNetPlusPlus(nn.Module):
    """U-Net++ with widths ``base_width * 2**i`` for i < ``depth`` (paper: 32, depth 5)."""

    def __init__(self, base_width: int = 32, depth: int = 5, deep_supervision: bool = False) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"unetpp depth must be >= 2, got {depth}")
        self.depth = depth
        self.deep_supervision = deep_supervision
        self.size_multiple = 2 ** (depth - 1)
        self.widths = [base_width * 2**i for i in range(depth)]
        w = self.widths
        self.pool = nn.MaxPool2d(2)
        self.nodes = nn.ModuleDict()
        for i in range(depth):
            for j in range(depth - i):
                in_ch = 1 if (i, j) == (0, 0) else (w[i - 1] if j == 0 else w[i] * j + w[i + 1])
                self.nodes[f"{i}_{j}"] = ConvBlock(in_ch, w[i])
        n_heads = depth - 1 if deep_supervision else 1
        self.heads = nn.ModuleList(nn.Conv2d(w[0], 1, 1) for _ in range(n_heads))
        for head in self.heads:  # start as the identity map (residual output)
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, list[torch.Tensor]]]:
        """Output plus ``features`` (X^{i,0} for each depth i) and ``deep`` (all supervised outputs)."""
        grid: dict[tuple[int, int], torch.Tensor] = {}
        for i in range(self.depth):
            inp = x if i == 0 else self.pool(grid[(i - 1, 0)])
            grid[(i, 0)] = self.nodes[f"{i}_0"](inp)
        # Column by column: node (i, j) needs (i, <j) and (i+1, j-1).
        for j in range(1, self.depth):
            for i in range(self.depth - j):
                up = F.interpolate(grid[(i + 1, j - 1)], scale_factor=2.0, mode="bilinear", align_corners=False)
                grid[(i, j)] = self.nodes[f"{i}_{j}"](torch.cat([grid[(i, k)] for k in range(j)] + [up], 1))
        if self.deep_supervision:
            deep = [x + head(grid[(0, j + 1)]) for j, head in enumerate(self.heads)]
        else:
            deep = [x + self.heads[0](grid[(0, self.depth - 1)])]
        features = [grid[(i, 0)] for i in range(self.depth)]
        return deep[-1], {"features": features, "deep": deep}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_aux(x)[0]
