"""Strategy registry: built-in and third-party strategies, discovered through the entry-point group
``kdcli.strategies`` (an entry ``name = "package.module:StrategyClass"``)."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

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


def _load(entry: EntryPoint) -> type[Strategy]:
    strategy = entry.load()
    if not (isinstance(strategy, type) and issubclass(strategy, Strategy)):
        raise UsageError(f"entry point {entry.name!r} in {ENTRY_POINT_GROUP} is not a kdcli Strategy subclass")
    return strategy


def available_strategies() -> dict[str, type[Strategy]]:
    """Every registered strategy by name (``kdcli methods``); each plugin is imported."""
    return {entry.name: _load(entry) for entry in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)}


def get_strategy(name: str) -> type[Strategy]:
    """One strategy by name; only its own entry point is imported, so a broken plugin cannot break the others."""
    if name == Supervised.name:
        return Supervised
    entries = {entry.name: entry for entry in entry_points(group=ENTRY_POINT_GROUP)}
    if name not in entries:
        hint = did_you_mean(name, entries, n=1)
        raise UsageError(f"unknown method {name!r}; {hint}available: {', '.join(sorted(entries))}")
    return _load(entries[name])


__all__ = ["Strategy", "StrategyOptions", "Supervised", "TeacherOutput", "available_strategies", "get_strategy"]
