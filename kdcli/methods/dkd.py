"""DKD: Decoupled Knowledge Distillation (Zhao, Cui, Song, Qiu and Liang, CVPR 2022, arXiv 2203.08679).

Classical KD's loss splits into a target-class term (TCKD: the binary distribution "true class or not") and a
non-target-class term (NCKD: the distribution over the wrong classes), the latter weighted in KD by the teacher's
confidence in the wrong classes, which suppresses it exactly where the teacher is sure. DKD weights the two freely:

    L = w_ce·CE(z_s, y) + min(epoch / warmup, 1) · (α·TCKD + β·NCKD)

with ``TCKD = T²·KL(b_t ‖ b_s)``, ``b = (p_y, 1 − p_y)`` at temperature T, and ``NCKD = T²·KL(p̂_t ‖ p̂_s)`` over the
C − 1 wrong classes renormalized. Defaults are mdistiller's CIFAR-100 ones (CE 1, α 1, β 8, T 4, 20 warm-up epochs).

The warm-up reads the training progress tensor the engine passes to every method (epochs done, fractional, on the
device), so it moves inside a compiled step and a replayed CUDA graph; mdistiller's ``kwargs["epoch"]`` steps once per
epoch, here the ramp is per step. ``log(1 − p_y)`` is computed as a log-sum-exp over the wrong classes rather than
as ``log`` of a difference, which stays finite when the student is sure.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kdcli.catalog import DKD, DkdOptions
from kdcli.interfaces import ModelOutput
from kdcli.methods.knowledge import ControlTargetMethod
from kdcli.methods.losses import standardized

MASK = 1000.0
"""Subtracted from the true class's scaled logit to leave it out of the non-target distribution (mdistiller's)."""


def dkd_terms(
    student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, temperature: float, standardize: bool = False
) -> tuple[Tensor, Tensor]:
    """``(TCKD, NCKD)``, each ``T²·KL`` averaged over the batch, computed in float32; with ``standardize`` both
    logit vectors are z-scored first (Sun et al. 2024, kdcli.methods.losses.standardized)."""
    if standardize:
        student_logits, teacher_logits = standardized(student_logits), standardized(teacher_logits)
    true = F.one_hot(labels, student_logits.shape[1]).bool()
    log_s = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_t = F.log_softmax(teacher_logits.float() / temperature, dim=1)

    def binary(log_p: Tensor) -> Tensor:  # log (p_y, 1 − p_y)
        log_true = log_p.masked_fill(~true, -torch.inf).logsumexp(dim=1)
        log_rest = log_p.masked_fill(true, -torch.inf).logsumexp(dim=1)
        return torch.stack([log_true, log_rest], dim=1)

    scale = temperature**2 / labels.numel()
    tckd = F.kl_div(binary(log_s), binary(log_t), reduction="sum", log_target=True) * scale
    rest_s = F.log_softmax(student_logits.float() / temperature - MASK * true, dim=1)
    rest_t = F.log_softmax(teacher_logits.float() / temperature - MASK * true, dim=1)
    nckd = F.kl_div(rest_s, rest_t, reduction="sum", log_target=True) * scale
    return tckd, nckd


class Dkd(ControlTargetMethod):
    """``w_ce·CE + ramp·(α·TCKD + β·NCKD)``; no trainable parts of its own."""

    spec = DKD
    options: DkdOptions

    def forward(
        self, student: ModelOutput, teacher: ModelOutput | None, labels: Tensor, progress: Tensor
    ) -> dict[str, Tensor]:
        assert teacher is not None
        options = self.options
        target = self.teacher_targets(teacher, labels)
        tckd, nckd = dkd_terms(student.logits, target, labels, options.temperature, options.logit_standardization)
        ramp = (progress / options.warmup_epochs).clamp(max=1.0) if options.warmup_epochs > 0 else 1.0
        return {
            "ce": options.ce_weight * F.cross_entropy(student.logits.float(), labels),
            "tckd": ramp * options.alpha * tckd,
            "nckd": ramp * options.beta * nckd,
        }
