"""Typed records, a leaf module (pydantic only) every layer may use: the bases of kdcli's records and settings, and the
record of one epoch. The engine builds an ``EpochRecord``; the progress line, report.json, metrics.jsonl and
report.md read it by attribute, so a renamed figure is an error where it is read, not a silently missing row.

On disk it stays one flat JSON object per epoch, as every kdcli version wrote it (``EpochRecord.flat``): ``epoch``,
``lr``, ``train_<term>`` for the mean of each loss term (``train_loss`` the total), ``train_top1``, ``seconds``,
``images_per_second``, ``<split>_<metric>`` for the validation and test splits, ``diag_<name>`` for the method's
diagnostics, and ``target_warning`` where the target guard fired. ``EpochRecord.model_validate`` reads that form back.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_serializer, model_validator


class Record(BaseModel):
    """Base of kdcli's typed records (reports, results, sections): an unknown key is an error, not a silent drop."""

    model_config = ConfigDict(extra="forbid")


def _leaf_types(annotation: Any) -> set[Any]:
    """The types a field's annotation admits, through ``Annotated``, unions, ``Literal`` and containers."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return {type(value) for value in typing.get_args(annotation)}
    if origin is Annotated:
        return _leaf_types(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType) or origin in (list, tuple, set, frozenset, dict):
        return set().union(*(_leaf_types(arg) for arg in typing.get_args(annotation) if arg is not Ellipsis))
    return {annotation}


def _holds_a_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, list | tuple | set | frozenset):
        return any(_holds_a_bool(item) for item in value)
    return isinstance(value, dict) and any(_holds_a_bool(item) for item in value.values())


def no_bool_for_a_number(model: type[BaseModel], info: ValidationInfo, value: Any) -> Any:
    """``value`` unless it is (or holds) a boolean for a field of numbers: pydantic would take ``true`` as 1, so a
    YAML ``epochs: true`` would train one epoch. Fields that admit a boolean (or anything) are left alone; numbers
    written as strings ("1e-3", which PyYAML reads as a string) stay accepted."""
    field = model.model_fields.get(info.field_name or "")
    if field is None or not _holds_a_bool(value):
        return value
    admitted = _leaf_types(field.annotation)
    if admitted & {int, float} and not admitted & {bool, Any, object}:
        raise ValueError("expected a number, not a boolean (true/false)")
    return value


class Settings(Record):
    """Base of what a user sets (configuration sections, a method's options): besides a record's strictness, numbers
    are finite and a boolean is not a number."""

    model_config = ConfigDict(allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        return no_bool_for_a_number(cls, info, value)


SPLITS = ("val", "test")
METRICS = ("top1", "top5", "nll", "ece")


class SplitMetrics(Record):
    """The student on one held-out split: top-1 and top-5 (%), mean NLL (nats), ECE (%)."""

    top1: float
    top5: float
    nll: float
    ece: float


class EpochRecord(Record):
    """One epoch of a run."""

    epoch: int
    """1 for the first epoch."""
    lr: float
    """The student's learning rate at the start of the epoch."""
    train_losses: dict[str, float]
    """Mean of each loss term over the epoch, already weighted; ``loss`` is their sum."""
    train_top1: float
    seconds: float = 0.0
    loader_seconds: float | None = None
    """Of ``seconds``, the time the training loop waited for its next batch (None in reports before 0.2.0)."""
    images_per_second: float = 0.0
    val: SplitMetrics | None = None
    test: SplitMetrics | None = None
    diagnostics: dict[str, float] = Field(default_factory=dict)
    """The method's per-example diagnostics on the evaluation split, averaged (``Method.diagnostics``)."""
    target_warning: str | None = None

    @property
    def train_loss(self) -> float:
        return self.train_losses["loss"]

    def split(self, name: str) -> SplitMetrics | None:
        """``val`` or ``test``; ``train`` has only a top-1 (``train_top1``)."""
        return self.val if name == "val" else self.test if name == "test" else None

    def flat(self) -> dict[str, Any]:
        """The record as metrics.jsonl and report.json hold it."""
        flat: dict[str, Any] = {"epoch": self.epoch, "lr": self.lr}
        flat |= {f"train_{term}": value for term, value in self.train_losses.items()}
        flat |= {"train_top1": self.train_top1, "seconds": self.seconds}
        if self.loader_seconds is not None:
            flat["loader_seconds"] = self.loader_seconds
        flat["images_per_second"] = self.images_per_second
        for name in SPLITS:
            metrics = self.split(name)
            if metrics is not None:
                flat |= {f"{name}_{key}": value for key, value in metrics.model_dump().items()}
        flat |= {f"diag_{name}": value for name, value in self.diagnostics.items()}
        if self.target_warning is not None:
            flat["target_warning"] = self.target_warning
        return flat

    @model_serializer(mode="plain")
    def _serialize(self) -> dict[str, Any]:
        return self.flat()

    @model_validator(mode="before")
    @classmethod
    def _from_flat(cls, data: Any) -> Any:
        """The flat form (``train_loss``, ``test_top1``, ``diag_*``) into fields; anything else as it is."""
        if not isinstance(data, dict) or "train_losses" in data:
            return data
        fields: dict[str, Any] = {}
        losses: dict[str, Any] = {}
        splits: dict[str, dict[str, Any]] = {}
        diagnostics: dict[str, Any] = {}
        for key, value in data.items():
            prefix, _, rest = str(key).partition("_")
            if key == "train_top1" or key in cls.model_fields:
                fields[key] = value
            elif prefix == "train" and rest:
                losses[rest] = value
            elif prefix in SPLITS and rest in METRICS:
                splits.setdefault(prefix, {})[rest] = value
            elif prefix == "diag" and rest:
                diagnostics[rest] = value
            else:
                fields[key] = value  # refused by extra="forbid", with its name
        return {**fields, "train_losses": losses, **splits, "diagnostics": diagnostics}
