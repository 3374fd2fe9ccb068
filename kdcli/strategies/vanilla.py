"""Vanilla knowledge distillation (Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network", 2015)."""

from __future__ import annotations

from pydantic import Field
from torch import Tensor

from kdcli.losses import SoftTargetLoss
from kdcli.strategies.base import Strategy, StrategyOptions, TeacherOutput


class VanillaOptions(StrategyOptions):
    """Defaults are the CIFAR-100 recipe of RepDistiller / the CRD paper: T=4, γ=0.1, α=0.9."""

    temperature: float = Field(4.0, gt=0.0)
    ce_weight: float = Field(0.1, ge=0.0, description="γ, weight of the cross-entropy with the labels")
    kd_weight: float = Field(0.9, ge=0.0, description="α, weight of T²·KL(teacher ‖ student)")


class Vanilla(Strategy):
    """``L = γ·CE(z_s, y) + α·T²·KL(softmax(z_t/T) ‖ softmax(z_s/T))``; no trainable parts of its own."""

    name = "vanilla"
    summary = "Hinton et al. 2015: cross-entropy plus T²-scaled KL to the teacher's softened logits"
    Options = VanillaOptions

    def __init__(self, options: StrategyOptions, num_classes: int, teacher_features: int | None = None) -> None:
        super().__init__(options, num_classes, teacher_features)
        assert isinstance(options, VanillaOptions)
        self.loss = SoftTargetLoss(options.temperature, options.ce_weight, options.kd_weight)

    def forward(self, student_logits: Tensor, teacher: TeacherOutput | None, labels: Tensor) -> dict[str, Tensor]:
        assert teacher is not None
        return self.loss(student_logits, self.teacher_targets(teacher, labels), labels)
