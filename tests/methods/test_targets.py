"""The target a student learns from, under the shipped defaults and the literal settings (issue: methods that earn
their place). A Gaussian mixture with its Bayes classifier as the fixed teacher, and a small MLP student, trained by
the strategies' real losses with the engine's own optimizer and schedule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from kdcli.catalog import method_spec
from kdcli.config import resolve
from kdcli.interfaces import PRE_LOGITS, ModelOutput, Reporter
from kdcli.methods.pea import ptp_labels
from kdcli.methods.pesf import Pesf
from kdcli.records import EpochRecord
from kdcli.training.engine import train_epoch
from kdcli.training.optim import make_optimizer
from kdcli.training.run import setup
from kdcli.training.validation import target_guard

from ..conftest import build_method, tiny_config

CLASSES, DIMS = 5, 8
MEANS = 0.7 * torch.randn(CLASSES, DIMS, generator=torch.Generator().manual_seed(1))
LITERAL_SKD = {"anchor_weight": 0.0, "transform_lr_ratio": 1.0, "transform_weight_decay": 0.0}


def mixture(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, CLASSES, (count,), generator=generator)
    return MEANS[labels] + torch.randn(count, DIMS, generator=generator), labels


def teacher(x: torch.Tensor) -> ModelOutput:
    """The mixture's Bayes classifier (unit covariance, equal priors), sharpened twice; its features are x."""
    return ModelOutput(2.0 * (x @ MEANS.T - 0.5 * MEANS.pow(2).sum(1)), {PRE_LOGITS: x})


def target_history(method: str, options: dict[str, Any], epochs: int = 4) -> tuple[float, list[dict[str, Any]]]:
    """Train an MLP student for a few epochs; per epoch, the strategy's diagnostics on held-out data and the guard."""
    torch.manual_seed(0)
    train_x, train_y = mixture(2000, 2)
    test_x, test_y = mixture(2000, 3)
    strategy = build_method(method, CLASSES, teacher_width=DIMS, **options)
    student = nn.Sequential(nn.Linear(DIMS, 32), nn.ReLU(), nn.Linear(32, CLASSES))
    config = resolve([("test", {"optim": {"lr": 0.1}, "schedule": {"name": "constant"},
                                "train": {"epochs": epochs}})]).config  # fmt: skip
    optimizer, scheduler = make_optimizer(config, student, strategy.parameter_groups(), steps_per_epoch=20)
    teacher_top1 = 100.0 * teacher(test_x).logits.argmax(1).eq(test_y).float().mean().item()
    history = []
    for epoch in range(epochs):
        for batch in torch.randperm(2000).split(100):
            losses = strategy(ModelOutput(student(train_x[batch])), teacher(train_x[batch]), train_y[batch],
                              torch.tensor(float(epoch)))  # fmt: skip
            optimizer.zero_grad()
            torch.stack(list(losses.values())).sum().backward()
            optimizer.step()
            scheduler.step()
        with torch.no_grad():
            values = strategy.diagnostics(ModelOutput(student(test_x)), teacher(test_x), test_y)
        diagnostics = {k: v.mean().item() for k, v in values.items()}
        record = EpochRecord(epoch=epoch + 1, lr=0.0, train_losses={}, train_top1=0.0, diagnostics=diagnostics)
        history.append({"diag_target_top1": diagnostics["target_top1"], "warning": target_guard(record, teacher_top1)})
    return teacher_top1, history


@pytest.mark.parametrize("method", ["skd", "pesf"])
def test_shipped_defaults_keep_the_target_at_the_teachers_accuracy(method: str) -> None:
    teacher_top1, history = target_history(method, {})
    assert 70 < teacher_top1 < 85  # a problem where the teacher is good but not perfect
    assert all(abs(r["diag_target_top1"] - teacher_top1) <= 3 for r in history), history
    assert all(r["warning"] is None for r in history)


def test_literal_skd_collapses_and_the_guard_says_so() -> None:
    """λ = 0 with the simplifier at the student's rate: the target's only gradient pulls it to the student."""
    teacher_top1, history = target_history("skd", LITERAL_SKD)
    assert history[-1]["diag_target_top1"] < teacher_top1 - 30
    assert history[-1]["warning"] is not None and "below the teacher's" in history[-1]["warning"]


def test_guard_fires_on_a_near_uniform_target_and_not_on_a_good_one() -> None:
    def record(**diagnostics: float) -> EpochRecord:
        return EpochRecord(epoch=1, lr=0.1, train_losses={"loss": 1.0}, train_top1=50.0, diagnostics=diagnostics)

    assert target_guard(record(target_top1=80.0, target_normalized_entropy=0.6), teacher_top1=82.0) is None
    flat = record(target_top1=80.0, target_normalized_entropy=0.93)
    assert "near uniform" in str(target_guard(flat, teacher_top1=82.0))
    assert "6.0 points below" in str(target_guard(record(target_top1=76.0), teacher_top1=82.0))


def test_detached_student_target_with_the_swap_is_the_swapped_detached_student() -> None:
    """The released code's adapter learns toward ``logit_s_cor``: the student's logits, detached, with the largest
    logit and the true class's swapped."""
    pesf = build_method("pesf", 4, teacher_width=3, swap_correction=True, adapter_target="detached-student")
    assert isinstance(pesf, Pesf)
    student = torch.tensor([[0.5, 2.0, -1.0, 1.0], [3.0, 0.0, 1.0, -2.0]], requires_grad=True)
    labels = torch.tensor([0, 2])
    target = pesf.adapter_kd_target(student, labels)
    assert torch.equal(target, torch.tensor([[2.0, 0.5, -1.0, 1.0], [1.0, 0.0, 3.0, -2.0]]))
    assert not target.requires_grad
    plain = build_method("pesf", 4, teacher_width=3, adapter_target="detached-student")
    assert isinstance(plain, Pesf)
    assert torch.equal(plain.adapter_kd_target(student, labels), student.detach())


def test_explicit_ptp_thresholds_give_the_hand_computed_labels() -> None:
    """Confidences 0.9, 0.6, 0.85 (correct) and 0.7, 0.55 (wrong) with t1 = 0.8, t2 = 0.6: correct above t1 → 0,
    else 1; wrong above t2 → 2, else 3."""
    confidences = [0.9, 0.6, 0.85, 0.7, 0.55]
    labels = torch.tensor([0, 0, 1, 1, 0])
    predicted = [0, 0, 1, 0, 1]
    rows = zip(confidences, predicted, strict=True)
    probabilities = torch.tensor([[c, 1 - c] if p == 0 else [1 - c, c] for c, p in rows])
    four, t1, t2 = ptp_labels(probabilities.log(), labels, (0.8, 0.6))
    assert (t1, t2) == (0.8, 0.6)
    assert four.tolist() == [0, 1, 0, 2, 3]


def test_ptp_thresholds_are_validated() -> None:
    options = method_spec("pea").options
    assert options.model_validate({"ptp_thresholds": [0.95, 0.75]}).ptp_thresholds == (0.95, 0.75)
    with pytest.raises(ValueError, match="less than 1"):
        options.model_validate({"ptp_thresholds": [1.5, 0.7]})


def test_transform_group_follows_the_schedule_at_its_ratio_and_stays_put_while_frozen(
    tmp_path: Path, teacher_file: Path
) -> None:
    """pesf at transform_lr_ratio 0.1, frozen for the first of two epochs of a cosine schedule with warm-up: at every
    step its rate is 0 (first epoch) or exactly 0.1 × the student's, and in the frozen epoch its weights do not move
    while the student's do."""
    method = {"name": "pesf", "transform_lr_ratio": 0.1, "transform_warmup_epochs": 1}
    config = tiny_config(tmp_path, teacher={"checkpoint": str(teacher_file)}, method=method,
                         schedule={"name": "cosine", "warmup_epochs": 0.5})  # fmt: skip
    run = setup(resolve([("test", config)]).config, tmp_path)
    student_group, adapter_group = run.optimizer.param_groups
    rates = []
    original_step = run.scheduler.step

    def step_and_record() -> None:
        original_step()
        rates.append((float(student_group["lr"]), float(adapter_group["lr"])))

    run.scheduler.step = step_and_record  # type: ignore[method-assign]
    adapter_before = [p.detach().clone() for p in run.method.parameters()]
    student_before = [p.detach().clone() for p in run.student.parameters()]
    train_epoch(run, Reporter())
    assert all(torch.equal(a, p) for a, p in zip(adapter_before, run.method.parameters(), strict=True))
    assert not all(torch.equal(a, p) for a, p in zip(student_before, run.student.parameters(), strict=True))
    steps = len(run.data.train)
    run.epoch = 1
    train_epoch(run, Reporter())
    assert [adapter for _, adapter in rates[: steps - 1]] == [0.0] * (steps - 1)
    assert all(adapter == pytest.approx(0.1 * student, rel=1e-12) for student, adapter in rates[steps - 1 :])
    assert any(student != rates[-1][0] for student, _ in rates[steps:])  # the schedule moved
    assert not all(torch.equal(a, p) for a, p in zip(adapter_before, run.method.parameters(), strict=True))


def test_removed_transform_lr_says_what_replaces_it() -> None:
    from kdcli.errors import UsageError

    with pytest.raises(UsageError, match="transform_lr_ratio"):
        resolve([("--set method.transform_lr=2e-5", {"method": {"name": "pesf", "transform_lr": 2e-5}})])
