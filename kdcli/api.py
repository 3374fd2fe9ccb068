"""The Python API; every CLI command is a thin call into these functions.

import kdcli
result = kdcli.distill({"teacher": {"checkpoint": "t.safetensors"}, "student": {"arch": "resnet8"},
                        "data": {"name": "embedded"}, "train": {"epochs": 2}})
print(result.report.final.last_top1)
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from kdcli.analysis.analyze import analyze as analyze_teacher
from kdcli.analysis.report import Analysis, check_analysis_out, write_analysis
from kdcli.config import DataConfig, RunConfig, resolve
from kdcli.conversion.export import ExportResult, default_output, export_model_file
from kdcli.conversion.importer import import_checkpoint
from kdcli.errors import UsageError, option
from kdcli.evaluation import EvalResult, EvalSummary, evaluate
from kdcli.interfaces import Reporter
from kdcli.io.model_file import ModelCard
from kdcli.reporting.compare import compare_runs, markdown_table
from kdcli.reporting.report import RunResult
from kdcli.reporting.verdict import verdict, verdict_lines
from kdcli.runtime.loading import open_model_file, resolve_checkpoint_path, resolve_device
from kdcli.sweeps import SweepResult, is_sweep, sweep_runs
from kdcli.sweeps import sweep as run_sweep
from kdcli.training.engine import execute, resume_config

__all__ = [
    "Analysis",
    "EvalResult",
    "EvalSummary",
    "ExportResult",
    "RunResult",
    "SweepResult",
    "analyze",
    "compare",
    "distill",
    "evaluate",
    "export",
    "import_checkpoint",
    "load_model",
    "markdown_table",
    "resume",
    "sweep",
    "train",
    "verdict_lines",
]


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
        raise UsageError(f"{option('lr')} must be a positive number, not {lr}")
    return execute(resume_config(run_dir), resume=True, run_dir=run_dir, reporter=reporter, resume_lr=lr)


def load_model(path: str | Path, device: str = "cpu") -> tuple[nn.Module, ModelCard]:
    """A kdcli model file as the plain timm module it holds (any student transform rebuilt from its metadata), in
    eval mode, with its card; the input normalization it expects is ``card.mean`` / ``card.std``."""
    wrapped, card = open_model_file(resolve_checkpoint_path(str(path)), resolve_device(device))
    assert card is not None  # load_model refuses files without metadata when no arch is given
    return wrapped.model, card


def analyze(
    teacher: str | Path,
    data: DataConfig | None = None,
    *,
    student: str | Path | None = None,
    split: str = "train",
    temperature: float = 4.0,
    ce_weight: float = 0.1,
    kd_weight: float = 0.9,
    device: str = "auto",
    batch_size: int | None = None,
    reporter: Reporter | None = None,
    out: str | Path | None = None,
    force: bool = False,
) -> Analysis:
    """What a trained teacher teaches (Tang et al. 2020): kdcli.analysis.analyze; with ``out``, also written there
    (analysis.json, analysis.md, figures; ``Analysis.written`` lists the files), ``out`` checked before any work:
    a new or empty folder, or a previous analysis (replaced); ``force`` writes beside other files."""
    if out is not None:
        check_analysis_out(Path(out), [Path(teacher), *([Path(student)] if student is not None else [])], force)
    analysis = analyze_teacher(
        teacher,
        data,
        student=student,
        split=split,
        temperature=temperature,
        ce_weight=ce_weight,
        kd_weight=kd_weight,
        device=device,
        batch_size=batch_size,
        reporter=reporter,
    )
    if out is not None:
        analysis.written = [str(path) for path in write_analysis(Path(out), analysis)]
    return analysis


def compare(
    run_dirs: Sequence[str | Path],
    reporter: Reporter | None = None,
    *,
    baseline: str = "vanilla",
    min_gain: float | None = None,
) -> dict[str, Any]:
    """One table over finished runs (kdcli.reporting.compare; a sweep's folder stands for its finished runs); a run
    given more than once is counted once, with a note to ``reporter``. Where ``baseline`` ran, ``verdict`` holds
    every arm's difference from it with a 95 % interval (kdcli.reporting.verdict); ``min_gain`` is its gate.
    ``markdown_table`` renders the table, ``verdict_lines`` the verdict."""
    expanded: list[str | Path] = []
    for run_dir in run_dirs:
        expanded += sweep_runs(Path(run_dir)) if is_sweep(Path(run_dir)) else [run_dir]
    summary = compare_runs(expanded, reporter or Reporter())
    if min_gain is not None or any(row["arm"] == baseline for row in summary["rows"]):
        summary["verdict"] = verdict(summary, baseline, min_gain)
    return summary


def sweep(
    config: RunConfig | dict[str, Any],
    methods: list[str],
    seeds: list[int],
    grid: dict[str, list[Any]] | None = None,
    *,
    jobs: int | None = None,
    threads: int | None = None,
    baseline: str = "vanilla",
    min_gain: float | None = None,
    reporter: Reporter | None = None,
) -> SweepResult:
    """Arms (``methods``: method names, ``student``, or recipe presets) × ``grid`` × ``seeds``, each a run from
    ``config`` into its own folder under ``output.dir``, ``jobs`` at a time; resumable; ends with the compare table and
    the verdict against ``baseline`` (kdcli.sweeps)."""
    return run_sweep(
        _as_config(config),
        methods,
        seeds,
        grid,
        jobs=jobs,
        threads=threads,
        baseline=baseline,
        min_gain=min_gain,
        reporter=reporter,
    )


def export(
    path: str | Path,
    format: str = "onnx",
    out: str | Path | None = None,
    opset: int | None = None,
    dynamic_batch: bool = False,
    force: bool = False,
) -> ExportResult:
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
        raise UsageError(
            f"{option('out', out)} names a folder; {option('format', 'onnx')} writes a file: give "
            f"{option('out')} a file path such as {Path(out) / 'model.onnx'}"
        )
    source = resolve_checkpoint_path(reference)
    if out is None and reference.startswith("kdcli:"):  # never write into the installed package
        out = default_output(Path(source.name), format)
    return export_model_file(source, format, Path(out) if out is not None else None, opset, dynamic_batch, force)
