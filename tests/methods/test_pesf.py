import math

import pytest
import torch

from kdcli.errors import UsageError
from kdcli.interfaces import PRE_LOGITS, ModelOutput
from kdcli.methods.losses import swap_true_class_on_top
from kdcli.methods.pesf import Pesf

from ..conftest import ZERO, build_method

FEATURES = torch.tensor([[0.5, 0.25]])
TEACHER = torch.tensor([[1.0, 0.0]])
STUDENT = torch.tensor([[0.0, 1.0]])
LABELS = torch.tensor([0])


def hand_set(**options: object) -> Pesf:
    """Adapter with h=1: linear = [[1,0],[0,0]], down = [[1,1]], up = [[0],[1]], zero biases, so that
    A(f) = (f₀, relu(f₀+f₁)) = (0.5, 0.75) and z_a = z_t + A(f) = (1.5, 0.75)."""
    pesf = build_method("pesf", 2, teacher_width=2, temperature=2.0, hidden=1, **options)
    assert isinstance(pesf, Pesf)
    with torch.no_grad():
        pesf.adapter.linear.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
        pesf.adapter.down.weight.copy_(torch.tensor([[1.0, 1.0]]))
        pesf.adapter.down.bias.zero_()
        pesf.adapter.up.weight.copy_(torch.tensor([[0.0], [1.0]]))
    return pesf


def test_joint_loss_golden_value() -> None:
    """T=2: KL_T((1.5, 0.75), (0, 1)) = 4·Σ p log(p/q) with p = softmax(0.75, 0.375), q = softmax(0, 0.5);
    ×0.9 = 0.34033318200027984. CE(z_s, 0) = log(1+e) ×0.1; anchor = CE((1.5, 0.75), 0) = log(1+e^-0.75)."""
    losses = hand_set()(ModelOutput(STUDENT), ModelOutput(TEACHER, {PRE_LOGITS: FEATURES}), LABELS, ZERO)
    assert losses["kd"].item() == pytest.approx(0.34033318200027984, rel=1e-6)
    assert losses["ce"].item() == pytest.approx(0.1 * math.log(1 + math.e), rel=1e-6)
    assert losses["anchor"].item() == pytest.approx(math.log(1 + math.exp(-0.75)), rel=1e-6)


def test_detached_student_mode_golden_value() -> None:
    """The student learns from the raw teacher (1, 0); the adapter's KL uses the same numbers as the joint KL."""
    pesf = hand_set(adapter_target="detached-student")
    student = STUDENT.clone().requires_grad_()
    losses = pesf(ModelOutput(student), ModelOutput(TEACHER, {PRE_LOGITS: FEATURES}), LABELS, ZERO)
    assert losses["kd"].item() == pytest.approx(0.44085359232667665, rel=1e-6)
    assert losses["adapter_kd"].item() == pytest.approx(0.34033318200027984, rel=1e-6)
    losses["adapter_kd"].backward()
    assert student.grad is None  # the adapter learns toward the detached student
    assert pesf.adapter.up.weight.grad is not None and pesf.adapter.up.weight.grad.abs().sum() > 0


def test_zero_started_adapter_gives_vanilla_kd_on_the_first_step() -> None:
    torch.manual_seed(0)
    student, teacher = torch.randn(8, 10), torch.randn(8, 10)
    features, labels = torch.randn(8, 16), torch.randint(0, 10, (8,))
    pesf = build_method("pesf", 10, teacher_width=16)
    vanilla = build_method("vanilla", 10)
    first = pesf(ModelOutput(student), ModelOutput(teacher, {PRE_LOGITS: features}), labels, ZERO)
    plain = vanilla(ModelOutput(student), ModelOutput(teacher), labels, ZERO)
    assert torch.equal(first["kd"], plain["kd"]) and torch.equal(first["ce"], plain["ce"])
    assert first["anchor"].item() == pytest.approx(torch.nn.functional.cross_entropy(teacher, labels).item())


def test_kl_gradient_reaches_student_and_adapter() -> None:
    pesf = hand_set(anchor_weight=0.0)
    student = STUDENT.clone().requires_grad_()
    pesf(ModelOutput(student), ModelOutput(TEACHER, {PRE_LOGITS: FEATURES}), LABELS, ZERO)["kd"].backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert all(
        p.grad is not None and p.grad.abs().sum() > 0 for p in (pesf.adapter.linear.weight, pesf.adapter.up.weight)
    )


def test_swap_correction_puts_true_class_on_top_and_keeps_the_values() -> None:
    logits = torch.tensor([[0.1, 3.0, -1.0, 2.0], [5.0, 1.0, 0.0, 2.0], [0.0, 1.0, 2.0, 9.0]])
    labels = torch.tensor([0, 0, 2])
    swapped = swap_true_class_on_top(logits, labels)
    assert swapped.argmax(1).tolist() == [0, 0, 2]
    assert torch.equal(swapped.sort(1).values, logits.sort(1).values)
    expected = torch.tensor([[3.0, 0.1, -1.0, 2.0], [5.0, 1.0, 0.0, 2.0], [0.0, 1.0, 9.0, 2.0]])
    assert torch.equal(swapped, expected)


def test_pesf_needs_teacher_features() -> None:
    with pytest.raises(UsageError, match="pre-logit features"):
        build_method("pesf", 10, teacher_width=0)
