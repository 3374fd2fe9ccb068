"""``kdcli eval``: model files measured on a split — accuracy, NLL, calibration, agreement with a teacher, and cost —
with an optional top-1 gate for CI. The results are typed (``EvalResult``, ``EvalSummary``); the JSON document the CLI
prints is ``EvalSummary.document()``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from kdcli.config import DataConfig, evaluation_settings
from kdcli.data import DataBundle, build_data
from kdcli.errors import UsageError, option
from kdcli.io.model_file import require_card
from kdcli.records import Record
from kdcli.runtime.acceleration import resolve_acceleration
from kdcli.runtime.loading import check_channels, data_of_file, open_model_file, resolve_device
from kdcli.runtime.metrics import classification_metrics, count_macs, count_parameters, predict

EVAL_SCHEMA = "kdcli.eval/1"


class EvalResult(Record):
    """One model file on one split. ``teacher_agreement`` (%) only with a teacher, ``passed`` only with a gate."""

    path: str
    arch: str
    method: str | None
    dataset: str
    split: str
    samples: int
    top1: float
    top5: float
    nll: float
    ece: float
    parameters: int
    macs: int
    file_bytes: int
    images_per_second: float
    teacher_agreement: float | None = None
    passed: bool | None = None


class EvalSummary(Record):
    """Every file's result, the gate (``min_top1``) and whether all passed it (always true without a gate)."""

    min_top1: float | None
    passed: bool
    results: list[EvalResult]

    def document(self) -> dict[str, Any]:
        """The ``kdcli.eval/1`` JSON document: a result leaves out the figures it was not asked for."""
        optional = ("teacher_agreement", "passed")
        results = [
            {key: value for key, value in result.model_dump().items() if key not in optional or value is not None}
            for result in self.results
        ]
        return {"schema": EVAL_SCHEMA, "min_top1": self.min_top1, "passed": self.passed, "results": results}


def evaluate(
    paths: list[str | Path],
    data: DataConfig | None = None,
    *,
    split: str = "test",
    teacher: str | Path | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    min_top1: float | None = None,
) -> EvalSummary:
    """Evaluate model files on ``split`` of ``data``; a ``data`` whose ``name`` was not set (``DataConfig(dir=...)``),
    or no ``data``, means each file's recorded data set. ``split="val"`` rebuilds a run's validation split from the
    same ``train_subset``, ``val_split`` and ``subset_seed``. With ``min_top1`` each result says whether it
    ``passed`` and the summary whether all did (the CLI exits 1 when not)."""
    data = data or DataConfig()
    for path in [*paths, *([teacher] if teacher is not None else [])]:  # each readable, with metadata, before any work
        require_card(Path(path), "kdcli eval")
    if min_top1 is not None and not 0 <= min_top1 <= 100:  # NaN fails both comparisons, so it is refused too
        raise UsageError(f"{option('min_top1')} is a top-1 in percent, between 0 and 100, not {min_top1}")
    torch_device = resolve_device(device)
    acceleration = resolve_acceleration(evaluation_settings(batch_size), torch_device)
    autocast = acceleration.autocast(torch_device)
    batch = acceleration.eval_batch_size
    teacher_predictions: dict[str, torch.Tensor] = {}
    bundles: dict[str, DataBundle] = {}
    results = []
    for raw_path in paths:
        path = Path(raw_path)
        wrapped, card = open_model_file(path, torch_device, channels_last=acceleration.channels_last)
        assert card is not None
        config = data_of_file(data, card, path)
        data_name = config.name
        if data_name not in bundles:  # files on the same data set share one loaded copy
            bundles[data_name] = build_data(config, torch_device, batch, batch, seed=0)
        bundle = bundles[data_name]
        if bundle.num_classes != card.num_classes:
            raise UsageError(f"{path} predicts {card.num_classes} classes but {data_name} has {bundle.num_classes}")
        check_channels(card.in_chans, bundle, str(path))
        loader = bundle.split(split)
        started = time.perf_counter()
        logits, labels = predict(wrapped, loader, autocast)
        seconds = time.perf_counter() - started
        agreement = None
        if teacher is not None:
            key = f"{data_name}:{split}"
            if key not in teacher_predictions:
                teacher_model, teacher_card = open_model_file(
                    Path(teacher), torch_device, channels_last=acceleration.channels_last
                )
                if teacher_card is not None and teacher_card.num_classes != card.num_classes:
                    raise UsageError(
                        f"the teacher {teacher} predicts {teacher_card.num_classes} classes but {path} "
                        f"{card.num_classes}; agreement needs the same classes"
                    )
                teacher_predictions[key] = predict(teacher_model, loader, autocast)[0].argmax(1)
            agreement = 100.0 * float(logits.argmax(1).eq(teacher_predictions[key]).float().mean())
        metrics = classification_metrics(logits, labels)
        results.append(
            EvalResult(
                path=str(path),
                arch=card.arch,
                method=card.method,
                dataset=data_name,
                split=split,
                samples=int(labels.numel()),
                **metrics,
                parameters=count_parameters(wrapped.model),
                macs=count_macs(wrapped.model, tuple(card.input_size)),
                file_bytes=path.stat().st_size,
                images_per_second=labels.numel() / seconds,
                teacher_agreement=agreement,
                passed=None if min_top1 is None else metrics["top1"] >= min_top1,
            )
        )
    return EvalSummary(min_top1=min_top1, passed=all(r.passed is not False for r in results), results=results)
