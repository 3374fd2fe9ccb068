import math

import pytest
import torch

from kdcli.interfaces import ModelOutput
from kdcli.methods.skd import LearningSimplifier

from ..conftest import ZERO, build_method


def test_batch_axis_golden_value() -> None:
    """W_q = W_k = W_v = W_o = I, T = 2, teacher rows (2, 0) and (0, 4), so q = (1, 0), (0, 2). Row 1 attends with
    softmax(1/√2, 0) = (0.6698, 0.3302): z_simple₁ = q₁ + 0.6698·q₁ + 0.3302·q₂ = (1.6698, 0.6605); row 2 likewise
    (0.0558, 3.8884). The KD target is T·z_simple."""
    skd = build_method("skd", 2, temperature=2.0, width=2, anchor_weight=1.0)
    with torch.no_grad():
        for layer in (skd.simplifier.query, skd.simplifier.key, skd.simplifier.value, skd.simplifier.out):
            layer.weight.copy_(torch.eye(2))
    teacher = ModelOutput(torch.tensor([[2.0, 0.0], [0.0, 4.0]]))
    labels = torch.tensor([0, 1])
    simple = skd.teacher_targets(teacher, labels) / 2.0
    expected = [[1.6697615493266569, 0.6604769013466862], [0.05580721920716974, 3.8883855615856606]]
    assert simple.flatten().tolist() == pytest.approx([v for row in expected for v in row], rel=1e-6)
    losses = skd(ModelOutput(torch.tensor([[0.0, 0.0], [1.0, -1.0]])), teacher, labels, ZERO)
    assert losses["kd"].item() == pytest.approx(2.343938013210854, rel=1e-6)
    assert losses["ce"].item() == pytest.approx(0.1 * (math.log(2) + math.log(1 + math.exp(2))) / 2, rel=1e-6)
    assert losses["anchor"].item() == pytest.approx(0.06260064341672479, rel=1e-6)


@pytest.mark.parametrize("axis", ["batch", "class"])
def test_zero_started_simplifier_gives_vanilla_kd(axis: str) -> None:
    torch.manual_seed(0)
    student, teacher, labels = torch.randn(6, 10), torch.randn(6, 10), torch.randint(0, 10, (6,))
    skd = build_method("skd", 10, axis=axis)
    vanilla = build_method("vanilla", 10)
    first = skd(ModelOutput(student), ModelOutput(teacher), labels, ZERO)
    plain = vanilla(ModelOutput(student), ModelOutput(teacher), labels, ZERO)
    assert first["kd"].item() == pytest.approx(plain["kd"].item(), rel=1e-6)
    # kdcli's default anchor λ = 1 is CE(T·z_simple, y), which starts as CE(z_t, y); λ = 0 drops the term
    assert first["anchor"].item() == pytest.approx(torch.nn.functional.cross_entropy(teacher, labels).item(), rel=1e-6)
    literal = build_method("skd", 10, axis=axis, anchor_weight=0.0)
    assert "anchor" not in literal(ModelOutput(student), ModelOutput(teacher), labels, ZERO)


def test_batch_axis_simplifier_is_permutation_equivariant() -> None:
    torch.manual_seed(0)
    simplifier = LearningSimplifier(num_classes=7, width=5, axis="batch")
    torch.nn.init.normal_(simplifier.out.weight)
    softened = torch.randn(9, 7)
    order = torch.randperm(9)
    assert torch.allclose(simplifier(softened[order]), simplifier(softened)[order], atol=1e-6)
    assert not torch.allclose(simplifier(softened), softened)  # it does mix the batch


def test_class_axis_keeps_examples_independent() -> None:
    torch.manual_seed(0)
    simplifier = LearningSimplifier(num_classes=7, width=4, axis="class")
    torch.nn.init.normal_(simplifier.out.weight)
    softened = torch.randn(5, 7)
    assert torch.allclose(simplifier(softened)[:2], simplifier(softened[:2]), atol=1e-6)


def test_gradients_reach_student_and_simplifier() -> None:
    torch.manual_seed(0)
    skd = build_method("skd", 4)
    torch.nn.init.normal_(skd.simplifier.out.weight)
    student = torch.randn(3, 4, requires_grad=True)
    skd(ModelOutput(student), ModelOutput(torch.randn(3, 4)), torch.tensor([0, 1, 2]), ZERO)["kd"].backward()
    assert student.grad is not None
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in skd.simplifier.parameters())
