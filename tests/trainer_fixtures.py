"""Small trainer objects several test modules share."""

from __future__ import annotations

import torch

from trainer.models import create_model


def perturbed_noise_map_student(perturb: float = 0.1) -> torch.nn.Module:
    """A tiny noise-map student (image + level channels) whose weights are randomly perturbed, so
    that its output depends on both its input channels (a fresh student is the identity)."""
    torch.manual_seed(0)
    model = create_model("student", widths=[4, 8], input_windows=[[-0.5, 1.5], [1.0, 8.0]], noise_map=True)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(perturb * torch.randn_like(parameter))
    return model
