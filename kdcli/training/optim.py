"""The optimizer over the student and a method's own parts, and the step-wise learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from kdcli.config import RunConfig, ScheduleConfig


def lr_factor(schedule: ScheduleConfig, epoch: float, epochs: int) -> float:
    """The multiplier of each group's base learning rate at a fractional epoch (a step-wise schedule).

    ``step`` drops by ``gamma`` at each milestone epoch (RepDistiller's MultiStepLR); ``cosine`` anneals to
    ``final_factor``; ``onecycle`` warms up linearly from 1/25 of the rate over ``warmup_epochs`` (30% of the run
    when unset) and then anneals to zero by a cosine: torch's OneCycleLR without its cosine warm-up and momentum
    cycle, which made no difference to the FMNIST-5k teacher (docs/results.md). The other schedules warm up linearly
    from 1% of the rate over ``warmup_epochs``.
    """
    warmup = schedule.warmup_epochs
    if schedule.name == "onecycle" and warmup == 0:
        warmup = 0.3 * epochs
    if warmup > 0 and epoch < warmup:
        return 0.04 + 0.96 * epoch / warmup if schedule.name == "onecycle" else max(epoch / warmup, 0.01)
    if schedule.name == "constant":
        return 1.0
    if schedule.name == "step":
        return float(schedule.gamma ** sum(1 for m in schedule.milestones if int(epoch) >= m))
    progress = min(1.0, (epoch - warmup) / max(epochs - warmup, 1e-9))
    floor = schedule.final_factor if schedule.name == "cosine" else 0.0
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def group_schedule(
    schedule: ScheduleConfig, epochs: int, steps_per_epoch: int, frozen_epochs: float = 0.0
) -> Callable[[int], float]:
    """One parameter group's learning-rate factor at a step: the run's schedule, or 0 in the group's first
    ``frozen_epochs`` (a transform kept frozen while the student is still random). A rate of 0 leaves the parameters
    exactly unchanged with SGD and AdamW alike, and keeps one optimizer, one step and one CUDA graph. A plain
    function, so LambdaLR keeps it out of the checkpoint."""

    def factor(step: int) -> float:
        epoch = step / steps_per_epoch
        return 0.0 if epoch < frozen_epochs else lr_factor(schedule, epoch, epochs)

    return factor


def make_optimizer(
    config: RunConfig,
    student: nn.Module,
    method_groups: list[dict[str, Any]],
    steps_per_epoch: int,
    capturable: bool = False,
    schedule: ScheduleConfig | None = None,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """The optimizer over the student and a method's own groups (``Method.parameter_groups``), and the step-wise
    schedule (the run's, unless ``schedule`` is given: a pre-stage's constant rate). ``capturable``: the step will be
    captured in a CUDA graph (AdamW must know; SGD's fused kernel is capturable as it is).

    With ``optim.lr_batch_size`` every group's rate is scaled linearly to the batch size (``config.lr_scale``), so
    a recipe keeps its meaning at another batch size; pair a large batch with ``schedule.warmup_epochs``.
    """
    optim = config.optim
    scale = config.lr_scale
    groups: list[dict[str, Any]] = [{"params": list(student.parameters()), "name": "student", "lr": optim.lr * scale}]
    frozen_epochs = [0.0]
    for group in method_groups:
        group = dict(group)
        frozen_epochs.append(float(group.pop("frozen_epochs", 0.0)))
        ratio = float(group.pop("lr_ratio", 1.0))
        groups.append({**group, "lr": optim.lr * scale * ratio})
    # On CUDA the fused kernels: one launch per step, and a learning rate that may live on the device (CUDA graphs).
    fused = next(student.parameters()).device.type == "cuda"
    optimizer: torch.optim.Optimizer
    if optim.name == "sgd":
        optimizer = torch.optim.SGD(groups, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay,
                                    nesterov=optim.nesterov, fused=fused or None)  # fmt: skip
    else:
        optimizer = torch.optim.AdamW(groups, lr=optim.lr, weight_decay=optim.weight_decay, fused=fused or None,
                                      capturable=capturable)  # fmt: skip
    schedule = schedule or config.schedule
    epochs = config.train.epochs
    factors = [group_schedule(schedule, epochs, steps_per_epoch, frozen) for frozen in frozen_epochs]
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factors)


def optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's state dict with plain learning rates (a 0-dim device tensor under CUDA graphs), so a
    checkpoint resumes the same on any device, with or without CUDA graphs (see ``load_optimizer_state``)."""
    state = optimizer.state_dict()
    for group in state["param_groups"]:
        group["lr"] = float(group["lr"])
    return state


IMPLEMENTATION_FLAGS = ("fused", "foreach", "capturable")


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """Load a checkpoint's optimizer state, keeping this machine's implementation flags (fused, foreach,
    capturable): torch would bring back the saving machine's, and e.g. a run started on the CPU would then resume
    on CUDA with an optimizer that cannot be captured. torch places the state (AdamW's step) by these flags."""
    saved = {**saved, "param_groups": [dict(group) for group in saved["param_groups"]]}
    for saved_group, group in zip(saved["param_groups"], optimizer.param_groups, strict=True):
        saved_group.update({key: group[key] for key in IMPLEMENTATION_FLAGS if key in group})
    optimizer.load_state_dict(saved)
