"""Logit losses shared by the methods. Each returns named, already weighted terms; the engine sums them."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def standardized(logits: Tensor) -> Tensor:
    """Each row z-scored, ``(z − mean z) / (std z + 1e-7)`` with the sample standard deviation, in float32: logit
    standardization (Sun, Ren, Li, Wang and Cao, "Logit Standardization in Knowledge Distillation", CVPR 2024, as its
    released code computes it). The student then matches the teacher's logits up to a shift and a scale."""
    z = logits.float()
    return (z - z.mean(dim=1, keepdim=True)) / (z.std(dim=1, keepdim=True) + 1e-7)


def kd_divergence(
    target_logits: Tensor, student_logits: Tensor, temperature: float, standardize: bool = False
) -> Tensor:
    """``T² · KL(softmax(target/T) ‖ softmax(student/T))``, averaged over the batch (Hinton et al. 2015); with
    ``standardize`` both logit vectors are z-scored first (``standardized``).

    The T² factor keeps the gradient scale of the soft term independent of T. Computed in float32 so that bf16
    autocast does not round the log-probabilities.
    """
    if standardize:
        target_logits, student_logits = standardized(target_logits), standardized(student_logits)
    log_p_target = F.log_softmax(target_logits.float() / temperature, dim=1)
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    return F.kl_div(log_p_student, log_p_target, reduction="batchmean", log_target=True) * temperature**2


class SoftTargetLoss(nn.Module):
    """``γ·CE(z_s, y) + α·KL_T(target, z_s)``: Hinton KD when the target is the teacher's logits.

    The target can be any teacher-side logits (raw, adapted, simplified), which is what lets a teacher
    transform and this loss be combined freely.
    """

    def __init__(self, temperature: float, ce_weight: float, kd_weight: float, standardize: bool = False) -> None:
        super().__init__()
        self.temperature = temperature
        self.ce_weight = ce_weight
        self.kd_weight = kd_weight
        self.standardize = standardize

    def forward(self, student_logits: Tensor, target_logits: Tensor, labels: Tensor) -> dict[str, Tensor]:
        return {
            "ce": self.ce_weight * F.cross_entropy(student_logits.float(), labels),
            "kd": self.kd_weight * kd_divergence(target_logits, student_logits, self.temperature, self.standardize),
        }


def swap_true_class_on_top(logits: Tensor, labels: Tensor) -> Tensor:
    """Swap each row's largest logit with the true class's, so the true class is on top (PESF's released code).

    A permutation of each row: the multiset of values is unchanged, and gradients flow through the swap.
    """
    top = logits.argmax(dim=1)
    order = torch.arange(logits.shape[1], device=logits.device).expand_as(logits).clone()
    rows = torch.arange(logits.shape[0], device=logits.device)
    order[rows, labels] = top
    order[rows, top] = labels
    return logits.gather(1, order)


def entropy(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Per-row entropy (nats) of ``softmax(logits / T)``."""
    log_p = F.log_softmax(logits.float() / temperature, dim=1)
    return -(log_p.exp() * log_p).sum(dim=1)


__all__ = ["SoftTargetLoss", "entropy", "kd_divergence", "standardized", "swap_true_class_on_top"]
