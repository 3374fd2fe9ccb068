"""The optimizer over the student and a method's own parts, and the step-wise learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import nn

from kdcli.config import RunConfig, ScheduleConfig
from kdcli.interfaces import ParamGroup


def annealing_cos(start: float, end: float, fraction: float) -> float:
    """From ``start`` at ``fraction`` 0 to ``end`` at 1 along half a cosine (torch's OneCycleLR ``_annealing_cos``)."""
    return end + (start - end) / 2.0 * (math.cos(math.pi * fraction) + 1.0)


def onecycle_phase(schedule: ScheduleConfig, step: int, steps_per_epoch: int, epochs: int) -> tuple[bool, float]:
    """Whether ``step`` is in the one-cycle's warm-up, and how far through its phase it is (0 → 1), counted in steps
    exactly as torch's OneCycleLR counts them (the warm-up ends at step ``pct_start × total − 1``)."""
    total = epochs * steps_per_epoch
    peak = schedule.warmup(epochs) * steps_per_epoch - 1
    if step <= peak:
        return True, step / peak if peak > 0 else 1.0
    return False, min(1.0, (step - peak) / max(total - 1 - peak, 1e-9))


def lr_factor(schedule: ScheduleConfig, step: int, steps_per_epoch: int, epochs: int) -> float:
    """The multiplier of each group's base learning rate at optimizer step ``step`` (a step-wise schedule).

    ``step`` drops by ``gamma`` at each milestone epoch (RepDistiller's MultiStepLR); ``cosine`` anneals to
    ``final_factor``; both warm up linearly from 1 % of the rate over ``schedule.warmup(epochs)`` epochs.
    ``onecycle`` is torch's OneCycleLR (two phases, cosine both ways, ``div_factor`` 25, ``final_div_factor`` 1e4),
    step for step: from 1/25 of the rate up to the rate over the warm-up, then down to 1/25e4 of it.
    """
    if schedule.name == "onecycle":
        warming, fraction = onecycle_phase(schedule, step, steps_per_epoch, epochs)
        return annealing_cos(1 / 25, 1.0, fraction) if warming else annealing_cos(1.0, 1 / 25e4, fraction)
    epoch = step / steps_per_epoch
    warmup = schedule.warmup(epochs)
    if warmup > 0 and epoch < warmup:
        return max(epoch / warmup, 0.01)
    if schedule.name == "constant":
        return 1.0
    if schedule.name == "step":
        return float(schedule.gamma ** sum(1 for m in schedule.milestones if int(epoch) >= m))
    progress = min(1.0, (epoch - warmup) / max(epochs - warmup, 1e-9))
    return schedule.final_factor + (1.0 - schedule.final_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def momentum_at(schedule: ScheduleConfig, step: int, steps_per_epoch: int, epochs: int) -> float:
    """SGD's momentum at ``step`` under ``cycle_momentum``: torch's OneCycleLR cycle, ``max_momentum`` while the rate
    is low and ``base_momentum`` at its peak (Smith 2018, "A disciplined approach to neural network
    hyper-parameters"), so the step ``lr / (1 − momentum)`` swings less than the rate alone."""
    warming, fraction = onecycle_phase(schedule, step, steps_per_epoch, epochs)
    low, high = schedule.base_momentum, schedule.max_momentum
    return annealing_cos(high, low, fraction) if warming else annealing_cos(low, high, fraction)


class StepSchedule(torch.optim.lr_scheduler.LambdaLR):
    """torch's LambdaLR over each group's factor, stepped once per optimizer step, that also sets SGD's momentum
    when the schedule cycles it. The factors and the momentum are plain functions of the step: a checkpoint holds
    only the step (``last_epoch``), and a resumed run continues on the same curve."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        factors: list[Callable[[int], float]],
        momentum: Callable[[int], float] | None = None,
    ) -> None:
        self.momentum = momentum  # before LambdaLR's own first step, which sets step 0's values
        super().__init__(optimizer, factors)

    def step(self, epoch: int | None = None) -> None:
        super().step(epoch)
        if self.momentum is not None:
            value = self.momentum(self.last_epoch)
            for group in self.optimizer.param_groups:
                group["momentum"] = value

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.pop("momentum", None)
        return state


def group_schedule(
    schedule: ScheduleConfig, epochs: int, steps_per_epoch: int, frozen_epochs: float = 0.0
) -> Callable[[int], float]:
    """One parameter group's learning-rate factor at a step: the run's schedule, or 0 in the group's first
    ``frozen_epochs`` (a transform kept frozen while the student is still random). A rate of 0 leaves the parameters
    exactly unchanged with SGD and AdamW alike, and keeps one optimizer, one step and one CUDA graph. A plain
    function, so the scheduler keeps it out of the checkpoint."""

    def factor(step: int) -> float:
        return 0.0 if step / steps_per_epoch < frozen_epochs else lr_factor(schedule, step, steps_per_epoch, epochs)

    return factor


def make_optimizer(
    config: RunConfig,
    student: nn.Module,
    method_groups: list[ParamGroup],
    steps_per_epoch: int,
    capturable: bool = False,
    schedule: ScheduleConfig | None = None,
) -> tuple[torch.optim.Optimizer, StepSchedule]:
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
        frozen_epochs.append(group.frozen_epochs)
        groups.append(
            {
                "params": group.params,
                "name": group.name,
                "weight_decay": group.weight_decay,
                "lr": optim.lr * scale * group.lr_ratio,
            }
        )
    # On CUDA the fused kernels: one launch per step, and a learning rate that may live on the device (CUDA graphs).
    fused = next(student.parameters()).device.type == "cuda"
    optimizer: torch.optim.Optimizer
    if optim.name == "sgd":
        optimizer = torch.optim.SGD(
            groups,
            lr=optim.lr,
            momentum=optim.momentum,
            weight_decay=optim.weight_decay,
            nesterov=optim.nesterov,
            fused=fused or None,
        )
    else:
        optimizer = torch.optim.AdamW(
            groups, lr=optim.lr, weight_decay=optim.weight_decay, fused=fused or None, capturable=capturable
        )
    schedule = schedule or config.schedule
    epochs = config.train.epochs
    factors = [group_schedule(schedule, epochs, steps_per_epoch, frozen) for frozen in frozen_epochs]
    momentum = partial(momentum_at, schedule, steps_per_epoch=steps_per_epoch, epochs=epochs)
    return optimizer, StepSchedule(optimizer, factors, momentum if schedule.cycle_momentum else None)


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
