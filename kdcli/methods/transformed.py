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

from dataclasses import replace

import torch.nn.functional as F
from torch import Tensor

from kdcli.catalog import TransformedTeacherOptions
from kdcli.interfaces import ModelOutput, ParamGroup
from kdcli.methods.vanilla import Vanilla


class TransformedTeacherKD(Vanilla):
    """``γ·CE(z_s, y) + α·KL_T(g(teacher), z_s) + λ·CE(g(teacher), y)`` for a trainable teacher-side transform g.

    The KL term's gradient reaches both the student and g; the CE anchor keeps g's output accurate.
    """

    options: TransformedTeacherOptions

    def forward(
        self, student: ModelOutput, teacher: ModelOutput | None, labels: Tensor, progress: Tensor
    ) -> dict[str, Tensor]:
        assert teacher is not None
        target = self.teacher_targets(teacher, labels)
        losses = self.loss(student.logits, target, labels)
        if self.options.anchor_weight > 0:
            losses["anchor"] = self.options.anchor_weight * F.cross_entropy(target.float(), labels)
        return losses

    def parameter_groups(self) -> list[ParamGroup]:
        options = self.options
        return [
            replace(
                group,
                lr_ratio=options.transform_lr_ratio,
                weight_decay=options.transform_weight_decay,
                frozen_epochs=options.transform_warmup_epochs,
            )
            for group in super().parameter_groups()
        ]
