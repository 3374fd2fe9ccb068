"""The method interface, kept as small as mdistiller's ``Distiller`` (docs/plugins.md has a worked example).

A method is an ``nn.Module`` that holds only its own trainable parts (an adapter, a simplifier, a regressor); the
student and the frozen teacher stay outside it, so the engine can wrap exactly the trainable parts for DDP and export
only the student. One training step is::

    teacher = frozen_teacher(images)           # ModelOutput: logits + requested features; no autograd
    student = student_model(images)            # ModelOutput: logits + requested features
    losses = method(student, teacher, labels, progress)   # named, already weighted terms
    loss = sum(losses.values())

**The contract of ``forward``.** It is compiled with ``torch.compile`` and, on CUDA, captured once in a CUDA graph
and replayed, so it must be pure tensor code:

- no host reads: no ``.item()``, ``.tolist()``, ``float(tensor)``, ``print`` of a tensor, no branch on a tensor's
  value, no data-dependent shapes;
- no Python state that changes between steps: a counter kept on ``self`` is frozen into the compiled graph after the
  first step. Anything that moves with training reads ``progress``, a 0-dim float tensor on the device that holds the
  epochs done so far (fractional: 2.5 is half-way through the third epoch), updated in place by the engine;
- the same input shapes give the same output shapes; every returned loss is a 0-dim tensor, already weighted.

The hooks around that step, each with a default that does nothing:

- ``student_features`` / ``teacher_features``: the features the method needs (stage indices of the model's
  ``feature_info``, module names, or ``PRE_LOGITS``); the engine delivers them in ``ModelOutput.features``;
- ``teacher_targets``: a teacher-side transform (an adapter, a simplifier) mapping the teacher's output to the logits
  the student learns from; it also feeds the diagnostics and the engine's target guard;
- ``student_transform``: a registered transform of the student's structure (shared layers, say), recorded in the
  model file so that ``kdcli eval`` rebuilds it;
- ``pre_stages``: stages the engine runs before the main epochs with its own training step;
- ``parameter_groups``: optimizer groups of the method's own parts (a learning-rate ratio, weight decay, a frozen
  warm-up);
- ``report`` / ``report_sections``: what the method learned about the run, for report.json and report.md.

Methods are registered through the entry-point group ``kdcli.methods`` (kdcli.catalog).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from kdcli.catalog import MethodOptions
from kdcli.interfaces import FeatureRequest, MethodContext, ModelOutput, PreStage, StudentTransform
from kdcli.methods.losses import entropy


class Method(nn.Module):
    """Base class of distillation methods: set ``name``, ``summary`` and ``Options``, implement ``forward``."""

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    Options: ClassVar[type[MethodOptions]] = MethodOptions
    needs_teacher: ClassVar[bool] = True

    def __init__(self, options: MethodOptions, context: MethodContext) -> None:
        super().__init__()
        self.options = options
        self.context = context
        self.num_classes = context.num_classes
        self.student_features: tuple[FeatureRequest, ...] = ()
        self.teacher_features: tuple[FeatureRequest, ...] = ()
        self._report: dict[str, Any] = {}

    def forward(
        self, student: ModelOutput, teacher: ModelOutput | None, labels: Tensor, progress: Tensor
    ) -> dict[str, Tensor]:
        raise NotImplementedError

    def teacher_targets(self, teacher: ModelOutput, labels: Tensor) -> Tensor:
        """The logits the student learns from; the raw teacher logits unless a method transforms them."""
        return teacher.logits

    def diagnostics(self, student: ModelOutput, teacher: ModelOutput, labels: Tensor) -> dict[str, Tensor]:
        """Per-example values the engine averages over the evaluation split after each epoch.

        At the method's temperature T: entropies of the teacher, of the target the student learns from (the
        transformed teacher) and of the student, and the target's entropy over its maximum, ``H_T / ln C``; the
        target's top-1; sharpness ``logsumexp(z/T)`` of each, and the gaps ``target − student`` and
        ``teacher − student`` (PESF's measure of the capacity mismatch). A target collapsing toward the student or
        toward uniform shows here, and the engine warns when it does (kdcli.training.evaluation.target_guard).
        """
        temperature = float(getattr(self.options, "temperature", 1.0))
        target = self.teacher_targets(teacher, labels).float()
        logits = {"teacher": teacher.logits, "target": target, "student": student.logits}
        sharpness = {name: torch.logsumexp(z.float() / temperature, dim=1) for name, z in logits.items()}
        target_entropy = entropy(target, temperature)
        return {
            "target_top1": 100.0 * target.argmax(1).eq(labels).float(),
            "teacher_entropy": entropy(teacher.logits, temperature),
            "target_entropy": target_entropy,
            "target_normalized_entropy": target_entropy / math.log(self.num_classes),
            "student_entropy": entropy(student.logits, temperature),
            "sharpness_gap": sharpness["target"] - sharpness["student"],
            "teacher_sharpness_gap": sharpness["teacher"] - sharpness["student"],
        }

    def student_transform(self) -> StudentTransform | None:
        """A registered transform to apply to the student before training (none by default)."""
        return None

    def pre_stages(self) -> list[PreStage]:
        """Stages the engine runs before the main epochs, once, at the start of a fresh run (none by default)."""
        return []

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Optimizer groups for the method's own trainable parts (none by default).

        Besides torch's keys a group may carry ``lr_ratio`` (its learning rate as a fraction of the student's; 1 by
        default) and ``frozen_epochs`` (epochs at the start during which its learning rate is 0); the engine applies
        both, and the run's schedule, to the group.
        """
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"params": params, "weight_decay": 0.0, "name": self.name}] if params else []

    def extra_parameter_count(self) -> int:
        """Parameters training adds on top of the student (zero at deployment: only the student is exported)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def record(self, key: str, value: Any) -> None:
        """Keep a finding for report.json (the engine records each pre-stage's summary under its name)."""
        self._report[key] = value

    def report(self) -> dict[str, Any]:
        """What the method learned about the run, for report.json (kept across a resume)."""
        return dict(self._report)

    def restore_report(self, report: dict[str, Any]) -> None:
        self._report = dict(report)

    def report_sections(self) -> list[str]:
        """Markdown lines the method adds to report.md (none by default)."""
        return []
