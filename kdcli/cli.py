"""The ``kdcli`` command line: Typer commands that turn flags into configuration layers and call the Python API.

Exit codes: 0 success; 1 failed run or unmet gate; 2 bad usage, configuration or input file; 130 interrupted after
a resumable checkpoint was written. Results go to stdout, progress and messages to stderr. ``--debug`` (anywhere
on the line) shows tracebacks.
"""

from __future__ import annotations

import json
import signal
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from kdcli import api
from kdcli.config import Layer, load_preset, parse_set, read_yaml, resolve
from kdcli.engine import Reporter, RunResult
from kdcli.errors import KdcliError, UsageError
from kdcli.progress import RichReporter

app = typer.Typer(
    name="kdcli",
    help="Distill image classifiers: any timm teacher and student, safetensors in and out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
config_app = typer.Typer(help="Inspect the resolved configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")


def stdout() -> Console:
    return Console(soft_wrap=True)


# Options shared by train, distill and config show.
PresetOpt = Annotated[str | None, typer.Option("--preset", help="preset name (see `kdcli presets`) or YAML file")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML configuration file (e.g. a run's config.yaml)")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override any key: --set optim.lr=0.1 (repeatable)")]
DataOpt = Annotated[str | None, typer.Option("--data", help="embedded, fashion-mnist, cifar10, cifar100, imagefolder")]
DataDirOpt = Annotated[str | None, typer.Option("--data-dir", help="folder holding the data set")]
EpochsOpt = Annotated[int | None, typer.Option("--epochs")]
BatchOpt = Annotated[int | None, typer.Option("--batch-size")]
LrOpt = Annotated[float | None, typer.Option("--lr", help="learning rate of the student")]
SeedOpt = Annotated[int | None, typer.Option("--seed")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps")]
OutOpt = Annotated[str | None, typer.Option("--out", help="run directory (default runs/<time>-<method>-<models>)")]
SubsetOpt = Annotated[int | None, typer.Option("--train-subset", help="stratified, seeded subset of N training images")]
ValOpt = Annotated[float | None, typer.Option("--val-split", help="fraction of train held out to pick the best epoch")]
ResumeOpt = Annotated[Path | None, typer.Option("--resume", help="continue the run in this directory")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print exactly one JSON document on stdout")]
PrecisionOpt = Annotated[
    str | None, typer.Option("--precision", help="auto (bf16 on CUDA, else fp32), bf16, fp16, fp32")
]
CompileOpt = Annotated[bool | None, typer.Option("--compile/--no-compile", help="torch.compile (default: on for CUDA)")]
GraphsOpt = Annotated[
    bool | None,
    typer.Option(
        "--cuda-graphs/--no-cuda-graphs",
        help="capture the training step in a CUDA graph (default: on for CUDA unless fp16)",
    ),
]
ChannelsLastOpt = Annotated[
    bool | None, typer.Option("--channels-last/--no-channels-last", help="channels-last memory (default: on for CUDA)")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="no progress or notes on stderr")]


def _layers(preset: str | None, config: Path | None, flags: dict[str, Any], sets: list[str] | None) -> list[Layer]:
    """defaults < preset < --config < flags < --set, each flag its own layer so `config show` can name it."""
    layers: list[Layer] = [("default", {})]
    if preset:
        layers.append((f"preset {preset}", load_preset(preset)))
    if config:
        layers.append((f"config {config}", read_yaml(config)))
    for flag, (key, value) in flags.items():
        if value is None:
            continue
        tree: dict[str, Any] = {}
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
        layers.append((flag, tree))
    layers += [(f"--set {item}", parse_set(item)) for item in sets or []]
    return layers


def _engine_flags(
    precision: str | None, compile_: bool | None, cuda_graphs: bool | None, channels_last: bool | None
) -> dict[str, tuple[str, Any]]:
    return {
        "--precision": ("train.precision", precision),
        "--compile": ("train.compile", compile_),
        "--cuda-graphs": ("train.cuda_graphs", cuda_graphs),
        "--channels-last": ("train.channels_last", channels_last),
    }


def _common_flags(
    data: str | None,
    data_dir: str | None,
    epochs: int | None,
    batch_size: int | None,
    lr: float | None,
    seed: int | None,
    device: str | None,
    out: str | None,
    train_subset: int | None,
    val_split: float | None,
) -> dict[str, tuple[str, Any]]:
    return {
        "--data": ("data.name", data),
        "--data-dir": ("data.dir", data_dir),
        "--train-subset": ("data.train_subset", train_subset),
        "--val-split": ("data.val_split", val_split),
        "--epochs": ("train.epochs", epochs),
        "--batch-size": ("train.batch_size", batch_size),
        "--lr": ("optim.lr", lr),
        "--seed": ("train.seed", seed),
        "--device": ("train.device", device),
        "--out": ("output.dir", out),
    }


def _teacher_flags(teacher: str | None, teacher_ckpt: str | None) -> dict[str, tuple[str, Any]]:
    """``--teacher`` takes an architecture or a kdcli safetensors file whose metadata names it."""
    is_file = teacher is not None and (
        teacher.endswith(".safetensors") or teacher.startswith("kdcli:") or Path(teacher).is_file()
    )
    if teacher is not None and is_file:
        if teacher_ckpt is not None:
            raise UsageError("--teacher is already a file; drop --teacher-ckpt, or give --teacher ARCH")
        return {"--teacher": ("teacher.checkpoint", teacher)}
    return {"--teacher": ("teacher.arch", teacher), "--teacher-ckpt": ("teacher.checkpoint", teacher_ckpt)}


def _resume(run_dir: Path, flags: dict[str, tuple[str, Any]], preset: str | None, config: Path | None,
            sets: list[str] | None, quiet: bool, as_json: bool) -> None:  # fmt: skip
    """Continue a run with the configuration it started with; configuration options would silently differ."""
    given = [flag for flag, (_, value) in flags.items() if value is not None]
    given += [name for name, value in (("--preset", preset), ("--config", config), ("--set", sets)) if value]
    if given:
        raise UsageError(f"--resume continues {run_dir} with its own config.yaml; drop {', '.join(given)}")
    _print_result(api.resume(run_dir, _reporter(quiet)), as_json)


def _reporter(quiet: bool) -> Reporter:
    return Reporter() if quiet else RichReporter()


def _print_result(result: RunResult, as_json: bool) -> None:
    report = result.report
    if as_json:
        summary = {
            "schema": "kdcli.result/1",
            "run_dir": str(result.run_dir),
            "student_file": str(result.student_path),
            "report_file": str(result.run_dir / "report.json"),
            **{key: report[key] for key in ("kind", "method", "final", "teacher", "student", "timing")},
        }
        print(json.dumps(summary, indent=2))
        return
    final, student, teacher = report["final"], report["student"], report["teacher"]
    title = f"kdcli {report['kind']}" + (f" — {report['method']}" if report["kind"] == "distill" else "")
    table = Table(title=title, title_justify="left")
    for column in ("model", "arch", "params", "MACs", "top-1", "top-1 (best val)", "top-5"):
        table.add_column(column, justify="left" if column in ("model", "arch") else "right")
    if teacher:
        table.add_row(
            "teacher",
            teacher["arch"],
            f"{teacher['parameters']:,}",
            f"{teacher['macs'] / 1e6:.1f} M",
            f"{teacher['top1']:.2f}",
            "",
            f"{teacher['top5']:.2f}",
        )
    best = f"{final['best_top1']:.2f}" if final.get("best_top1") is not None else "–"
    table.add_row(
        "student",
        student["arch"],
        f"{student['parameters']:,}",
        f"{student['macs'] / 1e6:.1f} M",
        f"{final['last_top1']:.2f}",
        best,
        f"{final['last_top5']:.2f}",
    )
    console = stdout()
    console.print(table)
    timing = report["timing"]
    console.print(
        f"{final['epochs']} epochs, {timing['seconds_per_epoch']:.1f} s/epoch, "
        f"{timing['images_per_second']:.0f} images/s on {report['environment']['device']}; "
        f"run directory {result.run_dir}",
        highlight=False,
    )


@app.command(
    epilog="Examples:\n\n"
    "  kdcli distill --preset quickstart\n\n"
    "  kdcli distill --teacher resnet110 --teacher-ckpt t.safetensors --student resnet20 --method vanilla "
    "--data cifar100 --data-dir ~/data\n\n"
    "  kdcli distill --teacher runs/t/student.safetensors --student resnet8 --data fashion-mnist "
    "--train-subset 5000\n\n"
    "  kdcli distill --resume runs/20261123-101500-vanilla-resnet56-resnet8"
)
def distill(
    teacher: Annotated[str | None, typer.Option(help="teacher architecture, or a kdcli .safetensors file")] = None,
    teacher_ckpt: Annotated[str | None, typer.Option(help="teacher weights (safetensors) for --teacher ARCH")] = None,
    teacher_pretrained: Annotated[bool, typer.Option(help="timm hub weights for the teacher (online)")] = False,
    student: Annotated[str | None, typer.Option(help="student architecture (timm or CIFAR zoo)")] = None,
    student_ckpt: Annotated[str | None, typer.Option(help="initial student weights (safetensors)")] = None,
    method: Annotated[str | None, typer.Option(help="strategy (see `kdcli methods`)")] = None,
    allow_untrained_teacher: Annotated[bool, typer.Option(help="allow random teacher weights (smoke tests)")] = False,
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    data: DataOpt = None,
    data_dir: DataDirOpt = None,
    train_subset: SubsetOpt = None,
    val_split: ValOpt = None,
    epochs: EpochsOpt = None,
    batch_size: BatchOpt = None,
    lr: LrOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    out: OutOpt = None,
    set_: SetOpt = None,
    resume: ResumeOpt = None,
    precision: PrecisionOpt = None,
    compile_: CompileOpt = None,
    cuda_graphs: GraphsOpt = None,
    channels_last: ChannelsLastOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Distill a student from a frozen, trained teacher; writes a run directory with the student and a report."""
    flags = {
        **_teacher_flags(teacher, teacher_ckpt),
        "--teacher-pretrained": ("teacher.pretrained", teacher_pretrained or None),
        "--student": ("student.arch", student),
        "--student-ckpt": ("student.checkpoint", student_ckpt),
        "--method": ("method.name", method),
        "--allow-untrained-teacher": ("train.allow_untrained_teacher", allow_untrained_teacher or None),
        **_common_flags(data, data_dir, epochs, batch_size, lr, seed, device, out, train_subset, val_split),
        **_engine_flags(precision, compile_, cuda_graphs, channels_last),
    }
    if resume is not None:
        _resume(resume, flags, preset, config, set_, quiet, json_)
        return
    resolved = resolve(_layers(preset, config, flags, set_))
    _print_result(api.distill(resolved.config, _reporter(quiet)), json_)


@app.command(
    epilog="Examples:\n\n"
    "  kdcli train --model resnet56 --data fashion-mnist --train-subset 5000 --epochs 40\n\n"
    "  kdcli train --preset fmnist5k-teacher --seed 1\n\n"
    "  kdcli train --model resnet110 --preset cifar100 --data-dir ~/data"
)
def train(
    model: Annotated[str | None, typer.Option(help="architecture to train (timm or CIFAR zoo)")] = None,
    model_ckpt: Annotated[str | None, typer.Option(help="initial weights (safetensors)")] = None,
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    data: DataOpt = None,
    data_dir: DataDirOpt = None,
    train_subset: SubsetOpt = None,
    val_split: ValOpt = None,
    epochs: EpochsOpt = None,
    batch_size: BatchOpt = None,
    lr: LrOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    out: OutOpt = None,
    set_: SetOpt = None,
    resume: ResumeOpt = None,
    precision: PrecisionOpt = None,
    compile_: CompileOpt = None,
    cuda_graphs: GraphsOpt = None,
    channels_last: ChannelsLastOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train a model without a teacher: a teacher to distill from, or the student-alone baseline."""
    flags = {
        "--model": ("student.arch", model),
        "--model-ckpt": ("student.checkpoint", model_ckpt),
        **_common_flags(data, data_dir, epochs, batch_size, lr, seed, device, out, train_subset, val_split),
        **_engine_flags(precision, compile_, cuda_graphs, channels_last),
    }
    if resume is not None:
        _resume(resume, flags, preset, config, set_, quiet, json_)
        return
    resolved = resolve([*_layers(preset, config, flags, set_), ("kdcli train", {"method": {"name": "none"}})])
    _print_result(api.train(resolved.config, _reporter(quiet)), json_)


@app.command(
    name="eval",
    epilog="Examples:\n\n"
    "  kdcli eval runs/r1/student.safetensors\n\n"
    "  kdcli eval a.safetensors b.safetensors --teacher t.safetensors --json\n\n"
    "  kdcli eval student.safetensors --min-top1 85 --quiet || echo 'gate failed'",
)
def eval_(
    files: Annotated[list[Path], typer.Argument(help="model files written by kdcli (safetensors)")],
    data: Annotated[str | None, typer.Option(help="data set; default: the one recorded in each file")] = None,
    data_dir: DataDirOpt = None,
    split: Annotated[str, typer.Option(help="test, or val (with the run's --val-split and --train-subset)")] = "test",
    train_subset: SubsetOpt = None,
    val_split: Annotated[float, typer.Option(help="the run's validation fraction, for --split val")] = 0.0,
    teacher: Annotated[Path | None, typer.Option(help="teacher file: also report top-1 agreement with it")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps")] = "auto",
    batch_size: Annotated[int, typer.Option(min=1)] = 512,
    min_top1: Annotated[float | None, typer.Option(help="exit 1 when a model's top-1 (%) is below this")] = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Evaluate model files: top-1/top-5, NLL, ECE, teacher agreement, parameters, MACs, file size, images/s."""
    if split not in ("test", "val"):
        raise UsageError(f"--split must be test or val, not {split!r}")
    summary = api.evaluate(
        [str(f) for f in files],
        data=data,
        data_dir=data_dir,
        split=split,
        teacher=teacher,
        device=device,
        batch_size=batch_size,
        min_top1=min_top1,
        train_subset=train_subset,
        val_split=val_split,
    )
    if json_:
        print(json.dumps(summary, indent=2))
    else:
        table = Table(title=f"kdcli eval — {split}", title_justify="left")
        columns = ["file", "arch", "top-1", "top-5", "NLL", "ECE", "params", "MACs", "MB", "img/s"]
        has_agreement = any("teacher_agreement" in r for r in summary["results"])
        columns += ["agree"] if has_agreement else []
        for column in columns:
            table.add_column(column, justify="left" if column in ("file", "arch") else "right")
        for r in summary["results"]:
            row = [
                r["path"],
                r["arch"],
                f"{r['top1']:.2f}",
                f"{r['top5']:.2f}",
                f"{r['nll']:.3f}",
                f"{r['ece']:.2f}",
                f"{r['parameters']:,}",
                f"{r['macs'] / 1e6:.1f} M",
                f"{r['file_bytes'] / 1e6:.2f}",
                f"{r['images_per_second']:.0f}",
            ]
            table.add_row(*row, *([f"{r.get('teacher_agreement', 0):.2f}"] if has_agreement else []))
        stdout().print(table)
    if not summary["passed"]:
        failed = ", ".join(f"{r['path']} ({r['top1']:.2f}%)" for r in summary["results"] if not r["passed"])
        if not quiet:
            Console(stderr=True).print(f"kdcli: gate failed: top-1 below {min_top1}: {failed}", highlight=False)
        raise typer.Exit(1)


@app.command()
def models(
    pattern: Annotated[
        str | None, typer.Argument(help="also list timm models matching this pattern, e.g. 'vit_*'")
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """List the CIFAR zoo (registered into timm) with parameter counts; with a pattern, timm's matching names."""
    import timm

    from kdcli.metrics import count_parameters
    from kdcli.models import ZOO_ALIASES, ZOO_MODELS

    aliases = {zoo: alias for alias, zoo in ZOO_ALIASES.items()}
    zoo = [
        {
            "name": n,
            "parameters_100_classes": count_parameters(timm.create_model(n, num_classes=100)),
            "repdistiller_name": aliases.get(n),
        }
        for n in ZOO_MODELS
    ]
    matched = timm.list_models(pattern) if pattern else []
    if json_:
        print(json.dumps({"zoo": zoo, "timm": matched}, indent=2))
        return
    table = Table(title="CIFAR zoo (timm names; 32×32 input)", title_justify="left")
    table.add_column("name")
    table.add_column("params (100 classes)", justify="right")
    table.add_column("RepDistiller name")
    for entry in zoo:
        table.add_row(str(entry["name"]), f"{entry['parameters_100_classes']:,}", str(entry["repdistiller_name"] or ""))
    console = stdout()
    console.print(table)
    if pattern:
        console.print(f"timm models matching {pattern!r} ({len(matched)}): " + ", ".join(matched), highlight=False)
    else:
        console.print("Any timm architecture works too: `kdcli models 'resnet*'` lists timm's names.", highlight=False)


@app.command()
def methods(json_: JsonOpt = False) -> None:
    """List the distillation strategies and their options with defaults."""
    from kdcli.strategies import available_strategies

    found = {name: (cls.summary, cls.Options().model_dump(mode="json")) for name, cls in available_strategies().items()}
    if json_:
        print(json.dumps({n: {"summary": s, "options": o} for n, (s, o) in found.items()}, indent=2))
        return
    table = Table(title="strategies (--method NAME, options with --set method.KEY=VALUE)", title_justify="left")
    for column in ("method", "what it does", "options (defaults)"):
        table.add_column(column)
    for name, (summary, options) in found.items():
        table.add_row(name, summary, ", ".join(f"{k}={v}" for k, v in options.items()))
    stdout().print(table)


@app.command()
def presets(json_: JsonOpt = False) -> None:
    """List the shipped presets (use with --preset NAME)."""
    from kdcli.config import list_presets

    found = list_presets()
    if json_:
        print(json.dumps(found, indent=2))
        return
    table = Table(title="presets (--preset NAME)", title_justify="left")
    table.add_column("preset")
    table.add_column("description")
    for name, description in found.items():
        table.add_row(name, description)
    stdout().print(table)


@app.command(
    epilog="Examples:\n\n  kdcli compare runs/*/\n\n  kdcli compare runs/bench-*/ --json > table.json",
)
def compare(
    runs: Annotated[list[Path], typer.Argument(help="run directories (seeds of one configuration are grouped)")],
    json_: JsonOpt = False,
) -> None:
    """One table over runs: method, pair, top-1 last and best-on-val (mean ± std over seeds), size, wall time."""
    from kdcli.compare import compare as compare_runs
    from kdcli.compare import markdown_table

    summary = compare_runs([str(r) for r in runs])
    print(json.dumps(summary, indent=2) if json_ else markdown_table(summary), end="" if not json_ else "\n")


@app.command(
    name="import",
    epilog="Examples:\n\n"
    "  kdcli import resnet110_cifar100.pth --arch resnet110 --data cifar100 --out resnet110.safetensors\n\n"
    "  kdcli import model_best.pth.tar --arch resnet18 --out r18.safetensors",
)
def import_(
    source: Annotated[Path, typer.Argument(help="PyTorch checkpoint: RepDistiller, timm .pth.tar or a state dict")],
    arch: Annotated[str, typer.Option(help="its architecture (timm or CIFAR zoo name)")],
    out: Annotated[Path, typer.Option(help="the safetensors file to write")],
    data: Annotated[str | None, typer.Option(help="the data set it was trained on (records normalization)")] = None,
    num_classes: Annotated[int | None, typer.Option(help="default: read from the classifier")] = None,
    json_: JsonOpt = False,
) -> None:
    """Convert a PyTorch checkpoint to a kdcli safetensors file with metadata (read with weights_only=True)."""
    from kdcli.importer import import_checkpoint

    card = import_checkpoint(source, arch, out, data=data, num_classes=num_classes)
    if json_:
        print(json.dumps({"file": str(out), **card.model_dump(mode="json")}, indent=2))
    else:
        stdout().print(
            f"wrote {out}: {card.arch}, {card.num_classes} classes, {card.in_chans} input channels", highlight=False
        )


@config_app.command(
    "show", epilog="Example:\n\n  kdcli config show --preset fmnist5k-vanilla --epochs 10 --set method.temperature=2"
)
def config_show(
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    teacher: Annotated[str | None, typer.Option(help="teacher architecture or file")] = None,
    student: Annotated[str | None, typer.Option(help="student architecture")] = None,
    method: Annotated[str | None, typer.Option(help="strategy")] = None,
    data: DataOpt = None,
    data_dir: DataDirOpt = None,
    train_subset: SubsetOpt = None,
    val_split: ValOpt = None,
    epochs: EpochsOpt = None,
    batch_size: BatchOpt = None,
    lr: LrOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    out: OutOpt = None,
    set_: SetOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Print the resolved configuration and where each value came from (default, preset, config, flag, --set)."""
    flags = {
        **_teacher_flags(teacher, None),
        "--student": ("student.arch", student),
        "--method": ("method.name", method),
        **_common_flags(data, data_dir, epochs, batch_size, lr, seed, device, out, train_subset, val_split),
    }
    resolved = resolve(_layers(preset, config, flags, set_))
    rows = resolved.rows()
    if json_:
        print(json.dumps({key: {"value": value, "source": source} for key, value, source in rows}, indent=2))
        return
    table = Table(title="resolved configuration", title_justify="left")
    for column in ("key", "value", "source"):
        table.add_column(column)
    for key, value, source in rows:
        table.add_row(key, json.dumps(value), source, style=None if source == "default" else "bold")
    stdout().print(table)


def _stop_on_sigterm(signum: int, frame: object) -> None:
    # Schedulers and CI runners stop jobs with SIGTERM: treat it like Ctrl-C, so the run says how to resume.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app and map errors to exit codes with one-line messages."""
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    try:
        # Without standalone mode, click returns the code of a `typer.Exit` raised inside a command.
        code = app(args=args, prog_name="kdcli", standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except typer.TyperException as exc:  # usage errors of the vendored click: they print themselves, exit 2
        exc.show()  # type: ignore[attr-defined]
        sys.exit(exc.exit_code)
    except KdcliError as exc:
        if debug:
            traceback.print_exc()
        print(f"kdcli: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("kdcli: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
