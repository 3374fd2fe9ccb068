"""Vanilla knowledge distillation (Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network", 2015)."""

from __future__ import annotations

from torch import Tensor

from kdcli.catalog import VANILLA, MethodOptions, VanillaOptions
from kdcli.interfaces import MethodContext, ModelOutput
from kdcli.methods.knowledge import ControlTargetMethod
from kdcli.methods.losses import SoftTargetLoss


class Vanilla(ControlTargetMethod):
    """``L = γ·CE(z_s, y) + α·T²·KL(softmax(z_t/T) ‖ softmax(z_s/T))``; no trainable parts of its own.

    With ``target`` other than ``full`` the student learns from a control teacher instead (Tang et al. 2020,
    kdcli.methods.knowledge): the same loss toward a target that keeps only part of the teacher's knowledge.
    """

    spec = VANILLA
    options: VanillaOptions

    def __init__(self, options: MethodOptions, context: MethodContext) -> None:
        super().__init__(options, context)
        options = self.options
        self.loss = SoftTargetLoss(
            options.temperature, options.ce_weight, options.kd_weight, options.logit_standardization
        )

    def forward(
        self, student: ModelOutput, teacher: ModelOutput | None, labels: Tensor, progress: Tensor
    ) -> dict[str, Tensor]:
        assert teacher is not None
        return self.loss(student.logits, self.teacher_targets(teacher, labels), labels)
