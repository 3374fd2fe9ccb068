"""kdcli's help format (kdcli.cli.help) comes through typer's ``cls=``, and leaves typer itself as it was."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import pytest
import typer
from typer.testing import CliRunner

from kdcli.cli.help import KdcliContext

from ..conftest import run

CUT = re.compile(r"\w-$")
"""A line ending in a word cut at its hyphen ("--train-", "runs/20261123-101500-vanilla-")."""


def test_importing_the_app_patches_nothing_in_typer() -> None:
    probe = """
import typer, typer.core
watched = {
    "TyperArgument.get_usage_pieces": (typer.core.TyperArgument, "get_usage_pieces"),
    "TyperArgument.display_type_rich": (typer.core.TyperArgument, "display_type_rich"),
    "TyperCommand.context_class": (typer.core.TyperCommand, "context_class"),
    "TyperGroup.context_class": (typer.core.TyperGroup, "context_class"),
    "Context.formatter_class": (typer.Context, "formatter_class"),
}
try:
    from typer._click import _textwrap, formatting
    watched["_textwrap.TextWrapper"] = (_textwrap, "TextWrapper")
    watched["formatting.wrap_text"] = (formatting, "wrap_text")
    watched["formatting.HelpFormatter"] = (formatting, "HelpFormatter")
except ImportError:  # a typer on click itself
    pass
before = {name: getattr(owner, attribute) for name, (owner, attribute) in watched.items()}
import kdcli.cli.app
changed = [name for name, (owner, attribute) in watched.items() if getattr(owner, attribute) is not before[name]]
print("CHANGED", changed)
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert "CHANGED []" in done.stdout, done.stdout + done.stderr


def test_another_typer_app_keeps_typers_own_help() -> None:
    import kdcli.cli.app  # noqa: F401  (what used to patch typer process-wide)

    other = typer.Typer(rich_markup_mode=None)

    @other.command()
    def main(files: Annotated[list[Path], typer.Argument(metavar="FILE")]) -> None:
        pass

    result = CliRunner().invoke(other, ["--help"], terminal_width=80)
    assert result.exit_code == 0 and "{FILE}" in result.output, result.output


def test_usage_shows_arguments_by_name(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run(capsys, "eval", "-h")
    assert code == 0 and out.startswith("Usage: kdcli eval [OPTIONS] FILE...\n"), out
    assert "\n  FILE  model files written by kdcli" in out and "<list" not in out, out  # the metavar alone
    code, out, _ = run(capsys, "import", "-h")
    assert code == 0 and out.startswith("Usage: kdcli import [OPTIONS] FILE\n"), out
    code, out, _ = run(capsys, "models", "-h")  # an optional argument
    assert code == 0 and out.startswith("Usage: kdcli models [OPTIONS] [PATTERN]\n"), out
    code, out, _ = run(capsys, "config", "-h")
    assert code == 0 and out.startswith("Usage: kdcli config [OPTIONS] COMMAND [ARGS]...\n"), out
    assert not [line for line in out.splitlines() if "{" in line]


@pytest.mark.parametrize("columns", ["50", "60"])
@pytest.mark.parametrize("command", [["distill"], ["train"], ["eval"], ["analyze"], ["export"], ["import"]])
def test_narrow_help_cuts_no_word_at_its_hyphen(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, command: list[str], columns: str
) -> None:
    monkeypatch.setenv("COLUMNS", columns)
    code, out, _ = run(capsys, *command, "-h")
    assert code == 0 and out.startswith(f"Usage: kdcli {command[0]} "), out
    cut = [line for line in out.splitlines() if CUT.search(line)]
    assert not cut, cut


@pytest.mark.parametrize("width", [50, 60, 80])
def test_the_formatter_wraps_at_spaces_only(width: int) -> None:
    """Every word (an option name, a dated path) comes out whole, in the usage line, text and option lists."""
    text = (
        "pick --train-subset N with --val-split for runs/20261123-101500-vanilla - a dash; --cuda-graphs / "
        "--no-cuda-graphs and --channels-last / --no-channels-last, --allow-untrained-teacher --sync-batchnorm"
    )
    words = text.split()

    def written(write: Callable[[Any], None]) -> list[str]:
        formatter = KdcliContext.formatter_class(width=width)
        write(formatter)
        out: str = formatter.getvalue()
        assert "\ufdd0" not in out and max(len(line) for line in out.splitlines()) <= width, out
        return out.split()

    assert written(lambda formatter: formatter.write_text(text)) == words
    assert written(lambda formatter: formatter.write_usage("kdcli distill", text)) == [
        "Usage:",
        "kdcli",
        "distill",
        *words,
    ]
    assert written(lambda formatter: formatter.write_dl([("--set KEY=VALUE", text)])) == ["--set", "KEY=VALUE", *words]
