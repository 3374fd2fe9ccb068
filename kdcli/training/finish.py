"""The end of a run: the student file(s) with their model card, and the report (kdcli.reporting); returns the
``RunResult`` the API hands back."""

from __future__ import annotations

import copy
import platform
import statistics
from datetime import datetime, timezone

import timm
import torch

from kdcli._version import __version__
from kdcli.config import dump
from kdcli.data import usable_cores
from kdcli.io.model_file import ModelCard, save_model
from kdcli.models.factory import create_model
from kdcli.reporting.markdown import write_reports
from kdcli.reporting.report import (
    Environment,
    Final,
    Report,
    RunResult,
    StudentSummary,
    TargetWarning,
    Timing,
    TransformCost,
)
from kdcli.runtime.acceleration import Acceleration
from kdcli.runtime.distributed import broadcast
from kdcli.runtime.metrics import count_macs, count_parameters
from kdcli.training.run import Run


def environment(device: torch.device, acceleration: Acceleration) -> Environment:
    return Environment(
        python=platform.python_version(),
        torch=torch.__version__,
        timm=timm.__version__,
        platform=platform.platform(),
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
        cuda=torch.version.cuda,
        cpu_threads=torch.get_num_threads(),
        cpu_cores=usable_cores(),
        precision=acceleration.precision,
        channels_last=acceleration.channels_last,
        compile=acceleration.compile,
        cuda_graphs=acceleration.cuda_graphs,
    )


def student_card(run: Run, metrics: dict[str, float]) -> ModelCard:
    transform = run.method.student_transform()
    return ModelCard(
        arch=str(run.student.arch),
        num_classes=run.data.num_classes,
        in_chans=run.student.in_chans,
        input_size=(run.student.in_chans, *run.data.image_size),
        mean=run.data.mean,
        std=run.data.std,
        dataset=run.data.name,
        classes=run.data.classes,
        method=run.config.method.name,
        teacher_arch=run.teacher.arch if run.teacher else None,
        teacher_sha256=run.teacher.sha256 if run.teacher else None,
        metrics=metrics,
        model_kwargs=run.student.model_kwargs,
        student_transform=transform,
    )


def transform_cost(run: Run) -> TransformCost | None:
    """A transformed student against the plain one, and against the same structure with no weights shared."""
    transform = run.method.student_transform()
    if transform is None:
        return None
    shape = (run.student.in_chans, *run.data.image_size)
    plain = create_model(
        str(run.config.student.arch), run.data.num_classes, run.student.in_chans, kwargs=run.student.model_kwargs
    )
    model = run.student.model
    return TransformCost(
        name=transform.name,
        options=transform.options,
        parameters_plain=count_parameters(plain),
        macs_plain=count_macs(plain, shape),
        parameters_unshared=sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False)),
    )


def build_report(run: Run, student: StudentSummary, wall_seconds: float) -> Report:
    history = run.history
    last = history[-1].test
    tests = [r.test.top1 for r in history if r.test is not None]
    best = run.best or {}
    final = Final(
        epochs=len(history),
        last_top1=last.top1 if last else None,
        last_top5=last.top5 if last else None,
        last_nll=last.nll if last else None,
        last_ece=last.ece if last else None,
        max_test_top1=max(tests) if tests else None,
        best_epoch=best.get("epoch"),
        best_val_top1=best.get("val_top1"),
        best_top1=best.get("test_top1"),
    )
    waited = [r.loader_seconds for r in history]
    timing = Timing(
        wall_seconds=wall_seconds,
        seconds_per_epoch=statistics.fmean(r.seconds for r in history),
        images_per_second=statistics.fmean(r.images_per_second for r in history),
        loader_fraction=(
            sum(w for w in waited if w is not None) / max(sum(r.seconds for r in history), 1e-9)
            if None not in waited
            else None
        ),
    )
    warnings = [TargetWarning(epoch=r.epoch, warning=r.target_warning) for r in history if r.target_warning]
    return Report(
        kdcli_version=__version__,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        kind="train" if run.config.method.name == "none" else "distill",
        method=run.config.method.name,
        environment=environment(run.device, run.acceleration),
        config=dump(run.config),
        teacher=run.teacher_check,
        student=student,
        final=final,
        timing=timing,
        target_warnings=warnings,
        method_report=run.method.report(),
        epochs=history,
    )


def finish(run: Run, wall_seconds: float) -> RunResult:
    """Export the student (and the best-on-val student), and write report.json and report.md: on rank 0, whose
    result every process returns."""
    if not run.place.is_main:
        result: RunResult = broadcast(None)
        return result
    last = run.history[-1].test
    final = {"last_top1": last.top1, "last_top5": last.top5} if last else {}
    student_path = run.run_dir / "student.safetensors"
    save_model(student_path, run.student.model, student_card(run, {k: v for k, v in final.items() if v is not None}))
    if run.best is not None:
        best_model = copy.deepcopy(run.student.model)  # keeps any shared structure (SPS) of the student
        best_model.load_state_dict(run.best["student"])
        metrics = {"test_top1": run.best["test_top1"], "val_top1": run.best["val_top1"]}
        save_model(run.run_dir / "student-best.safetensors", best_model, student_card(run, metrics))
    model = run.student.model
    student = StudentSummary(
        arch=str(run.student.arch),
        parameters=count_parameters(model),
        macs=count_macs(model, (run.student.in_chans, *run.data.image_size)),
        file_bytes=student_path.stat().st_size,
        extra_training_parameters=run.method.extra_parameter_count(),
        transform=transform_cost(run),
    )
    report = build_report(run, student, wall_seconds)
    write_reports(run.run_dir, report, run.method.report_sections())
    shared: RunResult = broadcast(RunResult(run.run_dir, report, student_path))
    return shared
