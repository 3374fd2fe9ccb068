"""Run reports: ``report.json`` (versioned schema), ``report.md`` and its SVG training curves.

"Best" is chosen on the validation split (``--val-split``), never on test. Without a validation split the report
gives the last epoch, plus the highest test top-1 over epochs under its own name (``max_test_top1``): that is the
figure mdistiller's tables report, and it is optimistic, so it is never called "best".
"""

from __future__ import annotations

import json
import platform
import statistics
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import timm
import torch

from kdcli import __version__
from kdcli.checkpoint import atomic_write_text
from kdcli.config import RunConfig, dump

REPORT_SCHEMA = "kdcli.report/1"


def environment(device: torch.device) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "platform": platform.platform(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
        "cuda": torch.version.cuda,
        "cpu_threads": torch.get_num_threads(),
    }


def build_report(
    config: RunConfig,
    history: list[dict[str, Any]],
    student: dict[str, Any],
    teacher: dict[str, Any] | None,
    best: dict[str, Any] | None,
    wall_seconds: float,
    device: torch.device,
) -> dict[str, Any]:
    last = history[-1]
    tests = [r["test_top1"] for r in history if "test_top1" in r]
    final: dict[str, Any] = {
        "epochs": len(history),
        "last_top1": last.get("test_top1"),
        "last_top5": last.get("test_top5"),
        "last_nll": last.get("test_nll"),
        "last_ece": last.get("test_ece"),
        "max_test_top1": max(tests) if tests else None,
    }
    if best is not None:
        final.update(best_epoch=best["epoch"], best_val_top1=best["val_top1"], best_top1=best["test_top1"])
    return {
        "schema": REPORT_SCHEMA,
        "kdcli_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "kind": "train" if config.method.name == "none" else "distill",
        "method": config.method.name,
        "environment": environment(device),
        "config": dump(config),
        "teacher": teacher,
        "student": student,
        "final": final,
        "timing": {
            "wall_seconds": wall_seconds,
            "seconds_per_epoch": statistics.fmean(r["seconds"] for r in history),
            "images_per_second": statistics.fmean(r["images_per_second"] for r in history),
        },
        "target_warnings": [
            {"epoch": r["epoch"], "warning": r["target_warning"]} for r in history if "target_warning" in r
        ],
        "epochs": history,
    }


def line_chart_svg(series: dict[str, list[float]], title: str, width: int = 560, height: int = 240) -> str:
    """A small self-contained SVG line chart of per-epoch series (no plotting dependency)."""
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    values = [v for points in series.values() for v in points]
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    left, right, top, bottom = 50, 10, 28, 30
    epochs = max(len(points) for points in series.values())

    def x(i: int) -> float:
        return left + (width - left - right) * (i / max(epochs - 1, 1))

    def y(v: float) -> float:
        return top + (height - top - bottom) * (1 - (v - low) / span)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
        'font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="16" font-size="13">{title}</text>',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="#999"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#999"/>',
        f'<text x="4" y="{y(high) + 4:.1f}">{high:.3g}</text><text x="4" y="{y(low) + 4:.1f}">{low:.3g}</text>',
        f'<text x="{left}" y="{height - 10}">epoch 1</text>'
        f'<text x="{width - right - 50}" y="{height - 10}">epoch {epochs}</text>',
    ]
    for index, (name, points) in enumerate(series.items()):
        color = colors[index % len(colors)]
        path = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(points))
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.8" points="{path}"/>')
        parts.append(f'<text x="{left + 170 + 110 * index}" y="16" fill="{color}">{name}</text>')  # legend: header
    parts.append("</svg>")
    return "\n".join(parts)


DIAGNOSTIC_LABELS = {
    "diag_target_top1": "top-1 of the target the student learns from (%)",
    "diag_adapted_top1": "top-1 of the adapted teacher (%)",
    "diag_teacher_entropy": "teacher entropy at T (nats)",
    "diag_target_entropy": "target entropy at T (nats)",
    "diag_target_normalized_entropy": "target entropy at T over its maximum, H_T / ln C",
    "diag_student_entropy": "student entropy at T (nats)",
    "diag_sharpness_gap": "sharpness gap, target − student (logsumexp(z/T))",
    "diag_teacher_sharpness_gap": "sharpness gap, teacher − student",
}


def _diagnostics_section(history: list[dict[str, Any]]) -> list[str]:
    keys = [k for k in DIAGNOSTIC_LABELS if k in history[0]]
    if not keys:
        return []
    lines = [
        "## Method diagnostics",
        "",
        "On the evaluation split after each epoch (metrics.jsonl has every epoch).",
        "",
    ]
    lines += [f"| | epoch 1 | epoch {len(history)} |", "|---|---|---|"]
    lines += [f"| {DIAGNOSTIC_LABELS[k]} | {history[0][k]:.3f} | {history[-1][k]:.3f} |" for k in keys]
    warned = [r for r in history if "target_warning" in r]
    if warned:
        epochs = ", ".join(str(r["epoch"]) for r in warned)
        lines += ["", f"**Warning:** the target the student learns from went bad in epochs {epochs} "
                      f"(first: {warned[0]['target_warning']})."]  # fmt: skip
    return [*lines, "", "![diagnostics](diagnostics.svg)", ""]


def _pea_sections(report: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    sps = report["student"].get("sps")
    if sps:
        lines += ["## Shuffled Parameter Sharing", "", "| student | parameters | MACs |", "|---|---|---|"]
        for label, key in (("without SPS", "without_sps"), ("with SPS", "with_sps"),
                           ("untied, same effective depth", "untied_same_depth")):  # fmt: skip
            lines.append(f"| {label} | {sps[f'parameters_{key}']:,} | {sps[f'macs_{key}'] / 1e6:.1f} M |")
        lines.append("")
    ptp = report.get("strategy", {}).get("ptp")
    if ptp:
        t1, t2 = ptp["thresholds"]
        lines += ["## Pretraining with Teacher's Predictions", "",
                  f"Thresholds: t1 = {t1:.4f} (correct), t2 = {t2:.4f} (wrong).", "",
                  "| label | images |", "|---|---|"]  # fmt: skip
        lines += [f"| {name} | {count:,} |" for name, count in ptp["label_counts"].items()]
        lines.append("")
    return lines


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int) and value >= 10_000:
        return f"{value:,}"
    return str(value)


def markdown_report(report: dict[str, Any]) -> str:
    final, student, teacher, timing = report["final"], report["student"], report["teacher"], report["timing"]
    config = report["config"]
    title = f"{report['kind']}: {student['arch']}" + (
        f" from {teacher['arch']} ({report['method']})" if teacher else ""
    )
    lines = [
        f"# kdcli run — {title}",
        "",
        f"kdcli {report['kdcli_version']}, {report['created']}, device {report['environment']['device']}, "
        f"data `{config['data']['name']}`, {final['epochs']} epochs, seed {config['train']['seed']}.",
        "",
        "| | value |",
        "|---|---|",
        f"| top-1, last epoch (test) | {_fmt(final['last_top1'])} % |",
        f"| top-5, last epoch (test) | {_fmt(final['last_top5'])} % |",
    ]
    if "best_epoch" in final:
        lines.append(f"| top-1 at the best-on-val epoch ({final['best_epoch']}) | {_fmt(final['best_top1'])} % |")
    lines += [
        f"| highest test top-1 over epochs (optimistic) | {_fmt(final['max_test_top1'])} % |",
        f"| NLL / ECE, last epoch | {_fmt(final['last_nll'], 3)} / {_fmt(final['last_ece'])} % |",
        f"| student parameters / MACs | {_fmt(student['parameters'])} / {student['macs'] / 1e6:.1f} M |",
        f"| student file | {student['file_bytes'] / 1e6:.2f} MB |",
        f"| parameters training adds (not exported) | {_fmt(student['extra_training_parameters'])} |",
        f"| seconds per epoch / images per second | {timing['seconds_per_epoch']:.2f} / "
        f"{timing['images_per_second']:.0f} |",
        f"| wall time | {timing['wall_seconds']:.1f} s |",
    ]
    if teacher:
        lines += [
            "",
            f"Teacher check (before distilling): `{teacher['arch']}`, {_fmt(teacher['parameters'])} parameters, "
            f"top-1 {teacher['top1']:.2f} % / top-5 {teacher['top5']:.2f} % on {teacher['split']}"
            + (f", SHA-256 `{teacher['sha256'][:16]}…`." if teacher.get("sha256") else "."),
        ]
    lines += ["", "![accuracy](accuracy.svg)", "", "![loss](loss.svg)", ""]
    lines += _diagnostics_section(report["epochs"])
    lines += _pea_sections(report)
    lines += ["## Epochs", ""]
    columns = [
        c
        for c in ("epoch", "lr", "train_loss", "train_top1", "val_top1", "test_top1", "seconds")
        if c in report["epochs"][0]
    ]
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for record in report["epochs"]:
        lines.append(
            "| " + " | ".join(_fmt(record.get(c), 4 if c in ("lr", "train_loss") else 2) for c in columns) + " |"
        )
    return "\n".join(lines) + "\n"


def write_reports(run_dir: Path, report: dict[str, Any]) -> None:
    history = report["epochs"]
    accuracy = {
        f"{s} top-1": [r[f"{s}_top1"] for r in history] for s in ("train", "val", "test") if f"{s}_top1" in history[0]
    }
    losses = {
        name: [r[name] for r in history] for name in history[0] if name.startswith("train_") and name != "train_top1"
    }
    atomic_write_text(run_dir / "accuracy.svg", line_chart_svg(accuracy, "top-1 accuracy (%)"))
    atomic_write_text(run_dir / "loss.svg", line_chart_svg(losses, "training losses"))
    entropy_keys = [
        k for k in ("diag_teacher_entropy", "diag_target_entropy", "diag_student_entropy") if k in history[0]
    ]
    entropies = {k.removeprefix("diag_").replace("_", " "): [r[k] for r in history] for k in entropy_keys}
    if entropies:
        atomic_write_text(run_dir / "diagnostics.svg", line_chart_svg(entropies, "entropy at T (nats)"))
    atomic_write_text(run_dir / "report.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(run_dir / "report.md", markdown_report(report))
