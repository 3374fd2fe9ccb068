"""No teacher: cross-entropy with the labels. ``kdcli train`` uses it for teachers and student-alone baselines."""

from __future__ import annotations

from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor

from kdcli.catalog import SUPERVISED, SupervisedOptions
from kdcli.interfaces import ModelOutput
from kdcli.methods.base import Method


class Supervised(Method):
    name = SUPERVISED.name
    summary = SUPERVISED.summary
    Options = SupervisedOptions
    needs_teacher: ClassVar[bool] = False

    def forward(
        self, student: ModelOutput, teacher: ModelOutput | None, labels: Tensor, progress: Tensor
    ) -> dict[str, Tensor]:
        return {"ce": F.cross_entropy(student.logits.float(), labels)}
