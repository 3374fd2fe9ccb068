"""Vanilla KD toward a transformed teacher: the shared shape of pesf and skd.

The transform (``teacher_targets``) and the loss (``SoftTargetLoss``) are separate pieces: a method that only
reshapes the teacher's output supplies the transform, and any logit loss can consume its targets.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from kdcli.strategies.base import TeacherOutput
from kdcli.strategies.vanilla import Vanilla, VanillaOptions


class TransformedTeacherOptions(VanillaOptions):
    anchor_weight: float = Field(0.0, ge=0.0, description="λ, weight of CE(transformed teacher, labels)")
    transform_lr: float | None = Field(None, gt=0.0, description="learning rate of the transform; default: lr")


class TransformedTeacherKD(Vanilla):
    """``γ·CE(z_s, y) + α·KL_T(g(teacher), z_s) + λ·CE(g(teacher), y)`` for a trainable teacher-side transform g.

    The KL term's gradient reaches both the student and g; the CE anchor keeps g's output accurate.
    """

    Options = TransformedTeacherOptions
    options: TransformedTeacherOptions

    def forward(self, student_logits: Tensor, teacher: TeacherOutput | None, labels: Tensor) -> dict[str, Tensor]:
        assert teacher is not None
        target = self.teacher_targets(teacher, labels)
        losses = self.loss(student_logits, target, labels)
        if self.options.anchor_weight > 0:
            losses["anchor"] = self.options.anchor_weight * F.cross_entropy(target.float(), labels)
        return losses

    def parameter_groups(self) -> list[dict[str, Any]]:
        groups = super().parameter_groups()
        if self.options.transform_lr is not None:
            for group in groups:
                group["lr"] = self.options.transform_lr
        return groups
