import math

import pytest
import torch

from kdcli.interfaces import PRE_LOGITS, ModelOutput
from kdcli.methods.losses import SoftTargetLoss, kd_divergence, standardized
from kdcli.runtime.metrics import accuracy_counts

from ..conftest import ZERO, build_method

STUDENT = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
TEACHER = torch.tensor([[3.0, 2.0, 1.0], [0.0, 0.0, 2 * math.log(4.0)]])
LABELS = torch.tensor([0, 2])


def test_kd_divergence_matches_hand_computation() -> None:
    """Row 2 by hand: teacher at T=2 is softmax([0, 0, ln 4]) = (1/6, 1/6, 2/3), student uniform (1/3 each), so
    KL = 2·(1/6)·ln(1/2) + (2/3)·ln 2 = (1/3)·ln 2 and T²·KL = (4/3)·ln 2. Row 1: softmax([1.5, 1, 0.5]) against its
    mirror image, T²·KL = 1.2806266713192258 (computed with the math module)."""
    expected = (1.2806266713192258 + 4 / 3 * math.log(2.0)) / 2
    assert kd_divergence(TEACHER, STUDENT, 2.0).item() == pytest.approx(expected, rel=1e-6)


def test_vanilla_loss_golden_value() -> None:
    """γ·CE + α·T²·KL with γ=0.1, α=0.9, T=2: CE row 1 = −log softmax([1,2,3])[0] = 2.40760596444438, row 2 = ln 3."""
    vanilla = build_method("vanilla", 3, temperature=2.0, ce_weight=0.1, kd_weight=0.9)
    losses = vanilla(ModelOutput(STUDENT), ModelOutput(TEACHER), LABELS, ZERO)
    assert losses["ce"].item() == pytest.approx(0.1 * (2.40760596444438 + math.log(3.0)) / 2, rel=1e-6)
    assert losses["kd"].item() == pytest.approx(0.9 * (1.2806266713192258 + 4 / 3 * math.log(2.0)) / 2, rel=1e-6)
    assert sum(losses.values()).item() == pytest.approx(1.1674812230852435, rel=1e-6)


def test_kd_term_is_zero_when_student_equals_teacher() -> None:
    loss = SoftTargetLoss(4.0, 0.0, 1.0)(TEACHER, TEACHER, LABELS)
    assert loss["kd"].item() == pytest.approx(0.0, abs=1e-7)


def test_accuracy_counts_caps_k_at_class_count() -> None:
    top1, top5 = accuracy_counts(STUDENT, LABELS, (1, 5))
    assert (top1.item(), top5.item()) == (0, 2)


def test_logit_standardization_golden_values() -> None:
    """Sun et al. 2024: z-score each row (sample std) before the softmax. Student [1, 2, 3] → [−1, 0, 1] and
    teacher [3, 1, 2] → [1, −1, 0] (mean 2, std 1 each); at T = 1 the KD term is KL(softmax(t') ‖ softmax(s')),
    computed here from the definition in plain Python."""
    student, teacher = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[3.0, 1.0, 2.0]])
    assert standardized(student)[0].tolist() == pytest.approx([-1.0, 0.0, 1.0], abs=1e-6)
    p_t = [math.exp(v) / sum(math.exp(u) for u in (1, -1, 0)) for v in (1, -1, 0)]
    p_s = [math.exp(v) / sum(math.exp(u) for u in (-1, 0, 1)) for v in (-1, 0, 1)]
    kl = sum(t * math.log(t / s) for t, s in zip(p_t, p_s, strict=True))
    assert float(kd_divergence(teacher, student, 1.0, standardize=True)) == pytest.approx(kl, rel=1e-5)
    # a shifted, rescaled student costs the same: only its shape counts
    same = kd_divergence(teacher, 5 * student + 3, 1.0, standardize=True)
    assert float(same) == pytest.approx(kl, rel=1e-5)
    assert float(kd_divergence(teacher, 5 * student + 3, 1.0)) != pytest.approx(kl, rel=1e-2)  # without: it does not


@pytest.mark.parametrize("method", ["vanilla", "dkd", "pesf", "skd", "pea"])
def test_every_logit_method_takes_the_standardization_switch(method: str) -> None:
    """The switch reaches the KD term: a student shifted and scaled costs the same with it, not without."""
    teacher_width = 8 if method in ("pesf", "skd") else 0
    logits = torch.tensor([[1.0, 2.0, 0.5, -1.0], [0.0, -2.0, 1.0, 3.0]])
    teacher = ModelOutput(
        torch.tensor([[2.0, 1.0, 0.0, -1.0], [1.0, -1.0, 0.5, 2.0]]),
        {PRE_LOGITS: torch.randn(2, 8)} if teacher_width else {},
    )
    labels = torch.tensor([0, 3])
    on = build_method(method, 4, teacher_width, logit_standardization=True)
    kd = "tckd" if method == "dkd" else "kd"
    first = on(ModelOutput(logits), teacher, labels, ZERO)[kd]
    second = on(ModelOutput(3 * logits + 1), teacher, labels, ZERO)[kd]
    assert float(first.detach()) == pytest.approx(float(second.detach()), rel=1e-4)
