"""Vanilla KD toward a transformed teacher: the shared shape of pesf and skd.

The transform (``teacher_targets``) and the loss (``SoftTargetLoss``) are separate pieces: a method that only
reshapes the teacher's output supplies the transform, and any logit loss can consume its targets.

How fast the transform may move is what decides whether such a method helps or hurts. Its only unlabelled
gradient, the KL term, pulls the target toward the student (the minimum of that term alone is "copy the
student"); at the student's learning rate, without weight decay and without a label-carrying term, the target
collapses within an epoch (measured: docs/results.md). So, kdcli's defaults (docs/methods.md):

- the CE anchor ``λ·CE(g(teacher), y)`` is on (λ = 1);
- the transform learns at ``transform_lr_ratio`` × the student's rate — a ratio, so it follows the batch scaling
  (``optim.lr_batch_size``) and the schedule — with its own ``transform_weight_decay``;
- ``transform_warmup_epochs`` keeps it frozen (learning rate 0) while the student is still near random.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import Tensor

from kdcli.strategies.base import TeacherOutput
from kdcli.strategies.vanilla import Vanilla, VanillaOptions


class TransformedTeacherOptions(VanillaOptions):
    anchor_weight: float = Field(
        1.0, ge=0.0, description="λ, weight of CE(transformed teacher, labels); kdcli's default, 0 is the literal paper"
    )
    transform_lr_ratio: float = Field(
        0.01, gt=0.0, description="the transform's learning rate as a fraction of the student's (schedule included)"
    )
    transform_weight_decay: float = Field(5e-4, ge=0.0, description="weight decay of the transform's parameters")
    transform_warmup_epochs: float = Field(
        0.0, ge=0.0, description="epochs the transform stays frozen at the start (the student is still random)"
    )
    transform_lr: None = Field(None, exclude=True, description="removed in 0.2.0: use transform_lr_ratio")

    @field_validator("transform_lr", mode="before")
    @classmethod
    def _transform_lr_was_removed(cls, value: object) -> None:
        if value is not None:
            raise ValueError(
                "transform_lr (an absolute rate) was removed in 0.2.0; set method.transform_lr_ratio, the transform's "
                "rate as a fraction of the student's (the released PESF code's 2e-5 against lr 0.05 is 4e-4)"
            )
        return None


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
        options = self.options
        return [
            {**group, "lr_ratio": options.transform_lr_ratio, "weight_decay": options.transform_weight_decay,
             "frozen_epochs": options.transform_warmup_epochs}
            for group in super().parameter_groups()
        ]  # fmt: skip
