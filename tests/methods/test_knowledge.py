"""Tang et al. 2020 in kdcli: the statistics and the exact four-part decomposition, the gradient rescaling against
autograd, the controls as targets, and `kdcli analyze` end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import kdcli
from kdcli.cli import main
from kdcli.config import resolve
from kdcli.errors import UsageError
from kdcli.methods.knowledge import (
    ControlTarget,
    control_distribution,
    control_logits,
    decomposition,
    gradient_rescaling,
    teacher_statistics,
)

from ..conftest import tiny_config

# A hand-built teacher: four examples of three classes, its probabilities given directly.
P = torch.tensor([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8]], dtype=torch.float64)
Y = torch.tensor([0, 0, 1, 2])


def kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True) if a > 0)


def bern(a: float, b: float) -> float:
    return kl([a, 1 - a], [b, 1 - b])


def test_statistics_of_a_hand_built_teacher() -> None:
    """c = (0.8, 0.6, 0.7, 0.8), so ε = 1 − 0.725 = 0.275. Class 0's wrong mass: 0.1 + 0.3 on class 1 and 0.1 + 0.1
    on class 2, over Σ(1 − c) = 0.6, so R_0 = (0, 2/3, 1/3); R_1 = (0.2, 0, 0.1)/0.3; R_2 = (0.1, 0.1, 0)/0.2.
    P̄_0 = the mean of the first two rows = (0.7, 0.2, 0.1)."""
    stats = teacher_statistics(P, Y)
    assert stats.smoothing == pytest.approx(0.275)
    assert stats.class_confidence.tolist() == pytest.approx([0.7, 0.7, 0.8])
    assert stats.class_frequency.tolist() == pytest.approx([0.5, 0.25, 0.25])
    expected_r = [[0, 2 / 3, 1 / 3], [2 / 3, 0, 1 / 3], [0.5, 0.5, 0]]
    assert [row for row in stats.relationships.tolist()] == [pytest.approx(row) for row in expected_r]
    assert stats.class_means.tolist()[0] == pytest.approx([0.7, 0.2, 0.1])
    assert stats.class_means.tolist()[2] == pytest.approx([0.1, 0.1, 0.8])


def test_decomposition_of_the_hand_built_teacher_by_hand() -> None:
    """Each part written out with the numbers of the test above (U uniform over the 2 wrong classes)."""
    parts = decomposition(P, Y, teacher_statistics(P, Y))
    class_level = 0.5 * bern(0.7, 0.725) + 0.25 * bern(0.7, 0.725) + 0.25 * bern(0.8, 0.725)
    instance = (bern(0.8, 0.7) + bern(0.6, 0.7) + 0 + 0) / 4
    relations = 0.5 * 0.3 * kl([2 / 3, 1 / 3], [0.5, 0.5]) + 0.25 * 0.3 * kl([2 / 3, 1 / 3], [0.5, 0.5]) + 0
    instance_relations = (0.2 * kl([0.5, 0.5], [2 / 3, 1 / 3]) + 0.4 * kl([0.75, 0.25], [2 / 3, 1 / 3])) / 4
    smoothing = [[0.725, 0.1375, 0.1375], [0.725, 0.1375, 0.1375], [0.1375, 0.725, 0.1375], [0.1375, 0.1375, 0.725]]
    total = sum(kl(p, q) for p, q in zip(P.tolist(), smoothing, strict=True)) / 4
    assert parts["class_confidence"] == pytest.approx(class_level, rel=1e-12)
    assert parts["instance_confidence"] == pytest.approx(instance, rel=1e-12)
    assert parts["class_relationships"] == pytest.approx(relations, rel=1e-12)
    assert parts["instance_relationships"] == pytest.approx(instance_relations, rel=1e-12)
    assert parts["total"] == pytest.approx(total, rel=1e-12)
    assert class_level + instance + relations + instance_relations == pytest.approx(total, rel=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_decomposition_is_exact_and_every_part_non_negative(seed: int) -> None:
    """Random teachers of every sharpness, some saturated (c = 1 exactly), some classes absent."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(300, 7, generator=generator, dtype=torch.float64) * (1 + 4 * seed)
    probabilities = torch.softmax(logits, 1)
    labels = torch.randint(0, 6, (300,), generator=generator)  # class 6 never appears
    if seed == 4:
        probabilities[:20] = F.one_hot(labels[:20], 7).double()
    parts = decomposition(probabilities, labels, teacher_statistics(probabilities, labels))
    named = [parts[k] for k in ("class_confidence", "instance_confidence", "class_relationships",
                                "instance_relationships")]  # fmt: skip
    assert all(part >= -1e-15 for part in named)
    assert sum(named) == pytest.approx(parts["total"], rel=1e-12, abs=1e-15)


@pytest.mark.parametrize(("temperature", "gamma", "alpha"), [(1.0, 0.3, 0.5), (4.0, 0.1, 0.7)])
def test_gradient_rescaling_equals_the_ratio_of_autograd_gradients(temperature: float, gamma: float,
                                                                    alpha: float) -> None:  # fmt: skip
    """w(x) = ∂(γ·CE + α·T²·KL)/∂z_y over ∂CE/∂z_y, one example at a time, for γ + α ≠ 1."""
    torch.manual_seed(1)
    teacher, student, labels = 2 * torch.randn(6, 5), torch.randn(6, 5), torch.randint(0, 5, (6,))
    w = gradient_rescaling(teacher, student, labels, temperature, gamma, alpha)
    for i in range(6):
        z = student[i : i + 1].clone().double().requires_grad_()
        y = labels[i : i + 1]
        target = F.log_softmax(teacher[i : i + 1].double() / temperature, 1)
        kl_term = F.kl_div(F.log_softmax(z / temperature, 1), target, reduction="batchmean", log_target=True)
        kd_loss = gamma * F.cross_entropy(z, y) + alpha * temperature**2 * kl_term
        (kd_grad,) = torch.autograd.grad(kd_loss, z)
        (ce_grad,) = torch.autograd.grad(F.cross_entropy(z, y), z)
        assert float(w[i]) == pytest.approx(float(kd_grad[0, y] / ce_grad[0, y]), rel=1e-9)


def test_each_control_target_softens_to_its_intended_distribution() -> None:
    """softmax(target / T) of each control: ls puts 1 − ε on y and ε/(K − 1) elsewhere; class is P̄_y; partial keeps
    c(x) and spreads the rest evenly; partial+class spreads it as R_y; full is the teacher."""
    temperature = 2.0
    teacher_logits = temperature * P.log().float()  # softmax(z/T) = P exactly
    control = ControlTarget("class", 3, temperature)
    control.fit(teacher_logits, Y)
    stats = teacher_statistics(P, Y)
    expected = {
        "ls": torch.tensor([[0.725 if j == y else 0.1375 for j in range(3)] for y in Y.tolist()]),
        "class": stats.class_means[Y].float(),
        "partial": torch.tensor([[0.8, 0.1, 0.1], [0.6, 0.2, 0.2], [0.15, 0.7, 0.15], [0.1, 0.1, 0.8]]),
        "partial+class": torch.tensor(
            [[0.8, 0.2 * 2 / 3, 0.2 / 3], [0.6, 0.4 * 2 / 3, 0.4 / 3], [0.3 * 2 / 3, 0.7, 0.1], [0.1, 0.1, 0.8]]
        ),
        "full": P.float(),
    }
    for name, distribution in expected.items():
        made = control_distribution(name, P.float(), Y, control.smoothing, control.class_means, control.relationships)  # type: ignore[arg-type]
        assert torch.allclose(made, distribution, atol=1e-6), name
        softened = torch.softmax(control_logits(made, temperature) / temperature, 1)
        assert torch.allclose(softened, distribution, atol=1e-6), name


def test_a_control_distills_through_the_engine_with_its_teacher_pass(tmp_path: Path, teacher_file: Path) -> None:
    config = tiny_config(tmp_path, teacher={"checkpoint": str(teacher_file)},
                         method={"name": "vanilla", "target": "partial+class"}, train={"epochs": 1})  # fmt: skip
    result = kdcli.distill(config)
    control = result.report.method_report["control"]
    assert 0 < control["matched_smoothing"] < 1 and control["temperature"] == 4.0
    assert result.report.epochs[0].diagnostics["target_top1"] > 0
    with pytest.raises(UsageError, match="controls as targets work with vanilla, pea and dkd"):
        resolve([("t", {"method": {"name": "pesf", "target": "ls"}})])


@pytest.mark.slow
def test_analyze_writes_json_markdown_and_figures(
    tmp_path: Path, teacher_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On the embedded data with a student: one JSON document on stdout, and PNG figures of the expected size with
    content in them."""
    from PIL import Image

    student = kdcli.train({**tiny_config(tmp_path / "student", train={"epochs": 1}), "teacher": {}}).student_path
    with pytest.raises(SystemExit) as exit_info:
        main(["analyze", "--teacher", str(teacher_file), "--student", str(student), "--train-subset", "300",
              "--device", "cpu", "--json", "--quiet", "--out", str(tmp_path / "analysis")])  # fmt: skip
    assert exit_info.value.code == 0
    document = json.loads(capsys.readouterr().out)
    assert document["schema"] == "kdcli.analysis/1" and document["samples"] == 300
    assert [r["temperature"] for r in document["results"]] == [1.0, 4.0]
    instance = document["results"][1]["instance"]
    assert instance["ce_weight"] == 0.1
    assert sum(instance["histogram_counts"]) == 300  # every example is drawn, however far out w runs
    assert instance["histogram_edges"] == sorted(instance["histogram_edges"])
    assert instance["central_range"][0] <= instance["median_rescaling"] <= instance["central_range"][1]
    sizes = {
        "relationships": (792, 660),
        "decomposition": (704, 352),
        "confidence": (704, 352),
        "rescaling": (704, 352),
    }
    for kind, size in sizes.items():
        for tag in ("1", "4"):
            path = tmp_path / "analysis" / f"{kind}-t{tag}.png"
            with Image.open(path) as image:
                assert image.format == "PNG" and image.size == size, path
                assert len(image.convert("L").getcolors(maxcolors=1 << 16) or []) > 10, path  # not blank
    assert (tmp_path / "analysis" / "analysis.md").read_text().startswith("# What resnet8 teaches")
    assert json.loads((tmp_path / "analysis" / "analysis.json").read_text())["teacher_top1"] == document["teacher_top1"]


def test_controls_keep_exactly_the_parts_docs_methods_md_says() -> None:
    """The table of docs/methods.md: each control's own decomposition has the teacher's value for the parts it keeps
    and zero for the others."""
    generator = torch.Generator().manual_seed(3)
    probabilities = torch.softmax(2 * torch.randn(400, 5, generator=generator, dtype=torch.float64), 1)
    labels = torch.randint(0, 5, (400,), generator=generator)
    stats = teacher_statistics(probabilities, labels)
    teacher = decomposition(probabilities, labels, stats)
    keeps = {
        "ls": (),
        "class": ("class_confidence", "class_relationships"),
        "partial": ("class_confidence", "instance_confidence"),
        "partial+class": ("class_confidence", "instance_confidence", "class_relationships"),
        "full": ("class_confidence", "instance_confidence", "class_relationships", "instance_relationships"),
    }
    smoothing = torch.tensor(stats.smoothing)
    for name, kept in keeps.items():
        control = control_distribution(name, probabilities, labels, smoothing, stats.class_means, stats.relationships)  # type: ignore[arg-type]
        parts = decomposition(control.double(), labels, teacher_statistics(control.double(), labels))
        for part in ("class_confidence", "instance_confidence", "class_relationships", "instance_relationships"):
            expected = teacher[part] if part in kept else 0.0
            assert parts[part] == pytest.approx(expected, rel=1e-5, abs=1e-6), (name, part)
