"""The one table from command-line flag to configuration key, and the options it generates for ``train``, ``distill``
and ``config show``. A flag's help is its configuration key's description in the schema (kdcli.config) unless the
table says otherwise, so the two never drift apart."""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import BaseModel

from kdcli.config import MAX_YAML_DEPTH, RefusedYAML, RunConfig, load_yaml, nested
from kdcli.errors import OptionRef, UsageError


@dataclass(frozen=True)
class Flag:
    """A command-line flag that sets one configuration key (one layer of its own, named by the flag)."""

    decls: str
    """typer's declaration: ``--epochs``, or ``--compile/--no-compile`` for a switch with both senses."""
    key: str
    kind: type
    help: str | None = None
    _: KW_ONLY
    presence: bool = False
    """A flag that only turns something on (``--allow-untrained-teacher``): absent means unset, not false."""
    metavar: str | None = None
    """What the help shows for the value; default by kind: N, X or TEXT."""

    @property
    def name(self) -> str:
        return self.decls.split("/")[0]

    @property
    def param(self) -> str:
        return self.name.lstrip("-").replace("-", "_")


def schema_help(key: str) -> str | None:
    """The description of a dotted configuration key in the schema."""
    model: type[BaseModel] = RunConfig
    *sections, leaf = key.split(".")
    for section in sections:
        annotation = model.model_fields[section].annotation
        assert isinstance(annotation, type) and issubclass(annotation, BaseModel)
        model = annotation
    field = model.model_fields.get(leaf)
    return field.description if field else None


TEACHER = (
    Flag(
        "--teacher",
        "teacher.arch",
        str,
        "teacher architecture, or a kdcli .safetensors file (its metadata names it)",
        metavar="ARCH|FILE",
    ),
    Flag(
        "--teacher-ckpt", "teacher.checkpoint", str, "teacher weights (safetensors) for --teacher ARCH", metavar="FILE"
    ),
    Flag(
        "--teacher-pretrained", "teacher.pretrained", bool, "timm hub weights for the teacher (online)", presence=True
    ),
    Flag("--student", "student.arch", str, "student architecture (timm or CIFAR zoo)", metavar="ARCH"),
    Flag("--student-ckpt", "student.checkpoint", str, "initial student weights (safetensors)", metavar="FILE"),
    Flag("--method", "method.name", str, "distillation method (see `kdcli methods`)", metavar="NAME"),
    Flag("--allow-untrained-teacher", "train.allow_untrained_teacher", bool, presence=True),
)
MODEL = (
    Flag("--model", "student.arch", str, "architecture to train (timm or CIFAR zoo)", metavar="ARCH"),
    Flag("--model-ckpt", "student.checkpoint", str, "initial weights (safetensors)", metavar="FILE"),
)
RUN = (
    Flag("--data", "data.name", str, "embedded, fashion-mnist, cifar10, cifar100, imagefolder", metavar="NAME"),
    Flag("--data-dir", "data.dir", str, metavar="DIR"),
    Flag("--train-subset", "data.train_subset", int),
    Flag("--val-split", "data.val_split", float, metavar="FRACTION"),
    Flag("--mixup", "data.mixup", float, metavar="ALPHA"),
    Flag("--cutmix", "data.cutmix", float, metavar="ALPHA"),
    Flag("--epochs", "train.epochs", int),
    Flag("--batch-size", "train.batch_size", int),
    Flag("--lr", "optim.lr", float, "learning rate of the student", metavar="LR"),
    Flag("--seed", "train.seed", int),
    Flag("--device", "train.device", str, "auto, cpu, cuda, cuda:N or mps", metavar="DEVICE"),
    Flag("--out", "output.dir", str, metavar="DIR"),
    Flag("--precision", "train.precision", str, "auto (bf16 on CUDA, else fp32), bf16, fp16, fp32", metavar="MODE"),
    Flag("--compile/--no-compile", "train.compile", bool),
    Flag("--cuda-graphs/--no-cuda-graphs", "train.cuda_graphs", bool),
    Flag("--channels-last/--no-channels-last", "train.channels_last", bool),
    Flag("--sync-batchnorm", "train.sync_batchnorm", bool, presence=True),
)
DISTILL_FLAGS = TEACHER + RUN
TRAIN_FLAGS = MODEL + RUN
CONFIG_FLAGS = DISTILL_FLAGS

Given = dict[str, tuple[str, Any]]
"""The flags a command was given: flag name → (configuration key, value); unset flags are left out."""


FLAG_OF_KEY: dict[str, Flag] = {flag.key: flag for flag in RUN + TEACHER}
"""The flag that sets a configuration key, where one does (``--model`` is ``kdcli train``'s ``--student``)."""


def cli_spelling(reference: OptionRef, command: str | None = None) -> str:
    """An option named in a message (kdcli.errors.option) as the command line writes it: a configuration key as its
    flag (``output.dir`` → ``--out``) or as ``--set key=value`` where no flag sets it, an API argument as its flag
    (``min_top1`` → ``--min-top1``); a suggested value follows the flag. ``kdcli.resume`` is the command that
    continues the run, ``kdcli train --resume DIR`` when ``command`` (the one that failed) is train or distill."""
    name, value = reference.name, reference.value
    if name == "run_dir":  # kdcli.resume's folder
        return "--resume" if value is None else f"--resume {value}"
    if name == "kdcli.resume":
        resume = "--resume" if value is None else f"--resume {value}"
        return f"kdcli {command} {resume}" if command in ("train", "distill") and value is not None else resume
    if name in FLAG_OF_KEY:
        setting = FLAG_OF_KEY[name]
        if setting.kind is bool and value is not None:  # a switch: --compile / --no-compile
            on, _, off = setting.decls.partition("/")
            return on if value.lower() == "true" else off or on
        return setting.name if value is None else f"{setting.name} {value}"
    if "." in name:
        return f"--set {name}={'VALUE' if value is None else value}"
    flag_name = "--" + name.replace("_", "-")
    return flag_name if value is None else f"{flag_name} {value}"


def parse_set(assignment: str) -> dict[str, Any]:
    """``--set a.b.c=value`` as a nested mapping; the value is read as YAML (numbers, booleans, lists)."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
        raise UsageError(f"--set expects key.path=value, got {assignment!r} (example: --set optim.lr=0.1)")
    if key.count(".") >= MAX_YAML_DEPTH:
        raise UsageError(
            f"--set {key[:60]}...: the key nests deeper than {MAX_YAML_DEPTH} levels, and a configuration "
            "key has 2 or 3 (example: --set optim.lr=0.1)"
        )
    try:
        value = load_yaml(raw) if raw.strip() else None
    except RefusedYAML as exc:
        raise UsageError(f"--set {key}: {exc}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"--set {key}: cannot read {raw!r} as a value ({exc.__class__.__name__})") from None
    return nested(key.strip(), value)


def parse_list(flag: str, text: str, kind: type) -> list[Any]:
    """``--seeds 0,1,2`` as a list of ``kind``; an empty item or one that is not a ``kind`` is a usage error."""
    items = [item.strip() for item in text.split(",")]
    try:
        values = [kind(item) for item in items if item]
    except ValueError:
        raise UsageError(f"{flag} takes a comma-separated list of {kind.__name__}s, not {text!r}") from None
    if not values or len(values) != len(items):
        raise UsageError(f"{flag} takes a comma-separated list without empty items, not {text!r}")
    return values


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """``--grid method.temperature=2,4,8`` (repeatable) as ``{"method.temperature": [2, 4, 8]}``, each value read
    as YAML, as ``--set`` reads one."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or not raw.strip():
            raise UsageError(f"--grid expects KEY=V1,V2,..., got {item!r} (example: --grid method.temperature=2,4)")
        if key in grid:
            raise UsageError(f"--grid names {key} twice; give its values once: --grid {key}=V1,V2")
        values = [value.strip() for value in raw.split(",")]
        if not all(values):
            raise UsageError(f"--grid {key}: an empty value in {raw!r}; give V1,V2,... without empty items")
        grid[key] = []
        for value in values:
            tree: Any = parse_set(f"{key}={value}")  # the key checked and the value read as --set reads it
            for part in key.split("."):
                tree = tree[part]
            grid[key].append(tree)
    return grid


def teacher_key(value: str) -> str:
    """``--teacher`` names an architecture, or a kdcli model file (whose metadata names the architecture): any path
    that exists but a bare folder name (``resnet20/`` beside a ``--teacher resnet20`` is still the architecture), so
    a folder, a pipe or a device given as the teacher is refused as a file, not taken for an architecture name."""
    if value.endswith(".safetensors") or value.startswith("kdcli:"):
        return "teacher.checkpoint"
    try:
        exists = os.path.lexists(value) and (os.sep in value or not os.path.isdir(value))
    except (OSError, ValueError):  # a name the system cannot look up is no file
        exists = False
    return "teacher.checkpoint" if exists else "teacher.arch"


def check_config_inputs(out: str | None, preset: str | None, config: Path | None) -> None:
    """Refuse, forced or not, a run folder where the run's ``config.yaml`` would replace the ``--config`` or
    ``--preset`` file the run was configured from (``--config out/config.yaml --out out --force``)."""
    from kdcli.io.files import check_run_directory

    inputs = [path for path in (config, Path(preset) if preset else None) if path is not None]
    if out and inputs:
        check_run_directory(Path(out).expanduser(), inputs, force=True)


def check_preset(preset: str | None) -> None:
    """``--preset ""`` (``--preset "$P"`` with P unset) is refused, not read as "no preset"."""
    if preset is not None and not preset.strip():
        raise UsageError("--preset is empty; give a preset name (`kdcli presets` lists them) or a YAML file")


def with_flags(flags: tuple[Flag, ...]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command one option per flag; the command receives those that were given as ``flags: Given``."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(command, eval_str=True)  # the annotations as objects, in the command's module
        own = [p for p in signature.parameters.values() if p.name != "flags"]
        generated = []
        for flag in flags:
            help_text = flag.help or schema_help(flag.key)
            if flag.presence:
                annotation: Any = Annotated[bool, typer.Option(flag.decls, help=help_text)]
                default: Any = False
            else:
                metavar = flag.metavar or {int: "N", float: "X"}.get(flag.kind, "TEXT")
                option = typer.Option(flag.decls, help=help_text, metavar=None if flag.kind is bool else metavar)
                annotation = Annotated[flag.kind | None, option]
                default = None
            generated.append(
                inspect.Parameter(flag.param, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
            )

        @functools.wraps(command)
        def run(**kwargs: Any) -> Any:
            given: Given = {}
            for flag in flags:
                value = kwargs.pop(flag.param)
                if value is None or (flag.presence and value is False):
                    continue
                key = teacher_key(value) if flag.name == "--teacher" else flag.key
                given[flag.name] = (key, value)
            return command(flags=given, **kwargs)

        parameters = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + generated
        run.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in parameters}
        return run

    return decorate
