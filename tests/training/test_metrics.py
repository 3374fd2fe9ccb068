import pytest
import timm
import torch

import kdcli  # noqa: F401  (registers the zoo)
from kdcli.training.metrics import classification_metrics, count_macs, expected_calibration_error


@pytest.mark.parametrize(("arch", "mmacs"), [("resnet20", 40.8), ("resnet110", 253.2), ("resnet8x4", 177.1)])
def test_macs_match_published_counts(arch: str, mmacs: float) -> None:
    model = timm.create_model(arch, num_classes=100)
    assert count_macs(model, (3, 32, 32)) / 1e6 == pytest.approx(mmacs, abs=0.05)


def test_ece_by_hand() -> None:
    """Two confident predictions (0.9: one right, one wrong) and one at 0.6 (right): bins hold |0.9-0.5|·2 and
    |0.6-1|·1, so ECE = (0.8 + 0.4) / 3 = 0.4."""
    logits = torch.log(torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4]]))
    labels = torch.tensor([0, 1, 0])
    assert expected_calibration_error(logits, labels) == pytest.approx(0.4, abs=1e-6)


def test_classification_metrics() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.0, 1.0, 2.0], [2.0, 0.0, 1.0]])
    labels = torch.tensor([0, 1, 0, 2])
    metrics = classification_metrics(logits, labels)
    assert metrics["top1"] == 50.0
    assert metrics["top5"] == 100.0
