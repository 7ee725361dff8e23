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
