"""``kdcli compare``: one table over run directories, seeds of the same configuration grouped (mean ± std)."""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdcli.catalog import method_spec
from kdcli.config import flatten
from kdcli.errors import UsageError
from kdcli.interfaces import Reporter
from kdcli.reporting.report import Report, read_report

COMPARE_SCHEMA = "kdcli.compare/1"
MAX_SECONDS = 1e10
"""A run's wall time beyond this (three centuries) is a damaged report; summing such figures would overflow."""
MAX_COUNT = 10**18
"""Parameters, MACs or epochs beyond this are a damaged report."""


def _config(report: Report, run_dir: Path) -> dict[str, Any]:
    """The run's configuration, checked for what compare reads (method.name, train.seed, data.name): a report of
    another shape is a usage error, not a KeyError."""
    config = report.config
    for section, key in (("method", "name"), ("train", "seed"), ("data", "name")):
        value = config[section].get(key) if isinstance(config.get(section), dict) else None
        wrong = not isinstance(value, str) if key == "name" else not isinstance(value, int) or isinstance(value, bool)
        if value is None or wrong:
            lacks = f"lacks {section}.{key}" if value is None else f"gives {section}.{key} = {value!r}"
            raise UsageError(
                f"{run_dir / 'report.json'} is not a kdcli report (config {lacks}); leave {run_dir} out, "
                "or run it again"
            )
    return config


def _check_figures(report: Report, run_dir: Path) -> None:
    """The figures compare averages are numbers of their kind: a top-1 in percent, seconds. A NaN would turn its
    group's mean into NaN and, written as JSON, into a token most parsers refuse."""
    final, path = report.final, run_dir / "report.json"
    figures: list[tuple[str, float | None, float]] = [
        ("final.last_top1", final.last_top1, 100.0),
        ("final.best_top1", final.best_top1, 100.0),
        ("final.max_test_top1", final.max_test_top1, 100.0),
        ("timing.wall_seconds", report.timing.wall_seconds, MAX_SECONDS),
    ]
    for name, value, most in figures:
        if value is not None and not (0.0 <= value <= most):  # NaN fails both comparisons
            kind = "a top-1 in percent" if most == 100.0 else "a duration in seconds"
            raise UsageError(
                f"{path} gives {name} = {value}, not {kind}: the report is damaged; leave {run_dir} "
                "out, or run it again"
            )
    counts = [
        ("student.parameters", report.student.parameters),
        ("student.macs", report.student.macs),
        ("final.epochs", final.epochs),
    ]
    for name, count in counts:
        if not 0 <= count <= MAX_COUNT:
            shown = str(count) if len(str(count)) <= 24 else f"{str(count)[:8]}… ({len(str(count))} digits)"
            raise UsageError(
                f"{path} gives {name} = {shown}, not a count: the report is damaged; leave "
                f"{run_dir} out, or run it again"
            )


def unique_runs(run_dirs: Sequence[str | Path]) -> tuple[list[Path], list[tuple[Path, Path]]]:
    """The run folders with each run once: a folder given again — the same path, another spelling of it, a
    symbolic link to it, a report.json hard-linked into another folder — is one run, not a second seed. Returns the
    folders kept and, for each one dropped, ``(dropped, the folder kept for it)``."""
    kept: list[Path] = []
    dropped: list[tuple[Path, Path]] = []
    seen: dict[tuple[int, int], Path] = {}
    for run_dir in map(Path, run_dirs):
        try:
            info = os.stat(run_dir / "report.json")
        except (OSError, ValueError):  # missing, unreadable, a NUL in the name: read_report says which
            kept.append(run_dir)
            continue
        identity = (info.st_dev, info.st_ino)
        if identity in seen:
            dropped.append((run_dir, seen[identity]))
        else:
            seen[identity] = run_dir
            kept.append(run_dir)
    return kept, dropped


def _arm(report: Report) -> str:
    """The method with the options that differ from its defaults, e.g. ``pea (sps=False)``."""
    method = dict(report.config["method"])
    name = method.pop("name")
    if name == "none":
        return "no teacher (kdcli train)"
    try:
        defaults = method_spec(name).options().model_dump(mode="json")
    except UsageError:  # a plugin's method that is not installed here: its run still compares, under its name
        return name
    changed = [f"{k}={v}" for k, v in method.items() if k in defaults and defaults[k] != v]
    return f"{name} ({', '.join(changed)})" if changed else name


def _group_key(report: Report) -> str:
    """The run's configuration less what cannot change its student: the seed (grouped over), the output folder and
    the evaluation batch (a speed setting: 512 in reports before 0.2, unset — per device — after)."""
    config = json.loads(json.dumps(report.config))
    config["train"].pop("seed")
    config["train"].pop("eval_batch_size", None)
    config.pop("output", None)
    return json.dumps(config, sort_keys=True)


def mean_std(values: list[float | None]) -> dict[str, float] | None:
    """Mean and sample standard deviation of the values present (``None`` is a run without the figure)."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    return {"mean": statistics.fmean(present), "std": statistics.stdev(present) if len(present) > 1 else 0.0}


def _settings(group_keys: list[str]) -> list[str]:
    """Per group, its settings outside the method, the teacher and the seed that differ from what most groups use
    (e.g. ``compile=None, precision=auto`` for a fast-path arm among eager ones), so no two rows read alike."""
    flat = [flatten(json.loads(key)) for key in group_keys]
    keys = sorted({key for config in flat for key in config if not key.startswith(("method.", "teacher."))})
    usual = {key: statistics.mode(json.dumps(config.get(key)) for config in flat) for key in keys}
    return [
        ", ".join(
            f"{key.rsplit('.', 1)[-1]}={config.get(key)}" for key in keys if json.dumps(config.get(key)) != usual[key]
        )
        for config in flat
    ]


def _repeated_runs(dropped: Sequence[tuple[Path, Path]]) -> str | None:
    """The one warning line for the runs ``unique_runs`` dropped (however many), or None when it dropped none."""
    if not dropped:
        return None
    again: dict[Path, list[Path]] = {}
    for path, first in dropped:
        again.setdefault(first, []).append(path)
    told = []
    for first, paths in again.items():
        others = sorted({str(path) for path in paths if path != first})
        told.append(f"{first} {len(paths) + 1} times" + (f" (also as {', '.join(others)})" if others else ""))
    return f"warning: a run given more than once is counted once, not as more seeds: {'; '.join(told)}"


def compare_runs(run_dirs: Sequence[str | Path], reporter: Reporter) -> dict[str, Any]:
    """Group runs that differ only in seed and output folder; report mean ± std of their figures. A row's
    ``settings`` names what else sets its group apart from the others (empty when only the method does). A run given
    more than once is counted once (``unique_runs``), with one warning line to ``reporter``; a damaged report, or one
    whose top-1 is not a percentage (NaN), is a usage error."""
    kept, dropped = unique_runs(run_dirs)  # one run given twice is one seed, not two
    warning = _repeated_runs(dropped)
    if warning is not None:
        reporter.note(warning)
    groups: dict[str, list[Report]] = {}
    for run_dir in kept:
        report = read_report(run_dir)
        _config(report, run_dir)
        _check_figures(report, run_dir)
        groups.setdefault(_group_key(report), []).append(report)
    settings = _settings(list(groups))
    rows = []
    for reports, setting in zip(groups.values(), settings, strict=True):
        first = reports[0]
        final = [r.final for r in reports]
        rows.append(
            {
                "method": _arm(first),
                "arm": "student" if first.method == "none" else first.method,
                "settings": setting,
                "teacher": first.teacher.arch if first.teacher else None,
                "student": first.student.arch,
                "data": first.config["data"]["name"],
                "epochs": first.final.epochs,
                "seeds": [r.config["train"]["seed"] for r in reports],
                "parameters": first.student.parameters,
                "macs": first.student.macs,
                "top1_last": mean_std([f.last_top1 for f in final]),
                "top1_last_runs": [f.last_top1 for f in final],
                "top1_best_on_val": mean_std([f.best_top1 for f in final]),
                "max_test_top1": mean_std([f.max_test_top1 for f in final]),
                "wall_seconds": mean_std([r.timing.wall_seconds for r in reports]),
            }
        )
    return {"schema": COMPARE_SCHEMA, "rows": rows}


def _cell(stat: dict[str, float] | None, digits: int = 2) -> str:
    return "–" if stat is None else f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def markdown_table(summary: dict[str, Any]) -> str:
    lines = [
        "| method | teacher → student | seeds | top-1 last | top-1 best-on-val | params | MACs | wall s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in summary["rows"]:
        pair = f"{row['teacher']} → {row['student']}" if row["teacher"] else row["student"]
        label = f"{row['method']} [{row['settings']}]" if row["settings"] else row["method"]
        lines.append(
            f"| {label} | {pair} | {len(row['seeds'])} | {_cell(row['top1_last'])} | "
            f"{_cell(row['top1_best_on_val'])} | {row['parameters']:,} | {row['macs'] / 1e6:.1f} M | "
            f"{_cell(row['wall_seconds'], 0)} |"
        )
    return "\n".join(lines) + "\n"
