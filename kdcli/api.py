"""The Python API; every CLI command is a thin call into these functions.

import kdcli
result = kdcli.distill({"teacher": {"checkpoint": "t.safetensors"}, "student": {"arch": "resnet8"},
                        "data": {"name": "embedded"}, "train": {"epochs": 2}})
print(result.report.final.last_top1)
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, get_args

import torch
from torch import nn

from kdcli.analysis import analyze
from kdcli.config import DataName, RunConfig, TrainConfig, data_config, resolve
from kdcli.data import DataBundle, build_data
from kdcli.errors import UsageError
from kdcli.interfaces import Reporter
from kdcli.io.export import default_output, export_model_file
from kdcli.io.model_file import ModelCard
from kdcli.training.acceleration import resolve_acceleration
from kdcli.training.engine import execute, resume_config
from kdcli.training.export import RunResult
from kdcli.training.loading import check_channels, open_model_file, resolve_checkpoint_path, resolve_device
from kdcli.training.metrics import classification_metrics, count_macs, count_parameters, predict

EVAL_SCHEMA = "kdcli.eval/1"

__all__ = ["analyze", "distill", "evaluate", "export", "load_model", "resume", "train"]


def _as_config(config: RunConfig | dict[str, Any]) -> RunConfig:
    return config if isinstance(config, RunConfig) else resolve([("python", config)]).config


def distill(config: RunConfig | dict[str, Any], reporter: Reporter | None = None, force: bool = False) -> RunResult:
    """Distill a student from a frozen teacher with the configured method (``method.name``). ``output.dir`` must be
    new, empty or a run stopped before its first checkpoint; ``force`` writes beside other files there (never over
    the run's own input weights)."""
    config = _as_config(config)
    if config.method.name == "none":
        raise UsageError("method 'none' trains without a teacher: use kdcli train")
    return execute(config, reporter=reporter, force=force)


def train(config: RunConfig | dict[str, Any], reporter: Reporter | None = None, force: bool = False) -> RunResult:
    """Train a model alone (a teacher, or the student-alone baseline): cross-entropy with the labels. ``force``: as
    for ``distill``."""
    config = _as_config(config)
    if config.teacher.arch or config.teacher.checkpoint:
        raise UsageError("kdcli train trains without a teacher; use kdcli distill to learn from one")
    config = config.model_copy(update={"method": config.method.model_validate({"name": "none"})})
    return execute(config, reporter=reporter, force=force)


def resume(run_dir: str | Path, reporter: Reporter | None = None, lr: float | None = None) -> RunResult:
    """Continue a stopped run from its last checkpoint, with the configuration it was started with; ``lr`` continues
    with another learning rate (after a non-finite loss), every group keeping its ratio and schedule position."""
    run_dir = Path(run_dir)
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise UsageError(f"--lr must be a positive number, not {lr}")
    return execute(resume_config(run_dir), resume=True, run_dir=run_dir, reporter=reporter, resume_lr=lr)


def load_model(path: str | Path, device: str = "cpu") -> tuple[nn.Module, ModelCard]:
    """A kdcli model file as the plain timm module it holds (any student transform rebuilt from its metadata), in
    eval mode, with its card; the input normalization it expects is ``card.mean`` / ``card.std``."""
    wrapped, card = open_model_file(resolve_checkpoint_path(str(path)), resolve_device(device))
    assert card is not None  # load_model refuses files without metadata when no arch is given
    return wrapped.model, card


def evaluate(
    paths: list[str | Path],
    data: str | None = None,
    data_dir: str | None = None,
    split: str = "test",
    teacher: str | Path | None = None,
    device: str = "auto",
    batch_size: int = 512,
    min_top1: float | None = None,
    train_subset: int | None = None,
    val_split: float = 0.0,
) -> dict[str, Any]:
    """Evaluate model files on a split: accuracy, NLL, calibration, agreement with a teacher, and cost.

    The data set defaults to the one recorded in each file's metadata. ``split="val"`` rebuilds a run's validation
    split from the same ``train_subset`` and ``val_split`` (both seeded with the default ``data.subset_seed``).
    With ``min_top1``, each result says whether it ``passed`` and the summary whether all did (the CLI exits 1
    when not).
    """
    if min_top1 is not None and not 0 <= min_top1 <= 100:  # NaN fails both comparisons, so it is refused too
        raise UsageError(f"--min-top1 is a top-1 in percent, between 0 and 100, not {min_top1}")
    torch_device = resolve_device(device)
    autocast = resolve_acceleration(TrainConfig(), torch_device).autocast(torch_device)
    teacher_predictions: dict[str, torch.Tensor] = {}
    bundles: dict[str, DataBundle] = {}
    results = []
    for raw_path in paths:
        path = Path(raw_path)
        wrapped, card = open_model_file(path, torch_device)
        assert card is not None
        data_name = data or card.dataset
        if data_name is None:
            raise UsageError(f"{path} does not record its data set; pass --data NAME")
        if data is None and data_name not in get_args(DataName):  # the file's word, not a flag the user gave
            raise UsageError(f"{path} records the data set {data_name!r}, which kdcli does not know; pass --data NAME "
                             f"({', '.join(get_args(DataName))})")  # fmt: skip
        if data_name not in bundles:  # files on the same data set share one loaded copy
            checked = data_config(name=data_name, dir=data_dir, train_subset=train_subset, val_split=val_split)
            bundles[data_name] = build_data(checked, torch_device, batch_size, batch_size, seed=0)
        bundle = bundles[data_name]
        if bundle.num_classes != card.num_classes:
            raise UsageError(f"{path} predicts {card.num_classes} classes but {data_name} has {bundle.num_classes}")
        check_channels(card.in_chans, bundle, str(path))
        loader = bundle.split(split)
        started = time.perf_counter()
        logits, labels = predict(wrapped, loader, autocast)
        seconds = time.perf_counter() - started
        result: dict[str, Any] = {
            "path": str(path),
            "arch": card.arch,
            "method": card.method,
            "dataset": data_name,
            "split": split,
            "samples": int(labels.numel()),
            **classification_metrics(logits, labels),
            "parameters": count_parameters(wrapped.model),
            "macs": count_macs(wrapped.model, tuple(card.input_size)),
            "file_bytes": path.stat().st_size,
            "images_per_second": labels.numel() / seconds,
        }
        if teacher is not None:
            key = f"{data_name}:{split}"
            if key not in teacher_predictions:
                teacher_model, teacher_card = open_model_file(Path(teacher), torch_device)
                if teacher_card is not None and teacher_card.num_classes != card.num_classes:
                    raise UsageError(f"the teacher {teacher} predicts {teacher_card.num_classes} classes but {path} "
                                     f"{card.num_classes}; agreement needs the same classes")  # fmt: skip
                teacher_predictions[key] = predict(teacher_model, loader, autocast)[0].argmax(1)
            result["teacher_agreement"] = 100.0 * float(logits.argmax(1).eq(teacher_predictions[key]).float().mean())
        if min_top1 is not None:
            result["passed"] = result["top1"] >= min_top1
        results.append(result)
    passed = all(r.get("passed", True) for r in results)
    return {"schema": EVAL_SCHEMA, "min_top1": min_top1, "passed": passed, "results": results}


def export(
    path: str | Path,
    format: str = "onnx",
    out: str | Path | None = None,
    opset: int | None = None,
    dynamic_batch: bool = False,
    force: bool = False,
) -> dict[str, Any]:
    """Export a kdcli model file (a path, or ``kdcli:NAME`` for a shipped one) for deployment; returns the summary.

    ``format="onnx"`` (the ``kdcli[onnx]`` extra): the student with its input normalization (the card's mean/std,
    grey images repeated for a three-channel model), so the ONNX model takes float32 images in [0, 1] of shape
    (N, C, H, W) and returns logits; batch 1, or any batch with ``dynamic_batch``; ``opset`` 18 or more (default:
    torch's). ``format="timm"``: a folder (``config.json``, ``model.safetensors``) that
    ``timm.create_model("local-dir:DIR", pretrained=True)`` loads (after ``import kdcli.models`` for zoo names); it
    takes normalized input. Either is checked before it is kept — ONNX Runtime's logits against PyTorch's, timm's
    rebuild against the file — and written atomically; the summary gives ``max_abs_diff`` and ``tolerance``.
    ``out`` defaults to ``FILE.onnx`` / ``FILE-timm/`` next to the file (in the current folder for ``kdcli:NAME``).
    It never replaces the source; without ``force`` it replaces only files kdcli exported (a previous export).
    Raises UsageError for a bad request (exit 2) and RunFailed when the check fails (exit 1; nothing is written).
    """
    reference = str(path)
    if format == "onnx" and out is not None and str(out).endswith(("/", os.sep)):  # Path("dir/") drops the slash
        raise UsageError(f"--out {out} names a folder; --format onnx writes a file: give --out a file path such as "
                         f"{Path(out) / 'model.onnx'}")  # fmt: skip
    source = resolve_checkpoint_path(reference)
    if out is None and reference.startswith("kdcli:"):  # never write into the installed package
        out = default_output(Path(source.name), format)
    return export_model_file(source, format, Path(out) if out is not None else None, opset, dynamic_batch, force)
