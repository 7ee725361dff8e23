"""Knowledge distillation: the student matches the teacher's output (L1) and, optionally,
its encoder features through 1x1 conv adapters (student channels -> teacher channels,
matched by resolution level)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
import torch.nn.functional as F


@dataclass
class DistillConfig:
    """Distillation weights (plain data); added to the reconstruction loss."""

    output_kd: float = 1.0
    feature_kd: float = 0.0  # > 0 enables feature KD through 1x1 adapters
    # The teacher's output averaged over this many flips/transposes of the input, each undone
    # (self-ensemble; 1, 2, 4 or 8, see ENSEMBLE_TRANSFORMS): its errors that are not
    # flip-equivariant cancel, so the KD target is better than one pass. Output KD only.
    teacher_ensemble: int = 1

    def __post_init__(self) -> None:
        check_ensemble_size(self.teacher_ensemble, "distill.teacher_ensemble")
        if self.teacher_ensemble > 1 and self.feature_kd > 0:
            raise ValueError("teacher_ensemble > 1 averages outputs only; it cannot be combined with feature_kd")


# (transpose, flip columns, flip rows): identity, then the flips, then the same after a transpose.
ENSEMBLE_TRANSFORMS = [(t, h, v) for t in (False, True) for h, v in ((False, False), (False, True), (True, False),
                                                                     (True, True))]
# The sizes that are groups: {identity, a flip}, the four flips, all eight flips/rotations.
ENSEMBLE_SIZES = (1, 2, 4, 8)


def check_ensemble_size(size: object, name: str) -> None:
    """ValueError naming ``name`` unless ``size`` is one of ENSEMBLE_SIZES."""
    if size not in ENSEMBLE_SIZES:
        raise ValueError(f"{name} must be one of {ENSEMBLE_SIZES}, got {size!r}")


def _transformed(x: torch.Tensor, transform: tuple[bool, bool, bool], inverse: bool = False) -> torch.Tensor:
    transpose, flip_cols, flip_rows = transform
    dims = [d for d, on in ((-1, flip_cols), (-2, flip_rows)) if on]
    if transpose and not inverse:
        x = x.transpose(-1, -2)
    x = torch.flip(x, dims) if dims else x
    return x.transpose(-1, -2) if transpose and inverse else x


def ensembled_output(model: nn.Module, x: torch.Tensor, size: int) -> torch.Tensor:
    """``model``'s output averaged over the first ``size`` of ENSEMBLE_TRANSFORMS of ``x``, each
    transform undone on its output (size 1: one plain pass). Flips act on every channel alike,
    so a constant noise-map channel is unchanged."""
    check_ensemble_size(size, "ensemble size")
    total = None
    for transform in ENSEMBLE_TRANSFORMS[:size]:
        out = _transformed(model(_transformed(x, transform)), transform, inverse=True)
        total = out if total is None else total + out
    return total / size


class FeatureAdapters(nn.Module):
    """One 1x1 conv per shared resolution level, mapping student features to teacher widths."""

    def __init__(self, student_widths: list[int], teacher_widths: list[int]) -> None:
        super().__init__()
        levels = min(len(student_widths), len(teacher_widths))
        self.adapters = nn.ModuleList(nn.Conv2d(student_widths[i], teacher_widths[i], 1) for i in range(levels))

    def forward(self, student_feats: list[torch.Tensor], teacher_feats: list[torch.Tensor]) -> torch.Tensor:
        losses = [
            F.mse_loss(adapter(s.float()), t.float())
            for adapter, s, t in zip(self.adapters, student_feats, teacher_feats)
        ]
        return torch.stack(losses).mean()


class DistillLoss(nn.Module):
    """Output KD (L1 to the teacher's output) plus optional feature KD."""

    def __init__(self, cfg: DistillConfig, student: nn.Module, teacher: nn.Module) -> None:
        super().__init__()
        self.cfg = cfg
        self.adapters = FeatureAdapters(student.widths, teacher.widths) if cfg.feature_kd > 0 else None

    def forward(
        self, student_out: torch.Tensor, student_aux: dict, teacher_out: torch.Tensor, teacher_aux: dict
    ) -> tuple[torch.Tensor, dict[str, float]]:
        kd = F.l1_loss(student_out.float(), teacher_out.float())
        total = self.cfg.output_kd * kd
        parts = {"kd_out": kd.item()}
        if self.adapters is not None:
            feat = self.adapters(student_aux["features"], teacher_aux["features"])
            total = total + self.cfg.feature_kd * feat
            parts["kd_feat"] = feat.item()
        return total, parts
