"""The ``kdcli`` commands: Typer functions that turn flags into configuration layers and call the Python API.

This module imports typer, rich and the configuration schema only; each command imports the engine (torch, timm)
when it runs, so ``kdcli --help``, ``--version``, ``methods``, ``models`` and ``presets`` answer at once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kdcli._version import __version__
from kdcli.cli.help import KdcliCommand, KdcliGroup
from kdcli.cli.options import CONFIG_FLAGS, DISTILL_FLAGS, TRAIN_FLAGS, Given, parse_set, with_flags
from kdcli.cli.output import emit, table
from kdcli.config import Layer, data_config, list_presets, load_preset, nested, read_yaml, resolve
from kdcli.errors import UsageError

if TYPE_CHECKING:
    from kdcli.api import RunResult
    from kdcli.interfaces import Reporter


def _version(value: bool) -> None:
    if value:
        print(f"kdcli {__version__}")
        raise typer.Exit()


app = typer.Typer(
    name="kdcli",
    cls=KdcliGroup,
    help="Distill image classifiers: any timm teacher and student, safetensors in and out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
config_app = typer.Typer(cls=KdcliGroup, help="Inspect the resolved configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version")
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="show a traceback with an error (anywhere on the line)")
    ] = False,
) -> None:
    """Distill image classifiers: any timm teacher and student, safetensors in and out."""


PresetOpt = Annotated[
    str | None, typer.Option("--preset", metavar="NAME|FILE", help="preset name (see `kdcli presets`) or YAML file")
]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", metavar="FILE", help="YAML configuration file (e.g. a run's config.yaml)")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", metavar="KEY=VALUE", help="override any key: --set optim.lr=0.1 (repeatable)"),
]
ResumeOpt = Annotated[Path | None, typer.Option("--resume", metavar="DIR", help="continue the run in this directory")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print exactly one JSON document on stdout")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="no progress or notes on stderr")]
ForceOpt = Annotated[
    bool, typer.Option("--force", help="write even where files kdcli did not write would be replaced (never an input)")
]
DataDirOpt = Annotated[str | None, typer.Option("--data-dir", metavar="DIR", help="folder holding the data set")]
BaselineOpt = Annotated[
    str, typer.Option(metavar="ARM", help="the arm the others are held against: a method, or student")
]
MinGainOpt = Annotated[
    float | None, typer.Option(metavar="POINTS", help="exit 1 unless some arm beats the baseline by this much top-1")
]
DeviceOpt = Annotated[str, typer.Option("--device", metavar="DEVICE", help="auto, cpu, cuda, cuda:N or mps")]


def _layers(preset: str | None, config: Path | None, flags: Given, sets: list[str] | None) -> list[Layer]:
    """defaults < preset < --config < flags < --set, each flag its own layer so `config show` can name it."""
    layers: list[Layer] = [("default", {})]
    if preset:
        layers.append((f"preset {preset}", load_preset(preset)))
    if config:
        layers.append((f"config {config}", read_yaml(config)))
    layers += [(flag, nested(key, value)) for flag, (key, value) in flags.items()]
    layers += [(f"--set {item}", parse_set(item)) for item in sets or []]
    return layers


def _check_teacher_flags(flags: Given) -> None:
    if flags.get("--teacher", ("",))[0] == "teacher.checkpoint" and "--teacher-ckpt" in flags:
        raise UsageError("--teacher is already a file; drop --teacher-ckpt, or give --teacher ARCH")


def _reporter(quiet: bool) -> Reporter:
    from kdcli.cli.progress import RichReporter
    from kdcli.interfaces import Reporter

    return Reporter() if quiet else RichReporter()


def _resume(
    run_dir: Path,
    flags: Given,
    preset: str | None,
    config: Path | None,
    sets: list[str] | None,
    quiet: bool,
    as_json: bool,
    force: bool,
) -> None:
    """Continue a run with the configuration it started with; configuration options would silently differ."""
    from kdcli import api

    lr = flags.pop("--lr", (None, None))[1]
    given = list(flags) + [
        name
        for name, value in (("--preset", preset), ("--config", config), ("--set", sets), ("--force", force))
        if value
    ]
    if given:
        raise UsageError(
            f"--resume continues {run_dir} with its own config.yaml (only --lr may change); drop {', '.join(given)}"
        )
    _print_result(api.resume(run_dir, _reporter(quiet), lr=lr), as_json, quiet)


def _print_result(result: RunResult, as_json: bool, quiet: bool = False) -> None:
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun, rank 0 prints for the whole run
    report = result.report
    payload = {
        "schema": "kdcli.result/1",
        "run_dir": str(result.run_dir),
        "student_file": str(result.student_path),
        "report_file": str(result.run_dir / "report.json"),
        **report.model_dump(mode="json", include={"kind", "method", "final", "teacher", "student", "timing"}),
    }

    def render() -> list[Any]:
        final, student, teacher = report.final, report.student, report.teacher
        title = f"kdcli {report.kind}" + (f" — {report.method}" if report.kind == "distill" else "")
        rows = []
        if teacher:
            rows.append(
                [
                    "teacher",
                    teacher.arch,
                    f"{teacher.parameters:,}",
                    f"{teacher.macs / 1e6:.1f} M",
                    f"{teacher.top1:.2f}",
                    "",
                    f"{teacher.top5:.2f}",
                ]
            )

        def percent(value: float | None) -> str:
            return "–" if value is None else f"{value:.2f}"

        rows.append(
            [
                "student",
                student.arch,
                f"{student.parameters:,}",
                f"{student.macs / 1e6:.1f} M",
                percent(final.last_top1),
                percent(final.best_top1),
                percent(final.last_top5),
            ]
        )
        columns = ("model", "arch", "params", "MACs", "top-1", "top-1 (best val)", "top-5")
        timing = report.timing
        waiting = "" if timing.loader_fraction is None else f" ({100 * timing.loader_fraction:.0f} % waiting for data)"
        epochs = f"{final.epochs} epoch" + ("" if final.epochs == 1 else "s")
        summary = (
            f"{epochs}, {timing.seconds_per_epoch:.1f} s/epoch{waiting}, {timing.images_per_second:.0f} "
            f"images/s on {report.environment.device}; run directory {result.run_dir}"
        )
        return [table(title, columns, rows, right=columns[2:]), summary]

    emit(payload, as_json, render, quiet=quiet)


@app.command(
    cls=KdcliCommand,
    short_help="Distill a student from a trained teacher into a run folder.",
    epilog="Examples:\n\n"
    "  kdcli distill --preset quickstart\n\n"
    "  kdcli distill --teacher resnet110 --teacher-ckpt t.safetensors --student resnet20 --method vanilla "
    "--data cifar100 --data-dir ~/data\n\n"
    "  kdcli distill --teacher runs/t/student.safetensors --student resnet8 --data fashion-mnist "
    "--train-subset 5000\n\n"
    "  kdcli distill --resume runs/20261123-101500-vanilla-resnet56-resnet8",
)
@with_flags(DISTILL_FLAGS)
def distill(
    flags: Given,
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    resume: ResumeOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    force: ForceOpt = False,
) -> None:
    """Distill a student from a frozen, trained teacher; writes a run directory with the student and a report."""
    from kdcli import api
    from kdcli.cli.options import check_config_inputs, check_preset

    check_preset(preset)
    _check_teacher_flags(flags)
    if resume is not None:
        _resume(resume, flags, preset, config, set_, quiet, json_, force)
        return
    resolved = resolve(_layers(preset, config, flags, set_))
    check_config_inputs(resolved.config.output.dir, preset, config)
    _print_result(api.distill(resolved.config, _reporter(quiet), force=force), json_, quiet)


@app.command(
    cls=KdcliCommand,
    short_help="Train a model alone (a teacher, or the student-alone control).",
    epilog="Examples:\n\n"
    "  kdcli train --model resnet56 --data fashion-mnist --train-subset 5000 --epochs 40\n\n"
    "  kdcli train --preset fmnist5k-teacher --seed 1\n\n"
    "  kdcli train --model resnet110 --preset cifar100 --data-dir ~/data",
)
@with_flags(TRAIN_FLAGS)
def train(
    flags: Given,
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    resume: ResumeOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    force: ForceOpt = False,
) -> None:
    """Train a model without a teacher: a teacher to distill from, or the student-alone baseline."""
    from kdcli import api
    from kdcli.cli.options import check_config_inputs, check_preset

    check_preset(preset)
    if resume is not None:
        _resume(resume, flags, preset, config, set_, quiet, json_, force)
        return
    resolved = resolve([*_layers(preset, config, flags, set_), ("kdcli train", {"method": {"name": "none"}})])
    if resolved.config.student.arch is None:  # the engine would ask for the student, which train calls the model
        raise UsageError("name the architecture to train: --model ARCH")
    check_config_inputs(resolved.config.output.dir, preset, config)
    _print_result(api.train(resolved.config, _reporter(quiet), force=force), json_, quiet)


@app.command(
    cls=KdcliCommand,
    short_help="Evaluate model files: accuracy, NLL, ECE; a --min-top1 gate.",
    name="eval",
    epilog="Examples:\n\n"
    "  kdcli eval runs/r1/student.safetensors\n\n"
    "  kdcli eval a.safetensors b.safetensors --teacher t.safetensors --json\n\n"
    "  kdcli eval student.safetensors --min-top1 85 --quiet || echo 'gate failed'",
)
def eval_(
    files: Annotated[list[Path], typer.Argument(metavar="FILE", help="model files written by kdcli (safetensors)")],
    data: Annotated[
        str | None, typer.Option(metavar="NAME", help="data set; default: the one recorded in each file")
    ] = None,
    data_dir: DataDirOpt = None,
    split: Annotated[
        str, typer.Option(metavar="SPLIT", help="test, or val (with the run's --val-split and --train-subset)")
    ] = "test",
    train_subset: Annotated[
        int | None, typer.Option(metavar="N", help="the run's --train-subset, for --split val")
    ] = None,
    val_split: Annotated[
        float, typer.Option(metavar="FRACTION", help="the run's validation fraction, for --split val")
    ] = 0.0,
    teacher: Annotated[
        Path | None, typer.Option(metavar="FILE", help="teacher file: also report top-1 agreement with it")
    ] = None,
    device: DeviceOpt = "auto",
    batch_size: Annotated[
        int | None,
        typer.Option(min=1, metavar="N", help="images per forward pass (default: 512 on a GPU, 64 on the CPU)"),
    ] = None,
    min_top1: Annotated[
        float | None, typer.Option(metavar="PERCENT", help="exit 1 when a model's top-1 (%) is below this")
    ] = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Evaluate model files: top-1/top-5, NLL, ECE, teacher agreement, parameters, MACs, file size, images/s."""
    from kdcli import api

    if split not in ("test", "val"):
        raise UsageError(f"--split must be test or val, not {split!r}")
    given = {"name": data, "dir": data_dir, "train_subset": train_subset, "val_split": val_split or None}
    data_settings = data_config(**{key: value for key, value in given.items() if value is not None})
    summary = api.evaluate(
        [str(f) for f in files],
        data_settings,
        split=split,
        teacher=teacher,
        device=device,
        batch_size=batch_size,
        min_top1=min_top1,
    )

    def render() -> list[Any]:
        agreement = any(r.teacher_agreement is not None for r in summary.results)
        columns = ["file", "arch", "top-1", "top-5", "NLL", "ECE", "params", "MACs", "MB", "img/s"]
        rows = [
            [
                r.path,
                r.arch,
                f"{r.top1:.2f}",
                f"{r.top5:.2f}",
                f"{r.nll:.3f}",
                f"{r.ece:.2f}",
                f"{r.parameters:,}",
                f"{r.macs / 1e6:.1f} M",
                f"{r.file_bytes / 1e6:.2f}",
                f"{r.images_per_second:.0f}",
            ]
            + ([f"{r.teacher_agreement or 0:.2f}"] if agreement else [])
            for r in summary.results
        ]
        columns += ["agree"] if agreement else []
        return [table(f"kdcli eval — {split}", columns, rows, right=columns[2:])]

    emit(summary.document(), json_, render, quiet=quiet)
    if not summary.passed:
        failed = ", ".join(f"{r.path} ({r.top1:.2f}%)" for r in summary.results if r.passed is False)
        if not quiet:
            typer.echo(f"kdcli: gate failed: top-1 below {min_top1}: {failed}", err=True)
        raise typer.Exit(1)


@app.command(
    cls=KdcliCommand,
    short_help="What the teacher teaches (Tang et al. 2020): knowledge and parts.",
    epilog="Examples:\n\n"
    "  kdcli analyze --teacher runs/teacher/student.safetensors --data fashion-mnist --train-subset 5000 --out an/\n\n"
    "  kdcli analyze --teacher t.safetensors --student runs/r1/student.safetensors --json > analysis.json",
)
def analyze(
    teacher: Annotated[Path, typer.Option(metavar="FILE", help="the teacher's kdcli model file")],
    data: Annotated[
        str | None, typer.Option(metavar="NAME", help="data set; default: the one recorded in the teacher's file")
    ] = None,
    data_dir: DataDirOpt = None,
    student: Annotated[
        Path | None, typer.Option(metavar="FILE", help="a student file: adds the instance level (gradient rescaling)")
    ] = None,
    split: Annotated[str, typer.Option(metavar="SPLIT", help="train (clean, no augmentation), test or val")] = "train",
    train_subset: Annotated[
        int | None, typer.Option(metavar="N", help="the stratified subset the run trained on")
    ] = None,
    temperature: Annotated[
        float, typer.Option(metavar="T", help="the run's T; the analysis is also given at τ = 1")
    ] = 4.0,
    ce_weight: Annotated[float, typer.Option(metavar="γ", help="γ of the KD loss, for the gradient rescaling")] = 0.1,
    kd_weight: Annotated[float, typer.Option(metavar="α", help="α of the KD loss, for the gradient rescaling")] = 0.9,
    device: DeviceOpt = "auto",
    out: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="write analysis.json, analysis.md and the PNG figures here: a new or empty folder, or a previous "
            "analysis (replaced)",
        ),
    ] = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    force: ForceOpt = False,
) -> None:
    """What the teacher teaches (Tang et al. 2020): universe, domain and instance knowledge, and the exact four-part
    decomposition of KL(teacher ‖ matched label smoothing), at τ = 1 and at T."""
    from kdcli import api
    from kdcli.analysis.report import PARTS

    if split not in ("train", "test", "val"):
        raise UsageError(f"--split must be train, test or val, not {split!r}")
    given = {"name": data, "dir": data_dir, "train_subset": train_subset}
    data_settings = data_config(**{key: value for key, value in given.items() if value is not None})
    analysis = api.analyze(
        teacher,
        data_settings,
        student=student,
        split=split,
        temperature=temperature,
        ce_weight=ce_weight,
        kd_weight=kd_weight,
        device=device,
        reporter=_reporter(quiet),
        out=out,
        force=force,
    )
    written = analysis.written

    def render() -> list[Any]:
        columns = ["τ", "ε", "class conf.", "inst. conf.", "class rel.", "inst. rel.", "total (nats)", "most related"]
        rows = []
        for result in analysis.results:
            parts = result.decomposition
            pair = result.domain.most_related[0] if result.domain.most_related else None
            rows.append(
                [
                    f"{result.temperature:g}",
                    f"{result.universe.matched_smoothing:.4f}",
                    *(f"{getattr(parts, key):.4f}" for key in PARTS),
                    f"{parts.total:.4f}",
                    f"{pair.first} – {pair.second}" if pair else "",
                ]
            )
        title = f"kdcli analyze — {analysis.teacher_arch} on {analysis.data} {analysis.split} ({analysis.samples:,})"
        lines: list[Any] = [table(title, columns, rows, right=columns[:-1])]
        return lines + ([f"wrote {len(written)} files to {out}"] if written else [])

    emit(analysis.model_dump(mode="json", by_alias=True), json_, render, quiet=quiet)


@app.command(cls=KdcliCommand, short_help="List the CIFAR zoo registered into timm.")
def models(
    pattern: Annotated[
        str | None,
        typer.Argument(metavar="PATTERN", help="also list timm models matching this pattern, e.g. 'vit_*'"),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """List the CIFAR zoo (registered into timm) with parameter counts; with a pattern, timm's matching names."""
    from kdcli.catalog import ZOO

    zoo = [
        {"name": m.name, "parameters_100_classes": m.parameters_100_classes, "repdistiller_name": m.repdistiller_name}
        for m in ZOO
    ]
    matched: list[str] = []
    if pattern:
        import timm

        matched = timm.list_models(pattern)

    def render() -> list[Any]:
        rows = [[m["name"], f"{m['parameters_100_classes']:,}", m["repdistiller_name"]] for m in zoo]
        columns = ("name", "params (100 classes)", "RepDistiller name")
        found = [table("CIFAR zoo (timm names; 32×32 input)", columns, rows, right=columns[1:2])]
        if pattern:
            return [*found, f"timm models matching {pattern!r} ({len(matched)}): " + ", ".join(matched)]
        return [*found, "Any timm architecture works too: `kdcli models 'resnet*'` lists timm's names."]

    emit({"zoo": zoo, "timm": matched}, json_, render)


@app.command(cls=KdcliCommand, short_help="List the distillation methods and their options.")
def methods(json_: JsonOpt = False) -> None:
    """List the distillation methods and their options with defaults; a broken plugin is listed with its reason."""
    from kdcli.catalog import BrokenPlugin, catalog

    found = catalog()
    payload: dict[str, dict[str, Any]] = {}
    for name, entry in found.items():
        if isinstance(entry, BrokenPlugin):
            payload[name] = {"broken": entry.reason, "entry_point": entry.value}
        else:
            payload[name] = {"summary": entry.summary, "options": entry.options().model_dump(mode="json")}

    def render() -> list[Any]:
        rows = []
        for name, entry in payload.items():
            if "broken" in entry:
                rows.append([name, f"BROKEN: {entry['broken']} ({entry['entry_point']})", ""])
            else:
                rows.append([name, entry["summary"], ", ".join(f"{k}={v}" for k, v in entry["options"].items())])
        title = "methods (--method NAME, options with --set method.KEY=VALUE)"
        return [table(title, ("method", "what it does", "options (defaults)"), rows)]

    emit(payload, json_, render)


@app.command(cls=KdcliCommand, short_help="List the shipped presets (use with --preset NAME).")
def presets(json_: JsonOpt = False) -> None:
    """List the shipped presets (use with --preset NAME)."""
    found = list_presets()
    emit(found, json_, lambda: [table("presets (--preset NAME)", ("preset", "description"), list(found.items()))])


@app.command(
    cls=KdcliCommand,
    short_help="One table over run folders: method, pair, top-1, time; a verdict against a baseline.",
    epilog="Examples:\n\n  kdcli compare runs/*/\n\n  kdcli compare runs/bench-*/ --json > table.json\n\n"
    "  kdcli compare sweeps/r8/ --baseline student --min-gain 0.5 || echo 'no method beats the student by 0.5'",
)
def compare(
    runs: Annotated[
        list[Path],
        typer.Argument(metavar="DIR", help="run directories (seeds of one configuration are grouped), or a sweep's"),
    ],
    baseline: BaselineOpt = "vanilla",
    min_gain: MinGainOpt = None,
    json_: JsonOpt = False,
) -> None:
    """One table over runs: method, pair, top-1 last and best-on-val (mean ± std over seeds), size, wall time; with
    the baseline among them, each arm's difference from it with a 95 % interval, and the best arm. A run given twice
    (another spelling of its path, a link to it) is counted once, with a warning."""
    from kdcli import api
    from kdcli.cli.output import NoteReporter, emit_text

    summary = api.compare(runs, NoteReporter(), baseline=baseline, min_gain=min_gain)
    if json_:
        emit(summary, True, lambda: [])
    else:
        lines = api.verdict_lines(summary["verdict"]) if "verdict" in summary else []
        emit_text(api.markdown_table(summary) + "".join(line + "\n" for line in lines))
    if summary.get("verdict", {}).get("passed") is False:
        raise typer.Exit(1)


@app.command(
    cls=KdcliCommand,
    short_help="Which method and settings give the best student: arms × grid × seeds, packed, with a verdict.",
    epilog="Examples:\n\n"
    "  kdcli sweep --preset fmnist5k-vanilla --teacher t.safetensors --methods student,vanilla,pesf,skd,pea "
    "--seeds 0,1,2 --out sweeps/r8\n\n"
    "  kdcli sweep --preset quickstart --methods vanilla --grid method.temperature=2,4,8 --seeds 0,1 --out sw/\n\n"
    "  kdcli sweep ... --baseline student --min-gain 0.5 || echo 'distillation did not pay here'",
)
@with_flags(DISTILL_FLAGS)
def sweep(
    flags: Given,
    methods: Annotated[
        str,
        typer.Option(
            metavar="A,B,...",
            help="arms: method names, student for the student alone (no teacher), or recipe presets such as "
            "fmnist5k-consistent",
        ),
    ],
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    seeds: Annotated[str, typer.Option(metavar="S,S,...", help="training seeds, each arm runs every one")] = "0,1,2",
    grid: Annotated[
        list[str] | None,
        typer.Option(
            metavar="KEY=V1,V2",
            help="a grid key and its values (repeatable: their product); method.* "
            "keys apply to the arms that have the option",
        ),
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            help="runs at a time; default: from the GPU's free memory and the "
            "measured size of one run, or the CPU cores",
        ),
    ] = None,
    threads: Annotated[
        int | None, typer.Option(metavar="N", help="CPU threads of each run (default 1 on the CPU)")
    ] = None,
    baseline: BaselineOpt = "vanilla",
    min_gain: MinGainOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Run every arm × grid point × seed (each a whole train or distill run in its own folder under --out), several
    at a time; started again with the same command it finishes only what is missing. Ends with the compare table and
    each arm's difference from the baseline with a 95 % interval; exits 1 when a run failed or --min-gain is not met."""
    from kdcli import api
    from kdcli.cli.options import check_preset, cli_spelling, parse_grid, parse_list
    from kdcli.errors import spell

    check_preset(preset)
    _check_teacher_flags(flags)
    arms = parse_list("--methods", methods, str)
    seed_list = parse_list("--seeds", seeds, int)
    resolved = resolve(_layers(preset, config, flags, set_))
    result = api.sweep(
        resolved.config,
        arms,
        seed_list,
        parse_grid(grid or []),
        jobs=jobs,
        threads=threads,
        baseline=baseline,
        min_gain=min_gain,
        reporter=_reporter(quiet),
    )

    def render() -> list[Any]:
        lines: list[Any] = [api.markdown_table(result.compare).rstrip("\n")] if result.compare["rows"] else []
        lines += api.verdict_lines(result.verdict) if result.verdict else []
        lines += [
            f"FAILED {o.name}: {spell(o.reason or '', cli_spelling)}" for o in result.runs if o.status != "finished"
        ]
        return lines

    emit(result.document(cli_spelling), json_, render, quiet=quiet)
    if not result.passed:
        raise typer.Exit(1)


@app.command(
    cls=KdcliCommand,
    short_help="Convert a PyTorch checkpoint to a kdcli model file.",
    name="import",
    epilog="Examples:\n\n"
    "  kdcli import resnet110_cifar100.pth --arch resnet110 --data cifar100 --out resnet110.safetensors\n\n"
    "  kdcli import model_best.pth.tar --arch resnet18 --default-normalization --out r18.safetensors",
)
def import_(
    source: Annotated[
        Path, typer.Argument(metavar="FILE", help="PyTorch checkpoint: RepDistiller, timm .pth.tar or a state dict")
    ],
    arch: Annotated[str, typer.Option(metavar="ARCH", help="its architecture (timm or CIFAR zoo name)")],
    out: Annotated[str, typer.Option(metavar="FILE", help="the safetensors file to write")],
    data: Annotated[
        str | None, typer.Option(metavar="NAME", help="the data set it was trained on (records normalization)")
    ] = None,
    num_classes: Annotated[int | None, typer.Option(metavar="N", help="default: read from the classifier")] = None,
    default_normalization: Annotated[
        bool,
        typer.Option(
            "--default-normalization",
            help="without --data: record the architecture's own normalization (ImageNet's for timm weights)",
        ),
    ] = False,
    json_: JsonOpt = False,
    force: ForceOpt = False,
) -> None:
    """Convert a PyTorch checkpoint to a kdcli safetensors file with metadata (read with weights_only=True)."""
    from kdcli import api
    from kdcli.cli.output import NoteReporter

    # --out stays a string to the check: Path would drop a trailing "/", which says a folder was meant
    card = api.import_checkpoint(
        source,
        arch,
        out,
        data=data,
        num_classes=num_classes,
        reporter=NoteReporter(),
        default_normalization=default_normalization,
        force=force,
    )
    emit(
        {"file": str(out), **card.model_dump(mode="json")},
        json_,
        lambda: [f"wrote {out}: {card.arch}, {card.num_classes} classes, {card.in_chans} input channels"],
    )


@config_app.command(
    "show",
    cls=KdcliCommand,
    epilog="Example:\n\n  kdcli config show --preset fmnist5k-vanilla --epochs 10 --set method.temperature=2",
)
@with_flags(CONFIG_FLAGS)
def config_show(
    flags: Given,
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Print the resolved configuration and where each value came from (default, preset, config, flag, --set)."""
    from kdcli.cli.options import check_preset

    check_preset(preset)
    _check_teacher_flags(flags)
    rows = resolve(_layers(preset, config, flags, set_)).rows()
    payload = {key: {"value": value, "source": source} for key, value, source in rows}
    emit(
        payload,
        json_,
        lambda: [
            table("resolved configuration", ("key", "value", "source"), [(k, json.dumps(v), s) for k, v, s in rows])
        ],
    )


@app.command(
    cls=KdcliCommand,
    short_help="Export a student: ONNX, or a timm folder.",
    epilog="Examples:\n\n"
    "  kdcli export runs/r1/student.safetensors --format onnx --dynamic-batch --out student.onnx\n\n"
    "  kdcli export kdcli:fmnist-mini-resnet20.safetensors --json\n\n"
    "  kdcli export runs/r1/student.safetensors --format timm --out student-timm/   # then, in Python: import "
    "kdcli.models; timm.create_model('local-dir:student-timm', pretrained=True)",
)
def export(
    file: Annotated[str, typer.Argument(metavar="FILE", help="a kdcli model file, or kdcli:NAME for a shipped one")],
    format_: Annotated[
        str,
        typer.Option(
            "--format",
            metavar="FORMAT",
            help="onnx: the student with its input normalization included: it takes float32 images in [0, 1] of "
            "shape (N, C, H, W) and returns logits; needs pip install 'kdcli[onnx]'. timm: a folder (config.json, "
            "model.safetensors) for timm.create_model('local-dir:DIR', pretrained=True), which takes normalized "
            "input (mean/std in config.json)",
        ),
    ] = "onnx",
    out: Annotated[
        str | None, typer.Option(metavar="FILE|DIR", help="default: FILE.onnx or FILE-timm/ next to FILE")
    ] = None,
    opset: Annotated[int | None, typer.Option(metavar="N", help="ONNX opset, 18 or more; default: torch's")] = None,
    dynamic_batch: Annotated[
        bool, typer.Option("--dynamic-batch", help="ONNX: any batch size (default: batch 1)")
    ] = False,
    json_: JsonOpt = False,
    force: ForceOpt = False,
) -> None:
    """Export a student for deployment: ONNX with its input normalization (checked against PyTorch in ONNX Runtime
    before it is kept), or a folder timm loads; written atomically."""
    from kdcli import api

    summary = api.export(file, format=format_, out=out, opset=opset, dynamic_batch=dynamic_batch, force=force)

    def render() -> list[Any]:
        shape = "×".join(str(d) for d in summary.input_shape)
        check = f"max |difference| {summary.max_abs_diff:.1e} ≤ tolerance {summary.tolerance:.1e}"
        if summary.format == "onnx":
            return [
                f"wrote {summary.path}: {summary.arch} as ONNX opset {summary.opset}, input float32 "
                f"{shape} in [0, 1] (normalization included); ONNX Runtime vs PyTorch {check}"
            ]
        return [
            f"wrote {summary.path}/ (config.json, model.safetensors): {summary.arch}, input {shape} "
            f"normalized with the config's mean/std; timm's rebuild vs the file {check}"
        ]

    emit(summary.document(), json_, render)
