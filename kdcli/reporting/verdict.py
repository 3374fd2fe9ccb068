"""The verdict over a compare table: for every arm, its mean difference in last-epoch top-1 from a baseline arm with
a 95 % confidence interval, and which arm is best.

Where the arm and the baseline ran the same seeds, the difference is paired by seed (one difference per seed, a
t-interval over them: the seed's data order and initialization are shared, so most of the seed-to-seed noise
cancels); otherwise it is Welch's interval over the two groups. Student's t quantiles come from a table (two-sided
95 %), degrees of freedom rounded down, which widens an interval rather than narrowing it. With one seed there is no
interval (``ci95`` is None): a difference of one run against another is not evidence.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from kdcli.errors import UsageError, option

VERDICT_SCHEMA = "kdcli.verdict/1"
T_95 = (
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
)
"""Two-sided 95 % quantiles of Student's t for 1 to 30 degrees of freedom."""


def t_quantile(degrees: float) -> float:
    """The two-sided 95 % t quantile for ``degrees`` of freedom, rounded down (≥ 1); 1.96 past 120."""
    whole = max(1, math.floor(degrees))
    if whole <= len(T_95):
        return T_95[whole - 1]
    return 2.021 if whole < 60 else 2.000 if whole < 120 else 1.960


def difference(arm: dict[int, float], baseline: dict[int, float]) -> dict[str, Any]:
    """The mean difference ``arm − baseline`` (points of top-1) over seeds, paired where both ran the same seeds."""
    paired = sorted(arm) == sorted(baseline)
    if paired:
        diffs = [arm[seed] - baseline[seed] for seed in sorted(arm)]
        mean = statistics.fmean(diffs)
        if len(diffs) < 2:
            return {"difference": mean, "ci95": None, "paired": True, "seeds": len(diffs)}
        half = t_quantile(len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
        return {"difference": mean, "ci95": [mean - half, mean + half], "paired": True, "seeds": len(diffs)}
    a, b = list(arm.values()), list(baseline.values())
    mean = statistics.fmean(a) - statistics.fmean(b)
    if len(a) < 2 or len(b) < 2:
        return {"difference": mean, "ci95": None, "paired": False, "seeds": min(len(a), len(b))}
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if va + vb == 0:
        return {"difference": mean, "ci95": [mean, mean], "paired": False, "seeds": min(len(a), len(b))}
    degrees = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))  # Welch–Satterthwaite
    half = t_quantile(degrees) * math.sqrt(va + vb)
    return {"difference": mean, "ci95": [mean - half, mean + half], "paired": False, "seeds": min(len(a), len(b))}


def _by_seed(row: dict[str, Any]) -> dict[int, float]:
    return {seed: top1 for seed, top1 in zip(row["seeds"], row["top1_last_runs"], strict=True) if top1 is not None}


def verdict(summary: dict[str, Any], baseline: str = "vanilla", min_gain: float | None = None) -> dict[str, Any]:
    """Every arm of a compare ``summary`` against the ``baseline`` arm (a method's name, or ``student``): rows of
    ``difference`` and ``ci95``; the ``best`` arm by mean last-epoch top-1; with ``min_gain``, ``passed`` says
    whether some arm's mean difference reaches it. Where a grid gave the baseline several rows, an arm is held
    against the baseline row of its own settings, else against the baseline at its defaults."""
    rows = [row for row in summary["rows"] if _by_seed(row)]
    bases = [row for row in rows if row["arm"] == baseline]
    if not bases:
        arms = sorted({row["arm"] for row in rows})
        raise UsageError(
            f"no finished {baseline!r} runs to hold the others against (arms here: {', '.join(arms)}); "
            f"choose one with {option('baseline')}"
        )
    default = next((row for row in bases if row["method"] == baseline), bases[0])
    entries = []
    for row in rows:
        if row is default:
            continue
        same = [b for b in bases if b["settings"] == row["settings"] and b is not row]
        base = default if any(b is default for b in same) or not same else same[0]
        entries.append(
            {
                "method": row["method"],
                "settings": row["settings"],
                "baseline": base["method"],
                **difference(_by_seed(row), _by_seed(base)),
            }
        )
    best = max(rows, key=lambda row: statistics.fmean(_by_seed(row).values()))
    passed = None if min_gain is None else any(entry["difference"] >= min_gain for entry in entries)
    return {
        "schema": VERDICT_SCHEMA,
        "baseline": baseline,
        "min_gain": min_gain,
        "passed": passed,
        "best": {"method": best["method"], "settings": best["settings"]},
        "arms": entries,
    }


def verdict_lines(result: dict[str, Any]) -> list[str]:
    """The verdict as Markdown lines under the compare table."""
    lines = [
        "",
        f"Against {result['baseline']} (last-epoch top-1, points; 95 % interval, paired by seed where the "
        "seeds match):",
        "",
        "| arm | difference | 95 % interval | seeds | paired |",
        "|---|---|---|---|---|",
    ]
    for entry in result["arms"]:
        label = entry["method"] + (f" [{entry['settings']}]" if entry["settings"] else "")
        ci = entry["ci95"]
        interval = "–" if ci is None else f"[{ci[0]:+.2f}, {ci[1]:+.2f}]"
        lines.append(
            f"| {label} | {entry['difference']:+.2f} | {interval} | {entry['seeds']} | "
            f"{'yes' if entry['paired'] else 'no'} |"
        )
    best = result["best"]
    lines += ["", f"Best: {best['method']}" + (f" [{best['settings']}]" if best["settings"] else "") + "."]
    if result["passed"] is not None:
        lines.append(
            f"Gate (gain ≥ {result['min_gain']:g} points over {result['baseline']}): "
            f"{'passed' if result['passed'] else 'not met'}."
        )
    return lines
