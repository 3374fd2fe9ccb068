"""No teacher: cross-entropy with the labels. ``kdcli train`` uses it for teachers and student-alone baselines."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from kdcli.catalog import SUPERVISED
from kdcli.interfaces import ModelOutput
from kdcli.methods.base import Method


class Supervised(Method):
    spec = SUPERVISED

    def forward(
        self, student: ModelOutput, teacher: ModelOutput | None, labels: Tensor, progress: Tensor
    ) -> dict[str, Tensor]:
        return {"ce": F.cross_entropy(student.logits.float(), labels)}
