"""pesf and skd through the engine: any timm teacher, diagnostics, and a student-only export."""

from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from safetensors.torch import load_file

import kdcli
from kdcli.errors import UsageError
from kdcli.interfaces import PRE_LOGITS
from kdcli.models.features import FeatureReader

from ..conftest import build_method, tiny_config


@pytest.mark.slow
@pytest.mark.parametrize("method", ["pesf", "skd"])
def test_exports_only_the_student_and_reports_diagnostics(tmp_path: Path, teacher_file: Path, method: str) -> None:
    result = kdcli.distill(tiny_config(tmp_path, teacher={"checkpoint": str(teacher_file)}, method={"name": method},
                                       train={"epochs": 1}))  # fmt: skip
    plain = timm.create_model("resnet8", num_classes=10, in_chans=1).state_dict()
    exported = load_file(str(result.student_path))
    assert set(exported) == set(plain)
    assert all(exported[k].shape == plain[k].shape for k in plain)
    report = result.report
    assert report.student.extra_training_parameters > 0
    assert report.teacher is not None and report.teacher.parameters == 77_754  # counted next to the extra parameters
    diagnostics = report.epochs[0].diagnostics
    for key in ("target_top1", "teacher_entropy", "target_entropy", "student_entropy", "sharpness_gap",
                "teacher_sharpness_gap"):  # fmt: skip
        assert key in diagnostics and torch.isfinite(torch.tensor(diagnostics[key])), key
    assert "sharpness gap" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize("method", ["pesf", "skd"])
@pytest.mark.parametrize(("arch", "kwargs"), [("test_resnet", {}), ("test_vit", {"img_size": 32})])
def test_any_timm_teacher_with_pre_logits(tmp_path: Path, method: str, arch: str, kwargs: dict[str, Any]) -> None:
    config = tiny_config(tmp_path, teacher={"arch": arch, "kwargs": kwargs}, method={"name": method},
                         train={"epochs": 1, "allow_untrained_teacher": True})  # fmt: skip
    result = kdcli.distill(config)
    assert result.report.teacher is not None and result.report.teacher.arch == arch


def test_teacher_without_pre_logit_features_is_refused() -> None:
    plain = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(1024, 10))
    with pytest.raises(UsageError, match="forward_head"):
        FeatureReader(plain, (PRE_LOGITS,), "mlp")
    with pytest.raises(UsageError, match="pre-logit features"):
        build_method("pesf", 10, teacher_width=0)
