"""Parameter and FLOP counts.

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode``: one multiply-add is
2 FLOPs (so a 3x3 conv from C_in to C_out costs 2*9*C_in*C_out FLOPs per output pixel).
Only convolutions and matrix products are counted; activations, adds and resizes are free.
"""

from __future__ import annotations

import copy

import torch
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: torch.nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@torch.no_grad()
def count_flops(model: torch.nn.Module, shape: tuple[int, ...] | None = None) -> int:
    """FLOPs of one eval-mode forward pass on an input of ``shape`` (multiply-add = 2 FLOPs);
    default: one 512x512 slice with the model's input channels (2 for a noise-map student).

    Runs a copy of the model on the meta device: shapes only, no arithmetic, so a 512x512
    teacher pass is counted in milliseconds.
    """
    if shape is None:
        shape = (1, int(getattr(model, "input_channels", 1)), 512, 512)
    meta = copy.deepcopy(model).to("meta").eval()
    with FlopCounterMode(display=False) as counter:
        meta(torch.empty(shape, dtype=torch.float32, device="meta"))
    return int(counter.get_total_flops())
