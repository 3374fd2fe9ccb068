"""Evaluation metrics and model cost: top-k accuracy, NLL, calibration error, parameters and MACs."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdcli.losses import accuracy_counts


@torch.no_grad()
def predict(
    model: Callable[[Tensor], Tensor],
    batches: Iterable[tuple[Tensor, Tensor]],
    autocast: Callable[[], contextlib.AbstractContextManager[None]],
) -> tuple[Tensor, Tensor]:
    """Logits (float32, on the CPU) and labels of a whole split."""
    logits, labels = [], []
    for images, targets in batches:
        with autocast():
            out = model(images)
        logits.append(out.float().cpu())
        labels.append(targets.cpu())
    return torch.cat(logits), torch.cat(labels)


def expected_calibration_error(logits: Tensor, labels: Tensor, bins: int = 15) -> float:
    """ECE with equal-width confidence bins (Guo et al. 2017, 15 bins): Σ_b |B|/N · |acc(B) − conf(B)|."""
    confidence, predicted = F.softmax(logits.float(), dim=1).max(dim=1)
    correct = predicted.eq(labels).float()
    bin_index = (confidence * bins).ceil().clamp(1, bins).long() - 1
    total = torch.zeros(bins).index_add_(0, bin_index, torch.ones_like(confidence))
    gap = torch.zeros(bins).index_add_(0, bin_index, confidence - correct)
    return float(gap.abs().sum()) / max(float(total.sum()), 1.0)


def classification_metrics(logits: Tensor, labels: Tensor) -> dict[str, float]:
    """top-1 and top-5 accuracy (%), mean NLL (nats) and ECE (%) of a split."""
    top1, top5 = accuracy_counts(logits, labels, (1, 5))
    count = labels.numel()
    return {
        "top1": 100.0 * float(top1) / count,
        "top5": 100.0 * float(top5) / count,
        "nll": float(F.cross_entropy(logits.float(), labels)),
        "ece": 100.0 * expected_calibration_error(logits, labels),
    }


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass of one image, counted on convolutions and linear layers.

    These dominate the cost of the classifiers kdcli trains; norms, activations and pooling are left out, as in
    the MAC counts that papers report (resnet20 at 32×32: 40.8 M).
    """
    total = 0

    def conv_hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal total
        assert isinstance(module, nn.Conv2d)
        kernel_ops = (module.in_channels // module.groups) * module.kernel_size[0] * module.kernel_size[1]
        total += output.numel() * kernel_ops

    def linear_hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal total
        assert isinstance(module, nn.Linear)
        total += output.numel() * module.in_features

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        parameter = next(model.parameters())
        model(torch.zeros((1, *input_shape), device=parameter.device, dtype=parameter.dtype))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return total
