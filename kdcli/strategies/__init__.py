"""Strategy registry: built-in and third-party strategies, discovered through the entry-point group
``kdcli.strategies`` (an entry ``name = "package.module:StrategyClass"``)."""

from __future__ import annotations

from importlib.metadata import entry_points

import torch.nn.functional as F
from torch import Tensor

from kdcli.errors import UsageError
from kdcli.strategies.base import Strategy, StrategyOptions, TeacherOutput
from kdcli.suggest import did_you_mean

ENTRY_POINT_GROUP = "kdcli.strategies"


class Supervised(Strategy):
    """No teacher: cross-entropy with the labels. ``kdcli train`` uses it for teachers and student-alone baselines."""

    name = "none"
    summary = "no distillation: cross-entropy with the labels (kdcli train)"
    needs_teacher = False

    def forward(self, student_logits: Tensor, teacher: TeacherOutput | None, labels: Tensor) -> dict[str, Tensor]:
        return {"ce": F.cross_entropy(student_logits.float(), labels)}


def available_strategies() -> dict[str, type[Strategy]]:
    """Every registered strategy by name (``kdcli methods``)."""
    found: dict[str, type[Strategy]] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        strategy = entry.load()
        if not (isinstance(strategy, type) and issubclass(strategy, Strategy)):
            raise UsageError(f"entry point {entry.name!r} in {ENTRY_POINT_GROUP} is not a kdcli Strategy subclass")
        found[entry.name] = strategy
    return dict(sorted(found.items()))


def get_strategy(name: str) -> type[Strategy]:
    if name == Supervised.name:
        return Supervised
    strategies = available_strategies()
    if name not in strategies:
        hint = did_you_mean(name, strategies, n=1)
        raise UsageError(f"unknown method {name!r}; {hint}available: {', '.join(strategies)}")
    return strategies[name]


__all__ = ["Strategy", "StrategyOptions", "Supervised", "TeacherOutput", "available_strategies", "get_strategy"]
