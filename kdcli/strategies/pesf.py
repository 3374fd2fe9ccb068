"""PESF-KD: Parameter-Efficient and Student-Friendly Knowledge Distillation (Rao et al., arXiv 2205.15308).

The capacity mismatch between teacher and student shows as a sharpness gap between their output distributions.
A small trainable adapter on the frozen teacher's pre-logit features smooths the teacher's soft labels toward what
this student can fit; only the adapter is updated on the teacher side.

Choices where the paper is silent (docs/methods.md):
- the adapter is ``Linear(d→C)(f) + Linear(h→C)(ReLU(Linear(d→h)(f)))`` with h = 32, and the last layer of each
  branch starts at zero, so the adapted teacher starts equal to the teacher and the first step is vanilla KD's;
- the adapter has its own optimizer group (the student's learning rate unless ``transform_lr``), no weight decay,
  the same schedule.
The authors' released CIFAR code differs from the paper: the student learns from the raw teacher after a "swap
correction" that puts the true class on top, and the adapter learns toward the detached student. Both are options
(``swap_correction: true``, ``adapter_target: detached-student``); that code used T = 6 and adapter lr 2e-5.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from kdcli.errors import UsageError
from kdcli.losses import kd_divergence, swap_true_class_on_top
from kdcli.strategies.base import StrategyOptions, TeacherOutput
from kdcli.strategies.transformed import TransformedTeacherKD, TransformedTeacherOptions


class PesfOptions(TransformedTeacherOptions):
    anchor_weight: float = Field(1.0, ge=0.0, description="λ, weight of CE(adapted teacher, labels)")
    hidden: int = Field(32, ge=1, description="h, width of the adapter's bottleneck branch")
    swap_correction: bool = Field(False, description="put the true class on top of the student's target (code)")
    adapter_target: Literal["joint", "detached-student"] = Field(
        "joint", description="joint: the KL term trains student and adapter (paper); detached-student: as the code"
    )


class Adapter(nn.Module):
    """``A(f) = Linear(d→C)(f) + Linear(h→C)(ReLU(Linear(d→h)(f)))``, zero at the start."""

    def __init__(self, features: int, num_classes: int, hidden: int) -> None:
        super().__init__()
        self.linear = nn.Linear(features, num_classes)
        self.down = nn.Linear(features, hidden)
        self.up = nn.Linear(hidden, num_classes)
        for last in (self.linear, self.up):  # the last layer of each branch
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def forward(self, features: Tensor) -> Tensor:
        return self.linear(features) + self.up(F.relu(self.down(features)))


class Pesf(TransformedTeacherKD):
    """``z_a = z_t + A(f_t)``; ``L = γ·CE(z_s, y) + α·KL_T(z_a, z_s) + λ·CE(z_a, y)``."""

    name = "pesf"
    summary = "Rao et al. 2022: a small adapter on the frozen teacher makes its soft labels student-friendly"
    Options = PesfOptions
    options: PesfOptions
    needs_teacher_features = True

    def __init__(self, options: StrategyOptions, num_classes: int, teacher_features: int | None = None) -> None:
        super().__init__(options, num_classes, teacher_features)
        if teacher_features is None:
            raise UsageError("pesf needs the teacher's pre-logit features (timm's forward_head(pre_logits=True))")
        self.adapter = Adapter(teacher_features, num_classes, self.options.hidden)

    def adapted(self, teacher: TeacherOutput) -> Tensor:
        assert teacher.features is not None
        return teacher.logits.float() + self.adapter(teacher.features.float())

    def _student_target(self, teacher: TeacherOutput, adapted: Tensor, labels: Tensor) -> Tensor:
        target = adapted if self.options.adapter_target == "joint" else teacher.logits.float()
        return swap_true_class_on_top(target, labels) if self.options.swap_correction else target

    def teacher_targets(self, teacher: TeacherOutput, labels: Tensor) -> Tensor:
        return self._student_target(teacher, self.adapted(teacher), labels)

    def forward(self, student_logits: Tensor, teacher: TeacherOutput | None, labels: Tensor) -> dict[str, Tensor]:
        assert teacher is not None
        adapted = self.adapted(teacher)
        losses = self.loss(student_logits, self._student_target(teacher, adapted, labels), labels)
        if self.options.adapter_target == "detached-student":
            divergence = kd_divergence(adapted, student_logits.detach(), self.options.temperature)
            losses["adapter_kd"] = self.options.kd_weight * divergence
        if self.options.anchor_weight > 0:
            losses["anchor"] = self.options.anchor_weight * F.cross_entropy(adapted, labels)
        return losses

    def diagnostics(self, student_logits: Tensor, teacher: TeacherOutput, labels: Tensor) -> dict[str, Tensor]:
        values = super().diagnostics(student_logits, teacher, labels)
        if self.options.adapter_target == "joint" and not self.options.swap_correction:
            return values  # the target is the adapted teacher already
        adapted = self.adapted(teacher)
        return {**values, "adapted_top1": 100.0 * adapted.argmax(1).eq(labels).float()}
