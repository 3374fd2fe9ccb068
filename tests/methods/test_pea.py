from pathlib import Path

import pytest
import torch
from torch import nn

import kdcli
from kdcli.config import resolve
from kdcli.interfaces import Reporter
from kdcli.methods.pea import ptp_labels
from kdcli.training.run import setup
from kdcli.training.stages import run_pre_stage

from ..conftest import tiny_config


def test_ptp_labels_and_thresholds_by_hand() -> None:
    """Softmax confidences of the rows below: 0.9, 0.6, 0.8, 0.7 (correct) and 0.5, 0.95, 0.55 (wrong).
    t1 = median(0.6, 0.7, 0.8, 0.9) = 0.7 (torch takes the lower middle value), t2 = median(0.5, 0.55, 0.95) = 0.55.
    Correct: 0.9, 0.8 > t1 → 0; 0.6, 0.7 ≤ t1 → 1. Wrong: 0.95 > t2 → 2; 0.5, 0.55 ≤ t2 → 3."""
    confidences = [0.9, 0.6, 0.8, 0.7, 0.5, 0.95, 0.55]
    predicted = [0, 1, 0, 1, 0, 1, 0]
    labels = torch.tensor([0, 1, 0, 1, 1, 0, 1])
    probabilities = torch.tensor(
        [[c, 1 - c] if p == 0 else [1 - c, c] for c, p in zip(confidences, predicted, strict=True)]
    )
    four, t1, t2 = ptp_labels(probabilities.log(), labels)
    assert (t1, t2) == pytest.approx((0.7, 0.55), abs=1e-6)
    assert four.tolist() == [0, 1, 0, 1, 3, 2, 3]


@pytest.mark.slow
def test_ptp_replaces_the_4_way_head_with_a_fresh_classifier(tmp_path: Path, teacher_file: Path) -> None:
    config = tiny_config(tmp_path, teacher={"checkpoint": str(teacher_file)},
                         method={"name": "pea", "ptp_epochs": 1, "sps": False})  # fmt: skip
    run = setup(resolve([("test", config)]).config, tmp_path)
    before = run.student.model.get_classifier().weight.detach().clone()
    notes: list[str] = []

    class Notes(Reporter):
        def note(self, message: str) -> None:
            notes.append(message)

    (stage,) = run.method.pre_stages()
    run_pre_stage(run, stage, Notes())
    heads = [m for m in run.student.model.modules() if isinstance(m, nn.Linear)]
    assert [h.out_features for h in heads] == [10]  # the 4-way head is gone
    assert not torch.equal(heads[0].weight, before)  # and the C-way one is fresh
    assert any(n.startswith("PTP labels") for n in notes) and any(n.startswith("ptp epoch 1/1") for n in notes)
    counts = run.method.report()["ptp"]["label_counts"]
    assert sum(counts.values()) == 300


@pytest.mark.slow
@pytest.mark.parametrize(("sps", "ptp"), [(True, True), (True, False), (False, True)])
def test_pea_ablations_run_and_export(tmp_path: Path, teacher_file: Path, sps: bool, ptp: bool) -> None:
    method = {"name": "pea", "sps": sps, "ptp": ptp, "ptp_epochs": 1}
    config = tiny_config(tmp_path, teacher={"checkpoint": str(teacher_file)}, method=method, train={"epochs": 1})
    result = kdcli.distill(config)
    transform = result.report.student.transform
    assert (transform is not None and transform.name == "sps") == sps
    assert ("ptp" in result.report.method_report) == ptp
    evaluated = kdcli.evaluate([result.student_path], device="cpu").results[0]
    assert evaluated.top1 == pytest.approx(result.report.final.last_top1)


@pytest.mark.slow
def test_interrupted_pea_run_resumes_to_the_same_weights(tmp_path: Path, teacher_file: Path) -> None:
    """PTP runs once, before the first checkpoint; the resumed run rebuilds the SPS student and continues."""
    from safetensors.torch import load_file

    from kdcli.errors import Interrupted

    from ..training.test_engine import InterruptAfter

    method = {"name": "pea", "ptp_epochs": 1}
    straight = kdcli.distill(tiny_config(tmp_path / "a", teacher={"checkpoint": str(teacher_file)}, method=method))
    with pytest.raises(Interrupted):
        kdcli.distill(tiny_config(tmp_path / "b", teacher={"checkpoint": str(teacher_file)}, method=method),
                      reporter=InterruptAfter(1))  # fmt: skip
    resumed = kdcli.resume(tmp_path / "b")
    expected = load_file(str(straight.student_path))
    assert set(load_file(str(resumed.student_path))) == set(expected)
    for name, tensor in load_file(str(resumed.student_path)).items():
        assert torch.equal(tensor, expected[name]), name
    assert resumed.report.method_report["ptp"] == straight.report.method_report["ptp"]
