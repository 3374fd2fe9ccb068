"""DIST: Knowledge Distillation from a Stronger Teacher (Huang, You, Wang, Qian and Xu, NeurIPS 2022, arXiv
2205.10536).

KL divergence asks the student to match the teacher's probabilities exactly; DIST asks only that they be *related*:
a Pearson correlation of 1 is reached by any positive linear map of the teacher's probabilities. With
``P = softmax(z/τ)`` over a batch (rows examples, columns classes):

    L = w_ce·CE(z_s, y) + β·τ²·(1 − mean_i ρ(P_s[i, :], P_t[i, :])) + γ·τ²·(1 − mean_j ρ(P_s[:, j], P_t[:, j]))

the inter-class relation (each example's ranking of the classes) and the intra-class relation (each class's
ranking of the examples in the batch). ``ρ`` is the Pearson correlation: the cosine of the centred vectors, with
1e-8 added to the product of their norms, as in the paper's code. Defaults are the paper's CIFAR-100 ones (β = γ = 2,
τ = 4, CE weight 1). The intra-class term depends on the batch: under torchrun kdcli computes it per process, as the
paper's code does per GPU.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from kdcli.catalog import DIST, DistOptions
from kdcli.interfaces import ModelOutput
from kdcli.methods.base import Method

EPS = 1e-8


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """The Pearson correlation of each row of ``a`` with the same row of ``b``."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + EPS)


def dist_terms(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """``(inter, intra)``: τ²·(1 − mean correlation) over examples, and over classes; in float32."""
    p_s = F.softmax(student_logits.float() / temperature, dim=1)
    p_t = F.softmax(teacher_logits.float() / temperature, dim=1)
    scale = temperature**2
    inter = scale * (1 - pearson(p_s, p_t).mean())
    intra = scale * (1 - pearson(p_s.T, p_t.T).mean())
    return inter, intra


class Dist(Method):
    """``w_ce·CE + β·inter + γ·intra``; no trainable parts of its own."""

    spec = DIST
    options: DistOptions

    def forward(
        self, student: ModelOutput, teacher: ModelOutput | None, labels: Tensor, progress: Tensor
    ) -> dict[str, Tensor]:
        assert teacher is not None
        options = self.options
        inter, intra = dist_terms(student.logits, teacher.logits, options.temperature)
        return {
            "ce": options.ce_weight * F.cross_entropy(student.logits.float(), labels),
            "inter": options.beta * inter,
            "intra": options.gamma * intra,
        }
