"""``kdcli analyze``'s outputs: one typed document (``analysis.json``, schema ``kdcli.analysis/1``), ``analysis.md`` and
its figures — the class-relationship heatmap, histograms of the teacher's confidence and of the gradient rescaling,
and the four-part decomposition as a bar (Tang et al. 2020; the quantities are defined in kdcli.methods.knowledge)."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

from pydantic import ConfigDict, Field

from kdcli.errors import RunFailed, UsageError, option
from kdcli.io.files import atomic_write_text
from kdcli.records import Record
from kdcli.reporting.charts import pyplot, save_figure
from kdcli.reporting.finite import dumps

ANALYSIS_SCHEMA = "kdcli.analysis/1"


class Universe(Record):
    """The label-smoothing part of the teacher's knowledge."""

    matched_smoothing: float
    """ε = 1 − E[c]: the label smoothing whose target has the teacher's mean confidence."""
    class_smoothing: list[float]
    """ε_k = 1 − E[c | y = k]."""
    teacher_entropy: float
    """Mean entropy of the teacher's distribution (nats)."""
    smoothed_entropy: float
    """Entropy of the matched label-smoothing target (nats)."""
    saturated_share: float | None = None
    """Share of examples with c > 0.99 (at τ = 1 only)."""


class ClassPair(Record):
    first: str
    second: str
    relationship: float
    """(R + Rᵀ)/2 for the pair."""


class Domain(Record):
    """How the teacher relates the classes."""

    relationships: list[list[float]]
    """R[k][j]: the (1 − c)-weighted mean share of the teacher's wrong mass that class k's examples put on j."""
    divergence_from_uniform: list[float]
    """KL(R_k ‖ U) per class (nats)."""
    mean_divergence_from_uniform: float
    """Σ_k π_k·KL(R_k ‖ U)."""
    most_related: list[ClassPair]
    class_means: list[list[float]]
    """P̄[k][j] = E[p_t,j | y = k]."""
    weight_cosine_rank_correlation: float | None = None
    """Spearman correlation between the cosines of the teacher's classifier rows and (R + Rᵀ)/2, off the diagonal."""


class Instance(Record):
    """How the teacher rescales each example's gradient on its true-class logit (needs a student)."""

    ce_weight: float
    kd_weight: float
    mean_rescaling: float
    median_rescaling: float
    central_range: list[float]
    """The 1st and 99th percentiles of w."""
    share_below_ce_weight: float
    """Share of examples with w < γ: the teacher damps them."""
    share_negative: float
    """Share with w < 0: KD pushes the true-class logit down."""
    correlation_with_confidence: float
    """Pearson correlation of w with c."""
    histogram_edges: list[float]
    """Even in ``sign(w)·ln(1 + |w|)``: the figure draws them on a symlog axis."""
    histogram_counts: list[int]


class Decomposition(Record):
    """``E_x KL(p_t ‖ LS_ε)`` in four parts (nats); their sum equals ``total``, computed directly."""

    class_confidence: float
    instance_confidence: float
    class_relationships: float
    instance_relationships: float
    total: float


class AtTemperature(Record):
    temperature: float
    universe: Universe
    domain: Domain
    decomposition: Decomposition
    confidence_histogram: list[int]
    """Counts of c over 20 equal bins of [0, 1]."""
    instance: Instance | None = None


class Analysis(Record):
    schema_: str = Field(ANALYSIS_SCHEMA, alias="schema")
    kdcli_version: str
    teacher: str
    teacher_arch: str
    student: str | None = None
    data: str
    split: str
    samples: int
    classes: list[str]
    teacher_top1: float
    results: list[AtTemperature]
    """At τ = 1 and at the run's T."""
    written: list[str] = Field(default_factory=list, exclude=True)
    """The files an analysis written to a folder went to (not part of analysis.json)."""

    model_config = ConfigDict(populate_by_name=True)

    def to_json(self) -> str:
        """The analysis as JSON; a number that is not finite as the string "inf", "-inf" or "nan"
        (kdcli.reporting.finite)."""
        return dumps(self.model_dump(mode="python", by_alias=True))[0] + "\n"


PARTS = {
    "class_confidence": "class-level confidence",
    "instance_confidence": "instance confidence",
    "class_relationships": "class relationships",
    "instance_relationships": "instance relationships",
}


def markdown(analysis: Analysis) -> str:
    lines = [
        f"# What {analysis.teacher_arch} teaches ({analysis.data}, {analysis.split} split)",
        "",
        f"Teacher `{analysis.teacher}` (top-1 {analysis.teacher_top1:.2f} % on these {analysis.samples:,} images)"
        + (f", student `{analysis.student}`" if analysis.student else "")
        + ". The levels of knowledge and their decomposition follow Tang et al. 2020 (arXiv 2002.03532); "
        "docs/methods.md defines each quantity.",
        "",
    ]
    for result in analysis.results:
        universe, domain, parts = result.universe, result.domain, result.decomposition
        lines += [
            f"## At temperature τ = {result.temperature:g}",
            "",
            "| universe | value |",
            "|---|---|",
            f"| matched label smoothing ε = 1 − E[c] | {universe.matched_smoothing:.4f} |",
            f"| teacher entropy / matched smoothing's entropy (nats) | {universe.teacher_entropy:.4f} / "
            f"{universe.smoothed_entropy:.4f} |",
        ]
        if universe.saturated_share is not None:
            lines.append(f"| share saturated (c > 0.99) | {100 * universe.saturated_share:.1f} % |")
        lines += ["", "| part of E KL(p_t ‖ LS_ε) | nats |", "|---|---|"]
        lines += [f"| {label} | {getattr(parts, key):.4f} |" for key, label in PARTS.items()]
        lines += [
            f"| sum (equals the KL computed directly: {parts.total:.4f}) | "
            f"{sum(getattr(parts, key) for key in PARTS):.4f} |",
            "",
            f"Class relationships: mean KL(R_k ‖ U) = {domain.mean_divergence_from_uniform:.4f} nats. "
            "Most related pairs:",
            "",
        ]
        lines += [f"- {pair.first} – {pair.second}: {pair.relationship:.3f}" for pair in domain.most_related]
        lines += ["", "| class | ε_k | KL(R_k ‖ U) | its wrong mass goes most to | P̄[k, k] |", "|---|---|---|---|---|"]
        for k, name in enumerate(analysis.classes):
            row = domain.relationships[k]
            nearest = max((j for j in range(len(row)) if j != k), key=row.__getitem__, default=k)
            smoothing, divergence = universe.class_smoothing[k], domain.divergence_from_uniform[k]
            lines.append(
                f"| {name} | {smoothing:.4f} | {divergence:.4f} | {analysis.classes[nearest]} "
                f"({row[nearest]:.3f}) | {domain.class_means[k][k]:.4f} |"
            )
        if domain.weight_cosine_rank_correlation is not None:
            lines += [
                "",
                f"Rank correlation of the classifier's row cosines with R: "
                f"{domain.weight_cosine_rank_correlation:.3f}.",
            ]
        if result.instance is not None:
            instance = result.instance
            weights = f"γ = {instance.ce_weight:g}, α = {instance.kd_weight:g}"
            below, negative = 100 * instance.share_below_ce_weight, 100 * instance.share_negative
            low, high = instance.central_range
            lines += [
                "",
                f"Instance: the gradient rescaling w(x) ({weights}) has median "
                f"{instance.median_rescaling:.3f}, and 98 % of the examples lie in [{low:.3f}, {high:.3f}] "
                f"(mean {instance.mean_rescaling:.3f}: w divides by 1 − q_y, so the examples the student "
                f"already fits pull it far out); {below:.1f} % of the examples have w < γ and "
                f"{negative:.1f} % w < 0; its correlation with c is "
                f"{instance.correlation_with_confidence:.3f}.",
            ]
        tag = f"{result.temperature:g}"
        lines += [
            "",
            f"![relationships](relationships-t{tag}.png)",
            "",
            f"![decomposition](decomposition-t{tag}.png)",
            "",
            f"![confidence](confidence-t{tag}.png)",
            "",
        ]
        if result.instance is not None:
            lines += [f"![rescaling](rescaling-t{tag}.png)", ""]
    return "\n".join(lines) + "\n"


def figures(out: Path, analysis: Analysis) -> list[Path]:
    """The PNG figures of each temperature; returns their paths."""
    plt = pyplot()
    written = []
    names = analysis.classes
    for result in analysis.results:
        tag = f"{result.temperature:g}"
        figure, axes = plt.subplots(figsize=(7.2, 6.0), dpi=110, layout="constrained")
        relationships = [
            [value if j != k else float("nan") for j, value in enumerate(row)]
            for k, row in enumerate(result.domain.relationships)
        ]
        colors = plt.get_cmap("viridis").with_extremes(bad="#dddddd")  # the diagonal: not a wrong class
        image = axes.imshow(relationships, cmap=colors)
        axes.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize="small")
        axes.set_yticks(range(len(names)), names, fontsize="small")
        axes.set_xlabel("class j the wrong mass goes to")
        axes.set_ylabel("true class k")
        axes.set_title(f"class relationships R[k, j] at τ = {tag}")
        figure.colorbar(image, ax=axes, label="share of the wrong mass")
        save_figure(figure, out / f"relationships-t{tag}.png")

        figure, axes = plt.subplots(figsize=(6.4, 3.2), dpi=110, layout="constrained")
        values = [getattr(result.decomposition, key) for key in PARTS]
        axes.barh(list(PARTS.values()), values, color=["#4c72b0", "#55a868", "#c44e52", "#8172b2"])
        axes.invert_yaxis()
        axes.set_xlabel("nats")
        axes.set_title(f"E KL(teacher ‖ matched label smoothing) = {result.decomposition.total:.3f} at τ = {tag}")
        save_figure(figure, out / f"decomposition-t{tag}.png")

        figure, axes = plt.subplots(figsize=(6.4, 3.2), dpi=110, layout="constrained")
        edges = [i / 20 for i in range(21)]
        axes.stairs(result.confidence_histogram, edges, fill=True, color="#4c72b0")
        axes.set_xlabel("teacher's probability of the true class, c(x)")
        axes.set_ylabel("examples")
        axes.set_title(f"teacher confidence at τ = {tag}")
        save_figure(figure, out / f"confidence-t{tag}.png")
        written += [out / f"{kind}-t{tag}.png" for kind in ("relationships", "decomposition", "confidence")]

        if result.instance is not None:
            instance = result.instance
            figure, axes = plt.subplots(figsize=(6.4, 3.2), dpi=110, layout="constrained")
            axes.stairs(instance.histogram_counts, instance.histogram_edges, fill=True, color="#55a868")
            axes.axvline(instance.ce_weight, color="black", linestyle="--", label=f"γ = {instance.ce_weight:g}")
            axes.axvline(0.0, color="#c44e52", linestyle=":", label="0")
            axes.set_xlabel("w(x): KD's gradient on the true-class logit over plain CE's")
            axes.set_ylabel("examples")
            axes.set_xscale("symlog", linthresh=1.0)
            axes.set_title(f"gradient rescaling at τ = {tag} (symlog axis: linear within ±1)")
            axes.legend(frameon=False)
            save_figure(figure, out / f"rescaling-t{tag}.png")
            written.append(out / f"rescaling-t{tag}.png")
    return written


FIGURE = re.compile(r"(relationships|decomposition|confidence|rescaling)-t[0-9a-z.+-]+\.png")
"""The figures' names: one of each kind per temperature (``relationships-t4.png``)."""


def is_analysis_file(name: str) -> bool:
    """A name ``write_analysis`` writes, or the temporary file of an interrupted write of one (``.NAME.XXXX.tmp``)."""
    if name.startswith(".") and name.endswith(".tmp"):
        name = name[1:].removesuffix(".tmp").rsplit(".", 1)[0]
    return name in ("analysis.json", "analysis.md") or FIGURE.fullmatch(name) is not None


def previous_analysis(out: Path) -> bool:
    """Whether ``out`` holds an analysis kdcli wrote: an ``analysis.json`` (a regular file) of this schema."""
    path = out / "analysis.json"
    if path.is_symlink() or not path.is_file():
        return False
    try:
        with open(path, "rb") as handle:
            data = json.loads(handle.read(64 << 20))
    except (OSError, ValueError):  # unreadable, not JSON (UnicodeDecodeError is a ValueError)
        return False
    return isinstance(data, dict) and data.get("schema") == ANALYSIS_SCHEMA


def check_analysis_out(out: Path, inputs: list[Path], force: bool = False) -> None:
    """Refuse, before any work, an ``out`` that analyze would write into wrongly: a file (or a path below one); a
    folder holding one of the command's ``inputs`` under a name it writes (even with ``force``); and, without
    ``force``, a folder that is neither empty nor a previous analysis (``previous_analysis``), or whose file of a
    name analyze writes is not a regular file (a link, a folder)."""
    if os.path.lexists(out) and not out.is_dir():
        raise UsageError(
            f"{option('out', out)} is a file, not a folder; analyze writes analysis.json, analysis.md "
            f"and figures into a folder: choose another {option('out')}"
        )
    above = out
    while not os.path.lexists(above) and above != above.parent:
        above = above.parent
    if not above.is_dir():
        raise UsageError(
            f"{option('out', out)} cannot be made: {above} is a file, not a folder; choose another {option('out')}"
        )
    if not out.is_dir():
        try:  # the one reliable test that the folder can be made there (/proc, /sys, a read-only mount, root)
            os.rmdir(tempfile.mkdtemp(prefix=".kdcli-probe.", dir=above))
        except OSError as exc:
            raise UsageError(
                f"{option('out', out)} cannot be made in {above} ({exc.strerror or exc}); choose a "
                f"writable {option('out')}"
            ) from None
        return
    for source in inputs:  # by name in the folder, or as a link to one of the names
        named = is_analysis_file(source.name) and _same(source.parent, out)
        if named or any(_same(source, out / name) for name in ("analysis.json", "analysis.md")):
            raise UsageError(
                f"{option('out', out)} holds {source}, an input of this command, under a name analyze "
                f"writes; choose another {option('out')}"
            )
    if force:
        return
    try:
        entries = sorted(out.iterdir())
    except OSError as exc:
        raise UsageError(
            f"cannot read {option('out', out)} ({exc.strerror or exc}); choose another {option('out')}"
        ) from None
    odd = [
        entry.name for entry in entries if is_analysis_file(entry.name) and (entry.is_symlink() or not entry.is_file())
    ]
    if odd:
        raise UsageError(
            f"{option('out', out)} holds {odd[0]}, which is not a regular file; analyze would replace "
            f"it: choose another {option('out')}, or pass {option('force')} to replace it"
        )
    if entries and not previous_analysis(out):
        names = [entry.name for entry in entries]
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        raise UsageError(
            f"{option('out', out)} already holds files that are not a kdcli analysis ({shown}); choose "
            f"a new or empty {option('out')} (a previous analysis is replaced), or pass {option('force')} "
            "to write beside them"
        )


def _same(path: Path, other: Path) -> bool:
    try:
        return os.path.samefile(path, other)
    except (OSError, ValueError):  # missing, unreadable, or a name with a NUL byte
        return False


def write_analysis(out: Path, analysis: Analysis) -> list[Path]:
    """analysis.json, analysis.md and the figures under ``out``, each written atomically; returns every file
    written. Call ``check_analysis_out`` first. A write that fails (a full disk) is a failed run (exit 1) that names
    the folder; the files already there stay whole. The figures of a previous analysis there at temperatures this
    one has not are removed, so every figure in the folder belongs to its analysis.json."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        ours = previous_analysis(out)
        earlier = [entry for entry in out.iterdir() if FIGURE.fullmatch(entry.name) and entry.is_file()] if ours else []
        pictures = figures(out, analysis)
        atomic_write_text(out / "analysis.json", analysis.to_json())
        atomic_write_text(out / "analysis.md", markdown(analysis))
        for stale in set(earlier) - set(pictures):
            stale.unlink(missing_ok=True)
    except OSError as exc:
        raise RunFailed(
            f"cannot write the analysis to {out} ({exc.strerror or exc}); make room there or choose "
            f"another {option('out')}, and run analyze again"
        ) from None
    return [out / "analysis.json", out / "analysis.md", *pictures]
