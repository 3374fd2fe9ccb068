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

A method is described once, by a ``kdcli.catalog.MethodSpec`` (name, summary, options model, ``needs_teacher``,
where the class lives); the class declares ``spec = THAT_SPEC`` and reads ``name``, ``summary``, ``Options`` and
``needs_teacher`` from it. The spec is registered through the entry-point group ``kdcli.methods`` (kdcli.catalog).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar, Generic, NoReturn, TypeVar

import torch
from torch import Tensor, nn

from kdcli.catalog import MethodOptions, MethodSpec
from kdcli.interfaces import FeatureRequest, MethodContext, ModelOutput, ParamGroup, PreStage, StudentTransform
from kdcli.methods.losses import entropy

T = TypeVar("T")


class _FromSpec(Generic[T]):
    """A fact of a method read from its ``spec``, on the class and on an instance alike; it cannot be set."""

    def __init__(self, read: Callable[[MethodSpec], T]) -> None:
        self.read = read

    def __set_name__(self, owner: type, attribute: str) -> None:
        self.attribute = attribute

    def __get__(self, instance: object, owner: type[Method]) -> T:
        return self.read(owner.spec)

    def __set__(self, instance: object, value: object) -> NoReturn:
        raise AttributeError(f"a method's {self.attribute} is read from its spec (kdcli.catalog.MethodSpec)")


class Method(nn.Module):
    """Base class of distillation methods: declare ``spec`` (a ``kdcli.catalog.MethodSpec``), implement ``forward``.

    ``name``, ``summary``, ``Options`` (the options model) and ``needs_teacher`` are read from ``spec``.
    """

    spec: ClassVar[MethodSpec]
    name = _FromSpec(lambda spec: spec.name)
    summary = _FromSpec(lambda spec: spec.summary)
    Options = _FromSpec(lambda spec: spec.options)
    needs_teacher = _FromSpec(lambda spec: spec.needs_teacher)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        restated = [attribute for attribute in vars(cls) if isinstance(vars(Method).get(attribute), _FromSpec)]
        if restated:
            raise TypeError(
                f"{cls.__qualname__} sets {', '.join(restated)}, which a method now reads from its spec: replace them "
                f'with spec = MethodSpec(name, summary, Options, "{cls.__module__}:{cls.__qualname__}") from '
                "kdcli.catalog (docs/plugins.md)"
            )
        if "spec" in vars(cls) and not isinstance(cls.spec, MethodSpec):
            raise TypeError(f"{cls.__qualname__}.spec is not a kdcli.catalog.MethodSpec")

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
        toward uniform shows here, and the engine warns when it does (kdcli.training.validation.target_guard).
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

    def parameter_groups(self) -> list[ParamGroup]:
        """Optimizer groups for the method's own trainable parts: by default one group of every trainable parameter,
        without weight decay, at the student's rate (none when there is nothing to train)."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [ParamGroup(name=self.name, params=params)] if params else []

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
