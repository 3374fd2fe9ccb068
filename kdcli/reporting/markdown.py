"""``report.md``: the report for people, with its training curves (kdcli.reporting.charts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdcli.io.files import atomic_write_text
from kdcli.records import EpochRecord
from kdcli.reporting.charts import line_chart
from kdcli.reporting.report import Report

DIAGNOSTIC_LABELS = {
    "target_top1": "top-1 of the target the student learns from (%)",
    "adapted_top1": "top-1 of the adapted teacher (%)",
    "teacher_entropy": "teacher entropy at T (nats)",
    "target_entropy": "target entropy at T (nats)",
    "target_normalized_entropy": "target entropy at T over its maximum, H_T / ln C",
    "student_entropy": "student entropy at T (nats)",
    "sharpness_gap": "sharpness gap, target − student (logsumexp(z/T))",
    "teacher_sharpness_gap": "sharpness gap, teacher − student",
}
"""What report.md calls each diagnostic of the built-in methods (``EpochRecord.diagnostics``); a plugin's own are
listed under their names."""


def _fmt_share(fraction: float | None) -> str:
    """A share of the training time as a percentage, with what it means when the data path sets the pace."""
    if fraction is None:
        return "–"
    told = f"{100 * fraction:.0f} %"
    return told + " — the data path, not the model, set the pace" if fraction >= 0.5 else told


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int) and value >= 10_000:
        return f"{value:,}"
    return str(value)


def _diagnostics(history: list[EpochRecord]) -> list[str]:
    first, last = history[0].diagnostics, history[-1].diagnostics
    keys = [k for k in DIAGNOSTIC_LABELS if k in first] + [k for k in first if k not in DIAGNOSTIC_LABELS]
    if not keys:
        return []
    lines = [
        "## Method diagnostics",
        "",
        "On the evaluation split after each epoch (metrics.jsonl has every epoch).",
        "",
    ]
    lines += [f"| | epoch 1 | epoch {len(history)} |", "|---|---|---|"]
    lines += [f"| {DIAGNOSTIC_LABELS.get(k, k)} | {first[k]:.3f} | {last.get(k, float('nan')):.3f} |" for k in keys]
    warned = [r for r in history if r.target_warning is not None]
    if warned:
        epochs = ", ".join(str(r.epoch) for r in warned)
        lines += [
            "",
            f"**Warning:** the target the student learns from went bad in epochs {epochs} "
            f"(first: {warned[0].target_warning}).",
        ]
    return [*lines, "", "![diagnostics](diagnostics.png)", ""]


def _transform(report: Report) -> list[str]:
    transform = report.student.transform
    if transform is None:
        return []
    options = ", ".join(f"{k}={v}" for k, v in transform.options.items())
    macs = f"{report.student.macs / 1e6:.1f} M"
    return [
        f"## Student transform: {transform.name}" + (f" ({options})" if options else ""),
        "",
        "| student | parameters | MACs |",
        "|---|---|---|",
        f"| plain | {transform.parameters_plain:,} | {transform.macs_plain / 1e6:.1f} M |",
        f"| transformed (exported) | {report.student.parameters:,} | {macs} |",
        f"| same structure, no shared weights | {transform.parameters_unshared:,} | {macs} |",
        "",
    ]


def markdown(report: Report, method_sections: list[str]) -> str:
    final, student, teacher, timing = report.final, report.student, report.teacher, report.timing
    config = report.config
    title = f"{report.kind}: {student.arch}" + (f" from {teacher.arch} ({report.method})" if teacher else "")
    lines = [
        f"# kdcli run — {title}",
        "",
        f"kdcli {report.kdcli_version}, {report.created}, device {report.environment.device}"
        + (f" ({report.environment.precision})" if report.environment.precision else "")
        + f", data `{config['data']['name']}`, {final.epochs} epoch{'' if final.epochs == 1 else 's'}, "
        f"seed {config['train']['seed']}.",
        "",
        "| | value |",
        "|---|---|",
        f"| top-1, last epoch (test) | {_fmt(final.last_top1)} % |",
        f"| top-5, last epoch (test) | {_fmt(final.last_top5)} % |",
    ]
    if final.best_epoch is not None:
        lines.append(f"| top-1 at the best-on-val epoch ({final.best_epoch}) | {_fmt(final.best_top1)} % |")
    lines += [
        f"| highest test top-1 over epochs (optimistic) | {_fmt(final.max_test_top1)} % |",
        f"| NLL / ECE, last epoch | {_fmt(final.last_nll, 3)} / {_fmt(final.last_ece)} % |",
        f"| student parameters / MACs | {_fmt(student.parameters)} / {student.macs / 1e6:.1f} M |",
        f"| student file | {student.file_bytes / 1e6:.2f} MB |",
        f"| parameters training adds (not exported) | {_fmt(student.extra_training_parameters)} |",
        f"| seconds per epoch / images per second | {timing.seconds_per_epoch:.2f} / {timing.images_per_second:.0f} |",
        f"| of the training time, waiting for data | {_fmt_share(timing.loader_fraction)} |",
        f"| wall time | {timing.wall_seconds:.1f} s |",
    ]
    if teacher:
        lines += [
            "",
            f"Teacher check (before distilling): `{teacher.arch}`, {_fmt(teacher.parameters)} parameters, "
            f"top-1 {teacher.top1:.2f} % / top-5 {teacher.top5:.2f} % on {teacher.split}"
            + (f", SHA-256 `{teacher.sha256[:16]}…`." if teacher.sha256 else "."),
        ]
    lines += ["", "![accuracy](accuracy.png)", "", "![loss](loss.png)", ""]
    lines += _diagnostics(report.epochs)
    lines += _transform(report)
    lines += method_sections
    lines += ["## Epochs", ""]
    columns = [
        c
        for c in ("epoch", "lr", "train_loss", "train_top1", "val_top1", "test_top1", "seconds")
        if c in report.epochs[0].flat()
    ]
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for record in report.epochs:
        flat = record.flat()
        lines.append("| " + " | ".join(_fmt(flat[c], 4 if c in ("lr", "train_loss") else 2) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def write_reports(run_dir: Path, report: Report, method_sections: list[str]) -> None:
    """report.json, report.md and its charts (accuracy.png, loss.png, diagnostics.png)."""
    history = report.epochs
    accuracy = {"train top-1": [r.train_top1 for r in history]}
    for split in ("val", "test"):
        if history[0].split(split) is not None:
            accuracy[f"{split} top-1"] = [metrics.top1 for r in history if (metrics := r.split(split)) is not None]
    losses = {name: [r.train_losses.get(name, float("nan")) for r in history] for name in history[0].train_losses}
    line_chart(run_dir / "accuracy.png", accuracy, "top-1 accuracy", "%")
    line_chart(run_dir / "loss.png", losses, "training losses (weighted terms and their sum)", "loss")
    keys = ("teacher_entropy", "target_entropy", "student_entropy")
    entropies = {
        k.replace("_", " "): [r.diagnostics.get(k, float("nan")) for r in history]
        for k in keys
        if k in history[0].diagnostics
    }
    if entropies:
        line_chart(run_dir / "diagnostics.png", entropies, "entropy at the method's temperature", "nats")
    atomic_write_text(run_dir / "report.json", report.to_json())
    atomic_write_text(run_dir / "report.md", markdown(report, method_sections))
