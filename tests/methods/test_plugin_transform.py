"""A third-party student transform, installed through the entry points: the model file records it, and `kdcli eval`
and `kdcli.load_model` rebuild the transformed student from any installed transform, not only Pea-KD's SPS."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import kdcli
from kdcli.cli import main
from kdcli.interfaces import StudentTransform

PLUGIN = '''
"""kdcli_scaled: the student's classifier followed by a learned scale (a new parameter: a change of structure)."""

import torch
from torch import nn

from kdcli.catalog import MethodSpec, VanillaOptions
from kdcli.interfaces import StudentTransform
from kdcli.methods.vanilla import Vanilla

SCALED = MethodSpec("scaled", "vanilla KD with a learned scale on the student's logits", VanillaOptions,
                    "kdcli_scaled:ScaledVanilla")


class Scale(nn.Module):
    def __init__(self, init):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(init)))

    def forward(self, x):
        return x * self.scale


def scaled_head(model, init=1.0):
    model.fc = nn.Sequential(model.get_classifier(), Scale(init))
    return model


class ScaledVanilla(Vanilla):
    spec = SCALED

    def student_transform(self):
        return StudentTransform("scaled_head", {"init": 0.5})
'''


@pytest.fixture
def scaled_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "kdcli_scaled.py").write_text(PLUGIN)
    info = tmp_path / "kdcli_scaled-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: kdcli-scaled\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[kdcli.methods]\nscaled = kdcli_scaled:SCALED\n\n"
        "[kdcli.student_transforms]\nscaled_head = kdcli_scaled:scaled_head\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))


@pytest.mark.slow
def test_a_third_party_transform_is_rebuilt_by_eval_and_load_model(
    scaled_plugin: None, tmp_path: Path, teacher_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(["distill", "--teacher", str(teacher_file), "--student", "resnet8", "--method", "scaled", "--data",
              "embedded", "--train-subset", "200", "--epochs", "1", "--batch-size", "50", "--device", "cpu",
              "--out", str(out), "--json", "--quiet"])  # fmt: skip
    assert exit_info.value.code == 0
    trained_top1 = json.loads(capsys.readouterr().out)["final"]["last_top1"]

    model, card = kdcli.load_model(out / "student.safetensors")
    assert card.student_transform == StudentTransform("scaled_head", {"init": 0.5})
    scale = model.fc[1].scale  # the structure rebuilt, then its trained value loaded
    assert isinstance(scale, torch.nn.Parameter) and float(scale.detach()) != 0.5

    with pytest.raises(SystemExit) as exit_info:
        main(["eval", str(out / "student.safetensors"), "--device", "cpu", "--json"])
    assert exit_info.value.code == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["top1"] == trained_top1
