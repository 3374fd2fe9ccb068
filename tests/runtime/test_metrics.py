import pytest
import timm
import torch

import kdcli.models  # noqa: F401  (registers the zoo in timm)
from kdcli.runtime.metrics import classification_metrics, count_macs, expected_calibration_error


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


def test_ece_counts_a_nan_row_as_wrong_at_zero_confidence() -> None:
    """A diverged model's NaN row lands in the first bin as a miss: |0 − 0|, so ECE = 0.8 / 3 from the two 0.9 rows."""
    logits = torch.log(torch.tensor([[0.9, 0.1], [0.9, 0.1], [float("nan"), float("nan")]]))
    labels = torch.tensor([0, 1, 0])
    assert expected_calibration_error(logits, labels) == pytest.approx(0.8 / 3, abs=1e-6)


def test_classification_metrics() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.0, 1.0, 2.0], [2.0, 0.0, 1.0]])
    labels = torch.tensor([0, 1, 0, 2])
    metrics = classification_metrics(logits, labels)
    assert metrics["top1"] == 50.0
    assert metrics["top5"] == 100.0


def test_macs_count_attention_as_well_as_convolutions_and_linear_layers() -> None:
    """test_vit at 32×32: 4 patches + 1 class token = 5 tokens of width 64, 6 blocks. Its convolution and linear
    layers make 1,426,048 MACs (counted with forward hooks below); attention adds QKᵀ and AV, 2 · 5² · 64 per block:
    19,200. The hook count alone was what kdcli reported before (14 % low on an SPS ViT)."""
    model = timm.create_model("test_vit", num_classes=10, img_size=32).eval()
    linear = 0

    def hook(module: torch.nn.Module, inputs: object, output: torch.Tensor) -> None:
        nonlocal linear
        if isinstance(module, torch.nn.Conv2d):
            linear += output.numel() * module.in_channels * module.kernel_size[0] * module.kernel_size[1]
        elif isinstance(module, torch.nn.Linear):
            linear += output.numel() * module.in_features

    handles = [
        m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)
    ]
    model(torch.zeros(1, 3, 32, 32))
    for handle in handles:
        handle.remove()
    assert linear == 1_426_048
    assert count_macs(model, (3, 32, 32)) == linear + 6 * 2 * 5**2 * 64
