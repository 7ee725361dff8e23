"""Widen a trained student without changing what it computes (Net2Net-style, zero fan-out).

A student's level widths can only be chosen when it is created; a wider student trained from
scratch costs many CPU hours. Widening instead gives each level its extra channels with
randomly initialised *incoming* weights and zero *outgoing* weights: every existing channel
receives exactly what it did before, so the widened model starts as the same function and
training only has to learn what the new channels add (docs/TRAINING.md).
"""

from __future__ import annotations

import torch
from torch import nn

from trainer.models.registry import create_model
from trainer.models.student import Student, WindowedHead

IMAGE = -1  # marks an input segment that is the image (or the noise map): one channel, never widened


def _layout(model: Student) -> dict[str, tuple[list[int], int | None]]:
    """Each conv's input segments (levels concatenated along channels) and output level."""
    plan: dict[str, tuple[list[int], int | None]] = {}
    if isinstance(model.head, WindowedHead):
        for index in range(len(model.head.convs)):
            plan[f"head.convs.{index}"] = ([IMAGE], 0)
    else:
        plan["head.0"] = ([IMAGE], 0)
    if model.noise_conv is not None:
        plan["noise_conv"] = ([IMAGE], 0)
    for i in range(model.depth):
        plan[f"down.{i}.0.0"] = ([i], i + 1)
        plan[f"down.{i}.1.0"] = ([i + 1], i + 1)
        plan[f"up.{i}.0.0"] = ([i + 1], i)
        plan[f"fuse.{i}.0"] = ([i, i], i)
    if model.extra is not None:
        for level, blocks in enumerate(model.extra):
            for index in range(len(blocks)):
                plan[f"extra.{level}.{index}.0"] = ([level], level)
    plan["tail"] = ([0], None)
    return plan


def _copy_conv(old: nn.Conv2d | nn.ConvTranspose2d, new: nn.Conv2d | nn.ConvTranspose2d,
               segments: list[int], out_level: int | None, old_widths: list[int], new_widths: list[int]) -> None:
    """Copy ``old``'s weights into ``new``: old channels keep their weights, inputs from new
    channels get zero weight (so old outputs are unchanged), new outputs keep ``new``'s init."""
    def width(widths: list[int], level: int) -> int:  # channels of one input segment
        return 1 if level == IMAGE else widths[level]

    old_w, new_w = old.weight.data, new.weight.data
    transposed = isinstance(old, nn.ConvTranspose2d)  # weight is (in, out, k, k)
    in_dim, out_dim = (0, 1) if transposed else (1, 0)
    n_out = old_w.shape[out_dim] if out_level is None else old_widths[out_level]
    rows = new_w.narrow(out_dim, 0, n_out)  # the old output channels; new ones keep their random init
    old_start = new_start = 0
    for level in segments:
        n_old, n_new = width(old_widths, level), width(new_widths, level)
        rows.narrow(in_dim, new_start, n_old).copy_(old_w.narrow(in_dim, old_start, n_old))
        rows.narrow(in_dim, new_start + n_old, n_new - n_old).zero_()
        old_start, new_start = old_start + n_old, new_start + n_new
    if old.bias is not None:
        new.bias.data[:n_out] = old.bias.data


@torch.no_grad()
def widen_student(model: Student, widths: list[int]) -> Student:
    """A student with level widths ``widths`` (each >= the model's) computing the same function."""
    if not isinstance(model, Student):
        raise TypeError(f"only a student can be widened, not {type(model).__name__}")
    old_widths = list(model.widths)
    widths = [int(w) for w in widths]
    if widths != old_widths and not is_widening(old_widths, widths):
        raise ValueError(f"cannot widen a student with widths {old_widths} to {widths}: "
                         "same number of levels, none narrower")
    wider = create_model(model.model_name, **{**model.model_kwargs, "widths": widths})
    old_modules, new_modules = dict(model.named_modules()), dict(wider.named_modules())
    layout = _layout(model)
    # Fixed (untrained) weights, such as anti_alias's blurs, are built by the constructor at the new widths.
    uncovered = [name for name, weight in wider.named_parameters()
                 if weight.requires_grad and name.rsplit(".", 1)[0] not in layout]
    if uncovered:  # a layer added to Student but not to _layout would silently stay random
        raise RuntimeError(f"widen_student does not know how to widen {uncovered[:3]}")
    for name, (segments, out_level) in layout.items():
        _copy_conv(old_modules[name], new_modules[name], segments, out_level, old_widths, widths)
    return wider


def is_widening(old_widths: list[int] | None, new_widths: list[int] | None) -> bool:
    """Whether ``new_widths`` widens ``old_widths`` (same levels, none narrower, one wider)."""
    if old_widths is None or new_widths is None or len(old_widths) != len(new_widths):
        return False
    return all(n >= o for n, o in zip(new_widths, old_widths)) and list(new_widths) != list(old_widths)
