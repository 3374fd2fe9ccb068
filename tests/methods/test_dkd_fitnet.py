"""DKD and FitNet: golden losses by hand, DKD's decomposition of KD, a warm-up that moves inside a compiled loss, and
both trained through the engine on real models."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch._dynamo.utils import counters

import kdcli
from kdcli.errors import UsageError
from kdcli.interfaces import MethodContext, ModelInfo, ModelOutput, StageInfo
from kdcli.methods.dkd import dkd_terms
from kdcli.methods.fitnet import Fitnet
from kdcli.methods.losses import kd_divergence

from ..conftest import ZERO, build_method, tiny_config


def softmax(values: list[float]) -> list[float]:
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


def kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))


def test_dkd_terms_golden_value() -> None:
    """z_s = (1, 2, 0), z_t = (3, 1, 0), y = 0, T = 2, by hand with the math module: TCKD = T²·KL(b_t ‖ b_s) with
    b = (p_y, 1 − p_y); NCKD = T²·KL over classes 1 and 2 renormalized."""
    student, teacher = [1.0, 2.0, 0.0], [3.0, 1.0, 0.0]
    p_s, p_t = softmax([v / 2 for v in student]), softmax([v / 2 for v in teacher])
    tckd = 4 * kl([p_t[0], 1 - p_t[0]], [p_s[0], 1 - p_s[0]])
    nckd = 4 * kl(softmax([v / 2 for v in teacher[1:]]), softmax([v / 2 for v in student[1:]]))
    got = dkd_terms(torch.tensor([student]), torch.tensor([teacher]), torch.tensor([0]), 2.0)
    assert [float(t) for t in got] == pytest.approx([tckd, nckd], rel=1e-5)
    losses = build_method("dkd", 3, temperature=2.0, alpha=1.0, beta=8.0, warmup_epochs=0.0)(
        ModelOutput(torch.tensor([student])), ModelOutput(torch.tensor([teacher])), torch.tensor([0]), ZERO
    )
    assert losses["ce"].item() == pytest.approx(-math.log(softmax(student)[0]), rel=1e-6)
    assert losses["tckd"].item() == pytest.approx(tckd, rel=1e-5)
    assert losses["nckd"].item() == pytest.approx(8 * nckd, rel=1e-5)


def test_dkd_decomposes_classical_kd() -> None:
    """Zhao et al., eq. (5): KD = TCKD + (1 − p_t,y)·NCKD, per example, at any temperature."""
    torch.manual_seed(0)
    student, teacher, labels = torch.randn(6, 7), 3 * torch.randn(6, 7), torch.randint(0, 7, (6,))
    for i in range(6):
        tckd, nckd = dkd_terms(student[i : i + 1], teacher[i : i + 1], labels[i : i + 1], 3.0)
        p_true = torch.softmax(teacher[i] / 3.0, dim=0)[labels[i]]
        kd = kd_divergence(teacher[i : i + 1], student[i : i + 1], 3.0)
        assert float(kd) == pytest.approx(float(tckd + (1 - p_true) * nckd), rel=1e-4)


@pytest.mark.slow
def test_dkd_warm_up_follows_the_progress_tensor_inside_a_compiled_loss() -> None:
    """The ramp min(epoch / 20, 1) reads the progress tensor: one compiled graph serves every step, and the terms
    scale with it (a Python counter would have been frozen into the graph at its first value)."""
    torch._dynamo.reset()
    counters.clear()
    dkd = build_method("dkd", 5)
    compiled = torch.compile(dkd, dynamic=False)
    torch.manual_seed(0)
    student, teacher, labels = (
        ModelOutput(torch.randn(4, 5)),
        ModelOutput(torch.randn(4, 5)),
        torch.tensor([0, 1, 2, 3]),
    )
    at = {epoch: compiled(student, teacher, labels, torch.tensor(epoch)) for epoch in (5.0, 10.0, 40.0)}
    assert float(at[10.0]["tckd"]) == pytest.approx(2 * float(at[5.0]["tckd"]), rel=1e-5)
    assert float(at[40.0]["nckd"]) == pytest.approx(4 * float(at[5.0]["nckd"]), rel=1e-5)
    assert float(at[40.0]["tckd"]) == pytest.approx(float(dkd(student, teacher, labels, torch.tensor(20.0))["tckd"]))
    assert counters["stats"]["unique_graphs"] == 1


def stages(*shapes: tuple[int, int]) -> tuple[StageInfo, ...]:
    return tuple(StageInfo(channels, reduction, f"layer{i}") for i, (channels, reduction) in enumerate(shapes))


def test_fitnet_golden_value() -> None:
    """Hint stage 0, both at stride 1, a 1×1 regressor 2 → 1 channel with weights (1, 2) and bias 0; BatchNorm in eval
    mode with its initial statistics is the identity (ε aside), then ReLU. Student features x = (1, −1) at one pixel
    give 1·1 + 2·(−1) = −1 → ReLU 0; at the other (3, 1) → 5. Teacher hint (1, 4): MSE = ((0−1)² + (5−4)²)/2 = 1."""
    context = MethodContext(2, ModelInfo("s", 0, stages((2, 1))), ModelInfo("t", 0, stages((1, 1))), epochs=1)
    fitnet = Fitnet(Fitnet.Options(hint_stage=0, ce_weight=0.0, hint_weight=1.0), context).eval()
    conv, norm = fitnet.regressor[0], fitnet.regressor[1]
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, 2.0]).view(1, 2, 1, 1))
        conv.bias.zero_()
    student = torch.tensor([[1.0, 3.0], [-1.0, 1.0]]).view(1, 2, 1, 2)
    teacher = torch.tensor([1.0, 4.0]).view(1, 1, 1, 2)
    losses = fitnet(ModelOutput(torch.zeros(1, 2), {"0": student}), ModelOutput(torch.zeros(1, 2), {"0": teacher}),
                    torch.tensor([0]), ZERO)  # fmt: skip
    scale = 1 / math.sqrt(1 + norm.eps)
    assert losses["hint"].item() == pytest.approx(((0 - 1) ** 2 + (5 * scale - 4) ** 2) / 2, rel=1e-6)


@pytest.mark.parametrize(
    ("student", "teacher", "kind"), [(1, 2, "Conv2d"), (2, 1, "ConvTranspose2d"), (2, 2, "Conv2d")]
)
def test_fitnet_regressor_matches_the_strides(student: int, teacher: int, kind: str) -> None:
    context = MethodContext(2, ModelInfo("s", 0, stages((8, student))), ModelInfo("t", 0, stages((16, teacher))), 1)
    regressor = Fitnet(Fitnet.Options(hint_stage=0), context).regressor
    assert type(regressor[0]).__name__ == kind
    out = regressor(torch.randn(2, 8, 32 // student, 32 // student))
    assert out.shape == (2, 16, 32 // teacher, 32 // teacher)


def test_fitnet_hint_stage_out_of_range_says_which_exist() -> None:
    context = MethodContext(2, ModelInfo("resnet8", 0, stages((8, 1))), ModelInfo("t", 0, stages((8, 1))), 1)
    with pytest.raises(UsageError, match=r"no hint stage 3.*between 0 and 0"):
        Fitnet(Fitnet.Options(hint_stage=3), context)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["dkd", "fitnet"])
def test_distills_through_the_engine_and_exports_only_the_student(
    tmp_path: Path, teacher_file: Path, method: str
) -> None:
    """Real models: fitnet's regressor is fed the zoo's stage-2 features through forward_intermediates."""
    config = tiny_config(tmp_path, teacher={"checkpoint": str(teacher_file)}, method={"name": method},
                         train={"epochs": 1})  # fmt: skip
    result = kdcli.distill(config)
    losses = set(result.report.epochs[0].train_losses)
    assert losses >= ({"ce", "tckd", "nckd"} if method == "dkd" else {"ce", "hint"})
    assert (result.report.student.extra_training_parameters > 0) == (method == "fitnet")
    evaluated = kdcli.evaluate([result.student_path], device="cpu").results[0]
    assert evaluated.top1 == pytest.approx(result.report.final.last_top1)
