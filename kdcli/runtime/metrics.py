"""Evaluation metrics and model cost: top-k accuracy, NLL, calibration error, parameters and MACs."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@torch.no_grad()
def predict(
    model: Callable[[Tensor], Any],
    batches: Iterable[tuple[Tensor, Tensor]],
    autocast: Callable[[], contextlib.AbstractContextManager[Any]],
    each: Callable[[int, Any, Tensor], None] | None = None,
) -> tuple[Tensor, Tensor]:
    """Logits (float32, on the CPU) and labels of a whole split: the one evaluation loop of kdcli. ``model`` returns
    logits or a ``ModelOutput``; ``each(index, output, labels)`` sees every batch's output on the device (the
    engine's diagnostics, the teacher's cached outputs)."""
    logits, labels = [], []
    for index, (images, targets) in enumerate(batches):
        with autocast():
            out = model(images)
            if each is not None:
                each(index, out, targets)
        logits.append((out if isinstance(out, Tensor) else out.logits).float().cpu())
        labels.append(targets.cpu())
    return torch.cat(logits), torch.cat(labels)


def expected_calibration_error(logits: Tensor, labels: Tensor, bins: int = 15) -> float:
    """ECE with equal-width confidence bins (Guo et al. 2017, 15 bins): Σ_b |B|/N · |acc(B) − conf(B)|."""
    confidence, predicted = F.softmax(logits.float(), dim=1).max(dim=1)
    finite = confidence.isfinite()  # a diverged model's NaN rows count as wrong, at zero confidence
    confidence = confidence.where(finite, 0.0)
    correct = (predicted.eq(labels) & finite).float()
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


def accuracy_counts(logits: Tensor, labels: Tensor, topk: tuple[int, ...] = (1, 5)) -> list[Tensor]:
    """Number of rows whose label is among the top-k logits, for each k (capped at the class count)."""
    k_max = min(max(topk), logits.shape[1])
    top = logits.topk(k_max, dim=1).indices
    hits = top.eq(labels.unsqueeze(1))
    return [hits[:, : min(k, k_max)].any(dim=1).sum() for k in topk]


@torch.no_grad()
def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass of one image, counted by torch's ``FlopCounterMode`` (half its
    FLOPs): convolutions and every matrix product, attention's included; norms, activations and pooling are left out,
    as in the MAC counts papers report (resnet20 at 32×32: 40.8 M). Attention runs its math path while counting: the
    CPU's fused kernel has no formula in FlopCounterMode and would count as nothing."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        parameter = next(model.parameters())
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            model(torch.zeros((1, *input_shape), device=parameter.device, dtype=parameter.dtype))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops()) // 2
