"""kdcli's plain help, through typer's public extension point (``cls=`` on the app and on each command) rather than
by patching typer, so that any other typer app in the process keeps typer's own help.

It differs from typer's in three ways:

- an argument with a metavar shows the metavar alone ("FILE"), as an option does, not "FILE <list[Path]>";
- the usage line shows a required argument as "FILE" (typer writes "{FILE}", which reads like shell brace
  expansion), an optional one as "[FILE]", with "..." when it takes several, as click and most CLIs do;
- help is wrapped at spaces only, so no option name (--train-subset) or path is cut at its hyphen.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import typer
import typer.core

_HYPHEN = "\ufdd0"
"""Stands for "-" while click wraps a text (a Unicode noncharacter: never in help text, one column wide like "-"),
so the wrapper, which breaks after hyphens, sees none; written back as "-" as the formatter writes."""


def _unbreakable(text: str) -> str:
    return text.replace("-", _HYPHEN)


class WholeWordsFormatter(typer.Context.formatter_class):  # type: ignore[misc, valid-type]
    """The help formatter of typer's click (whichever it is: typer names it on its Context), wrapping at spaces
    only."""

    def write(self, string: str) -> None:
        super().write(string.replace(_HYPHEN, "-"))

    def write_usage(self, prog: str, args: str = "", *rest: Any, **options: Any) -> None:
        super().write_usage(prog, _unbreakable(args), *rest, **options)

    def write_text(self, text: str) -> None:
        super().write_text(_unbreakable(text))

    def write_dl(self, rows: Sequence[tuple[str, str]], *rest: Any, **options: Any) -> None:
        super().write_dl([(first, _unbreakable(second)) for first, second in rows], *rest, **options)


class KdcliContext(typer.Context):
    """The context of kdcli's commands: click makes its help and usage formatter from ``formatter_class``."""

    formatter_class = WholeWordsFormatter


def _usage_piece(argument: typer.core.TyperArgument) -> str:
    name = argument.metavar or (argument.name or "").upper()
    return (name if argument.required else f"[{name}]") + ("..." if argument.nargs != 1 else "")


def _usage_pieces(command: typer.core.TyperCommand | typer.core.TyperGroup, ctx: Any) -> list[str]:
    """click's usage pieces, kdcli's for the arguments."""
    pieces = [command.options_metavar] if command.options_metavar else []
    for param in command.get_params(ctx):
        if isinstance(param, typer.core.TyperArgument):
            pieces.append(_usage_piece(param))
        else:
            pieces += param.get_usage_pieces(ctx)
    return pieces


def _format_parameters(command: typer.core.TyperCommand | typer.core.TyperGroup, ctx: Any, formatter: Any) -> None:
    """typer's Arguments and Options sections, an argument with a metavar named by the metavar alone."""
    arguments, options = [], []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:
            continue
        if isinstance(param, typer.core.TyperArgument):
            arguments.append((param.metavar, record[1]) if param.metavar else record)
        elif param.param_type_name == "option":
            options.append(record)
    for heading, rows in (("Arguments", arguments), ("Options", options)):
        if rows:
            with formatter.section(heading):
                formatter.write_dl(rows)


class KdcliCommand(typer.core.TyperCommand):
    """A kdcli command: ``@app.command(cls=KdcliCommand)``."""

    context_class = KdcliContext

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return _usage_pieces(self, ctx)

    def format_options(self, ctx: Any, formatter: Any) -> None:
        _format_parameters(self, ctx, formatter)


class KdcliGroup(typer.core.TyperGroup):
    """kdcli and its command groups: ``typer.Typer(cls=KdcliGroup)``."""

    context_class = KdcliContext

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [*_usage_pieces(self, ctx), self.subcommand_metavar]

    def format_options(self, ctx: Any, formatter: Any) -> None:
        _format_parameters(self, ctx, formatter)
        self.format_commands(ctx, formatter)
