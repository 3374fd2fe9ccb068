"""The types kdcli's layers pass to each other: what a model gives a method, what a method is told about the models,
the pre-stages and student transforms a method asks the engine for, and the reporter that receives progress.

A leaf module: it imports nothing of kdcli's and no torch at run time (tensors appear in annotations only), so every
layer can use it, the command line included, without a cost at start-up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor
    from torch.nn import Parameter

    from kdcli.records import EpochRecord

PRE_LOGITS = "pre_logits"
"""The feature request for a model's pooled pre-logit features (timm's ``forward_head(x, pre_logits=True)``)."""

FeatureRequest = int | str
"""A feature a method asks of a model: a stage index of its ``feature_info`` (``0`` the first, ``-1`` the last), a
module name (``"layer2.0"``: that module's output, through a forward hook), or ``PRE_LOGITS``. The engine fulfils it
through timm's ``forward_intermediates`` where a model has it; ``ModelOutput.features`` holds it under ``str(request)``.
"""


@dataclass
class ModelOutput:
    """What a model gives a method for one batch: its logits and the features the method asked for."""

    logits: Tensor
    features: dict[str, Tensor] = field(default_factory=dict)

    def feature(self, request: FeatureRequest) -> Tensor:
        return self.features[str(request)]


@dataclass(frozen=True)
class StageInfo:
    """One stage of a model, as timm's ``feature_info`` describes it."""

    channels: int
    reduction: int
    module: str


@dataclass(frozen=True)
class ModelInfo:
    """What a method may know of a model before training, to size its own parts (a projector, a regressor)."""

    arch: str
    num_features: int
    """Width of the pooled pre-logit features."""
    stages: tuple[StageInfo, ...] = ()


@dataclass(frozen=True)
class MethodContext:
    """What a method is built with, besides its options."""

    num_classes: int
    student: ModelInfo
    teacher: ModelInfo | None
    epochs: int


@dataclass(frozen=True, kw_only=True)
class ParamGroup:
    """An optimizer group of a method's own trainable parts (``Method.parameter_groups``). The engine gives it the
    run's optimizer and schedule at ``lr_ratio`` × the student's rate, with a rate of 0 during the first
    ``frozen_epochs`` (a transform kept still while the student is random)."""

    name: str
    params: list[Parameter]
    weight_decay: float = 0.0
    lr_ratio: float = 1.0
    frozen_epochs: float = 0.0


@dataclass(frozen=True)
class StudentTransform:
    """A change to the student's structure by a registered transform (entry-point group ``kdcli.student_transforms``):
    applied before training, recorded in the model file, and applied again by ``kdcli eval``/``kdcli.load_model``
    before the weights are loaded."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Relabeling:
    """What a relabelling pre-stage computed: the new labels, a summary for report.json, and lines to show the user."""

    labels: Tensor
    summary: dict[str, Any]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RelabelStage:
    """A pre-stage the engine runs before the main epochs, with its own training step (Pea-KD's PTP is one): the
    teacher predicts one augmented view of each training image, ``relabel(teacher_logits, labels)`` turns that into
    ``num_classes`` new labels, and the student learns them for ``epochs`` epochs with a temporary head, which is then
    replaced by a fresh classifier. It runs once, before the first checkpoint (a resumed run does not repeat it)."""

    name: str
    epochs: int
    num_classes: int
    relabel: Callable[[Tensor, Tensor], Relabeling]


@dataclass(frozen=True)
class TeacherPass:
    """A pre-stage the engine runs before the main epochs: the teacher predicts every training image once (clean,
    in order), and ``use(teacher_logits, labels)`` keeps what the method needs (a control's class statistics) and
    returns a summary for report.json. It runs once, before the first checkpoint; what it keeps must live in the
    method's buffers, so that a resumed run has it."""

    name: str
    use: Callable[[Tensor, Tensor], dict[str, Any]]


PreStage = RelabelStage | TeacherPass


class Reporter:
    """Receives progress; every method is a no-op here. The command line shows it with rich on stderr; the Python API
    is silent unless given one."""

    def note(self, message: str) -> None:
        """A one-line remark for the user (a warning, the teacher check); options it names are references
        (kdcli.errors.option), for the reporter to spell (``kdcli.errors.spell``)."""

    def begin(self, description: str, steps: int) -> None:
        """A task of ``steps`` steps starts (``advance`` marks each); the command line shows a progress bar."""

    def status(self, description: str, done: int, total: int) -> None:
        """A long task's state: ``done`` of ``total`` (the runs of a sweep), and what is under way."""

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None: ...

    def advance(self) -> None: ...

    def end_epoch(self, record: EpochRecord) -> None: ...

    def close(self) -> None: ...
