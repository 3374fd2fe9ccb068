"""The strategy plugin interface, kept as small as mdistiller's ``Distiller``.

A strategy is an ``nn.Module`` that holds only its own trainable parts (an adapter, a simplifier); the
student and the frozen teacher stay outside it, so the engine can wrap exactly the trainable parts for DDP
and export only the student. One training step is::

    teacher_out = teacher(images)                 # frozen, no autograd
    student_logits = student(images)
    losses = strategy(student_logits, teacher_out, labels)   # named, weighted terms
    loss = sum(losses.values())

Three optional hooks cover what methods add around that step, each a no-op by default:

- ``teacher_targets``: a teacher-side transform (an adapter, a simplifier) mapping the teacher's output to the
  logits the student learns from; any logit loss can then use them, because transform and loss stay separate;
- ``transform_student``: a change to the student before training (shared layers, say); the exported file is
  always the student module itself;
- ``pre_stage``: work before the main epochs (a pretraining stage), run once, before the first checkpointed epoch.

Third-party packages add strategies through the entry-point group ``kdcli.strategies``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from kdcli.losses import entropy

if TYPE_CHECKING:
    from kdcli.engine import Reporter, Run


class StrategyOptions(BaseModel):
    """Base of a strategy's options (``method.*`` in the configuration); unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class TeacherOutput:
    """What the frozen teacher gives a strategy for one batch."""

    logits: Tensor
    features: Tensor | None = None
    """Pooled pre-logit features, present when the strategy sets ``needs_teacher_features``."""


class Strategy(nn.Module):
    """Base class of distillation strategies.

    Subclasses set ``name``, ``summary``, ``Options`` and implement ``forward``. ``needs_teacher_features``
    asks the engine for the teacher's pooled pre-logit features too (timm's ``forward_head(pre_logits=True)``).
    """

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    Options: ClassVar[type[StrategyOptions]] = StrategyOptions
    needs_teacher: ClassVar[bool] = True
    needs_teacher_features: ClassVar[bool] = False

    def __init__(self, options: StrategyOptions, num_classes: int, teacher_features: int | None = None) -> None:
        super().__init__()
        self.options = options
        self.num_classes = num_classes
        self._report: dict[str, Any] = {}

    def forward(self, student_logits: Tensor, teacher: TeacherOutput | None, labels: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def teacher_targets(self, teacher: TeacherOutput, labels: Tensor) -> Tensor:
        """The logits the student learns from; the raw teacher logits unless a method transforms them."""
        return teacher.logits

    def diagnostics(self, student_logits: Tensor, teacher: TeacherOutput, labels: Tensor) -> dict[str, Tensor]:
        """Per-example values the engine averages over the evaluation split after each epoch.

        At the strategy's temperature T: entropies of the teacher, of the target the student learns from (the
        transformed teacher) and of the student, and the target's entropy over its maximum, ``H_T / ln C``; the
        target's top-1; sharpness ``logsumexp(z/T)`` of each, and the gaps ``target − student`` and
        ``teacher − student`` (PESF's measure of the capacity mismatch). A target collapsing toward the student or
        toward uniform shows here, and the engine warns when it does (``kdcli.engine.target_guard``).
        """
        temperature = float(getattr(self.options, "temperature", 1.0))
        target = self.teacher_targets(teacher, labels).float()
        logits = {"teacher": teacher.logits, "target": target, "student": student_logits}
        sharpness = {name: torch.logsumexp(z.float() / temperature, dim=1) for name, z in logits.items()}
        return {
            "target_top1": 100.0 * target.argmax(1).eq(labels).float(),
            "teacher_entropy": entropy(teacher.logits, temperature),
            "target_entropy": entropy(target, temperature),
            "target_normalized_entropy": entropy(target, temperature) / math.log(self.num_classes),
            "student_entropy": entropy(student_logits, temperature),
            "sharpness_gap": sharpness["target"] - sharpness["student"],
            "teacher_sharpness_gap": sharpness["teacher"] - sharpness["student"],
        }

    def transform_student(self, student: nn.Module) -> nn.Module:
        """The student to train, built from the plain one (called once, before the optimizer is made)."""
        return student

    def pre_stage(self, run: Run, reporter: Reporter) -> None:
        """Work before the main epochs, run once at the start of a fresh run (not again on resume)."""

    def report(self) -> dict[str, Any]:
        """What the strategy learned about the run that belongs in report.json (kept across a resume)."""
        return dict(self._report)

    def restore_report(self, report: dict[str, Any]) -> None:
        self._report = dict(report)

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Optimizer groups for the strategy's own trainable parts (none by default).

        Besides torch's keys a group may carry ``lr_ratio`` (its learning rate as a fraction of the student's; 1 by
        default) and ``frozen_epochs`` (epochs at the start during which its learning rate is 0); the engine applies
        both, and the run's schedule, to the group.
        """
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"params": params, "weight_decay": 0.0, "name": self.name}] if params else []

    def extra_parameter_count(self) -> int:
        """Parameters training adds on top of the student (zero at deployment: only the student is exported)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
