"""FitNets: Hints for Thin Deep Nets (Romero, Ballas, Kahou, Chassang, Gatta and Bengio, ICLR 2015, arXiv 1412.6550).

A hint — the output of one of the teacher's stages — guides the matching stage of the student through a regressor
that maps the student's features onto the teacher's shape:

    L = w_ce·CE(z_s, y) + w_hint·MSE(r(f_s), f_t)

The paper trains the hint first and the classifier afterwards; kdcli trains both together from the start, as
RepDistiller and mdistiller do on CIFAR, with mdistiller's defaults (hint stage 2, CE 1, hint 100). The regressor is
mdistiller's: a convolution chosen by the two stages' resolutions (stride 2 when the student's is twice the
teacher's, a transposed convolution for half, 1×1 when equal), then BatchNorm and ReLU. Only the student is
exported; the regressor is counted among the parameters training adds.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdcli.catalog import FITNET, FitnetOptions, MethodOptions
from kdcli.errors import UsageError
from kdcli.interfaces import MethodContext, ModelInfo, ModelOutput, StageInfo
from kdcli.methods.base import Method


def _stage(info: ModelInfo, index: int, role: str) -> StageInfo:
    if not -len(info.stages) <= index < len(info.stages):
        raise UsageError(
            f"fitnet: the {role} {info.arch!r} has {len(info.stages)} stages (feature_info), so there is no hint "
            f"stage {index}; set method.hint_stage between 0 and {len(info.stages) - 1}"
        )
    return info.stages[index]


class Regressor(nn.Sequential):
    """Maps a student stage (``channels``, stride ``reduction``) onto a teacher stage: conv, BatchNorm, ReLU."""

    def __init__(self, student: StageInfo, teacher: StageInfo) -> None:
        if student.reduction == teacher.reduction:
            conv: nn.Module = nn.Conv2d(student.channels, teacher.channels, kernel_size=1)
        elif teacher.reduction == 2 * student.reduction:
            conv = nn.Conv2d(student.channels, teacher.channels, kernel_size=3, stride=2, padding=1)
        elif student.reduction == 2 * teacher.reduction:
            conv = nn.ConvTranspose2d(student.channels, teacher.channels, kernel_size=4, stride=2, padding=1)
        else:
            raise UsageError(
                f"fitnet: the hint stages' strides differ by more than 2 (student {student.reduction}, teacher "
                f"{teacher.reduction}); choose another method.hint_stage"
            )
        super().__init__(conv, nn.BatchNorm2d(teacher.channels), nn.ReLU())


class Fitnet(Method):
    """``w_ce·CE(z_s, y) + w_hint·MSE(regressor(student stage), teacher stage)``."""

    spec = FITNET
    options: FitnetOptions

    def __init__(self, options: MethodOptions, context: MethodContext) -> None:
        super().__init__(options, context)
        if context.teacher is None:
            raise UsageError("fitnet needs a teacher")
        stage = self.options.hint_stage
        self.student_features = (stage,)
        self.teacher_features = (stage,)
        self.regressor = Regressor(_stage(context.student, stage, "student"), _stage(context.teacher, stage, "teacher"))

    def forward(
        self, student: ModelOutput, teacher: ModelOutput | None, labels: Tensor, progress: Tensor
    ) -> dict[str, Tensor]:
        assert teacher is not None
        stage = self.options.hint_stage
        hint = self.regressor(student.feature(stage))
        return {
            "ce": self.options.ce_weight * F.cross_entropy(student.logits.float(), labels),
            "hint": self.options.hint_weight * F.mse_loss(hint.float(), teacher.feature(stage).float()),
        }
