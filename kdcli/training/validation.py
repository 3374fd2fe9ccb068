"""What the engine measures around training: the teacher before distilling, the student after each epoch with the
method's diagnostics, and the guard on the target the student learns from."""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor

from kdcli.errors import UsageError, option
from kdcli.interfaces import ModelOutput, Reporter
from kdcli.records import EpochRecord, SplitMetrics
from kdcli.reporting.report import TeacherCheck
from kdcli.runtime.distributed import all_reduce_sum, gather_rows
from kdcli.runtime.metrics import classification_metrics, count_macs, count_parameters, predict
from kdcli.training.run import Run

TARGET_TOP1_DROP = 5.0
"""Points of top-1 below the teacher's at which the target the student learns from is said to have drifted."""
TARGET_MAX_NORMALIZED_ENTROPY = 0.9
"""``H_T / ln C`` above which the target is said to be near uniform (label smoothing, not the teacher's knowledge)."""


def teacher_eval_outputs(run: Run) -> list[ModelOutput]:
    """The frozen teacher's outputs on the evaluation split, batch by batch, computed once per run: they cannot
    change, so the per-epoch diagnostics reuse them instead of running the teacher again."""
    assert run.teacher is not None
    if run.teacher_eval is None:
        outputs: list[ModelOutput] = []
        split = run.data.split(run.config.data.eval_split)
        predict(run.teacher.module.predict, split, run.autocast, lambda index, out, labels: outputs.append(out))
        run.teacher_eval = outputs
    return run.teacher_eval


def check_teacher(run: Run, reporter: Reporter) -> TeacherCheck:
    """Measure the teacher on the evaluation split before distilling, and say when it looks untrained."""
    assert run.teacher is not None
    split = run.config.data.eval_split
    logits = gather_rows(torch.cat([output.logits.float().cpu() for output in teacher_eval_outputs(run)]))
    labels = gather_rows(torch.cat([labels.cpu() for _, labels in run.data.split(split)]))
    bad = int((~torch.isfinite(logits)).any(dim=1).sum())
    if bad:  # NaN/inf weights: distilling would fail in the first epoch with advice (a lower rate) that cannot help
        where = run.teacher.path or run.teacher.arch
        raise UsageError(
            f"the teacher {where} gives non-finite outputs (NaN or inf) on {bad} of {len(logits)} {split} "
            "images: its weights are damaged; pass another teacher file"
        )
    metrics = classification_metrics(logits, labels)
    teacher = run.teacher.module
    check = TeacherCheck(
        arch=run.teacher.arch,
        split=split,
        sha256=run.teacher.sha256,
        path=str(run.teacher.path) if run.teacher.path else None,
        parameters=count_parameters(teacher.model),
        macs=count_macs(teacher.model, (teacher.in_chans, *(teacher.input_size or run.data.image_size))),
        **metrics,
    )
    chance = 100.0 / run.data.num_classes
    reporter.note(f"teacher {run.teacher.arch}: top-1 {metrics['top1']:.2f}% on {split}")
    fixed, data_size = run.teacher.module.input_size, run.data.image_size
    if fixed is not None and fixed != data_size:
        reporter.note(
            f"note: the teacher {run.teacher.arch} takes {fixed[0]}×{fixed[1]} images only: each batch is resized for "
            f"it from the data's {data_size[0]}×{data_size[1]} (bilinear); {option('data.image_size', fixed[0])} "
            "feeds it its own size"
        )
    if metrics["top1"] < 2 * chance:
        reporter.note(
            f"warning: the teacher is near chance ({metrics['top1']:.1f}% for {run.data.num_classes} classes); "
            "check that its weights, classes and normalization match this data"
        )
    return check


@torch.no_grad()
def evaluate_epoch(run: Run) -> tuple[dict[str, SplitMetrics], dict[str, float]]:
    """The student on the validation and test splits (by split name); on the evaluation split, with a teacher, also
    the method's diagnostics (averaged per example), from the same student pass and the cached teacher outputs. Under
    torchrun each process evaluates its shard and the predictions are gathered: every image counts once, as in one
    process."""
    run.student.eval()
    run.method.eval()
    splits: dict[str, SplitMetrics] = {}
    diagnostics: dict[str, float] = {}
    for split, loader in (("val", run.data.val), ("test", run.data.test)):
        if loader is None:
            continue
        with_teacher = run.teacher is not None and split == run.config.data.eval_split
        teacher_outputs = teacher_eval_outputs(run) if with_teacher else None
        sums: dict[str, Tensor] = {}
        diagnose = partial(_diagnose, run, teacher_outputs, sums) if teacher_outputs else None
        logits, labels = predict(run.student.outputs, loader, run.autocast, diagnose)
        splits[split] = SplitMetrics(**classification_metrics(gather_rows(logits), gather_rows(labels)))
        totals = all_reduce_sum(torch.stack(list(sums.values()))).tolist() if sums else []
        diagnostics.update({name: total / loader.num_samples for name, total in zip(sums, totals, strict=True)})
    return splits, diagnostics


def _diagnose(
    run: Run, teacher: list[ModelOutput], sums: dict[str, Tensor], index: int, student: ModelOutput, labels: Tensor
) -> None:
    """Add one evaluation batch's per-example diagnostics into ``sums`` (on the device)."""
    for name, value in run.method.diagnostics(student, teacher[index], labels).items():
        sums[name] = sums.get(name, torch.zeros((), device=run.device)) + value.float().sum()


def target_guard(record: EpochRecord, teacher_top1: float) -> str | None:
    """What is wrong with the target the student learns from at this epoch, or None: its top-1 on the evaluation
    split fell more than ``TARGET_TOP1_DROP`` points below the teacher's (a transform drifting toward the student),
    or its normalized entropy exceeds ``TARGET_MAX_NORMALIZED_ENTROPY`` (a target flattened toward uniform)."""
    problems = []
    top1 = record.diagnostics.get("target_top1")
    if top1 is not None and top1 < teacher_top1 - TARGET_TOP1_DROP:
        problems.append(f"its top-1 is {top1:.1f}%, {teacher_top1 - top1:.1f} points below the teacher's")
    normalized = record.diagnostics.get("target_normalized_entropy")
    if normalized is not None and normalized > TARGET_MAX_NORMALIZED_ENTROPY:
        problems.append(f"its entropy at T is {normalized:.2f} of the maximum (near uniform)")
    return "; ".join(problems) or None


def check_target(run: Run, record: EpochRecord, reporter: Reporter) -> None:
    """Record a target warning in the epoch's record, and say it on the epoch where it starts."""
    if run.teacher_check is None:
        return
    problem = target_guard(record, run.teacher_check.top1)
    if problem is None:
        return
    record.target_warning = problem
    if not (run.history and run.history[-1].target_warning is not None):
        if hasattr(run.method.options, "transform_lr_ratio"):  # a trainable teacher-side transform (pesf, skd)
            cause = (
                "a transform drifting to the student or to uniform (see `kdcli methods`: anchor_weight, "
                "transform_lr_ratio; temperature)"
            )
        else:
            cause = (
                f"the target is the teacher itself, so the teacher is near chance on this data or "
                f"{option('method.temperature')} flattens it"
            )
        reporter.note(
            f"warning: epoch {record.epoch}: the target the student learns from has gone bad: {problem}; {cause}"
        )
