"""Errors carry data, and only the command line speaks of flags (issue 21): a message raised below ``kdcli/cli/`` names
an option by its API name (kdcli.errors.option); the Python caller reads it as an argument or a configuration key,
the command line as its flag."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import kdcli
from kdcli.cli.options import cli_spelling
from kdcli.errors import OptionRef, UsageError, one_line, option

PACKAGE = Path(kdcli.__file__).parent
FLAG = re.compile(r"(?<![\w-])--[a-z]")


def test_no_module_below_the_cli_names_a_flag() -> None:
    """Every string literal (messages, notes, docstrings) outside kdcli/cli/ is free of ``--flag``s."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "cli" in path.relative_to(PACKAGE).parts[:1]:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and FLAG.search(node.value):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {node.value.strip()[:60]!r}")
    assert not found, "\n".join(found)


def test_an_error_keeps_the_options_it_names_and_its_run() -> None:
    error = UsageError(f"{option('output.dir', '/tmp/x')} is a file; choose another {option('output.dir')}", run="/r")
    assert error.options == (OptionRef("output.dir", "/tmp/x"), OptionRef("output.dir"))
    assert error.run == Path("/r")
    assert str(error) == "output.dir=/tmp/x is a file; choose another output.dir"
    assert error.spelled(cli_spelling) == "--out /tmp/x is a file; choose another --out"


@pytest.mark.parametrize(
    ("reference", "python", "command_line"),
    [
        (OptionRef("method.sps", "false"), "method.sps=false", "--set method.sps=false"),  # no flag of its own
        (OptionRef("train.cuda_graphs", "false"), "train.cuda_graphs=false", "--no-cuda-graphs"),  # a switch
        (OptionRef("train.cuda_graphs"), "train.cuda_graphs", "--cuda-graphs"),
        (OptionRef("data.val_split", "0.1"), "data.val_split=0.1", "--val-split 0.1"),
        (OptionRef("min_top1"), "min_top1", "--min-top1"),  # an API argument: its flag
        (OptionRef("kdcli.resume", "runs/a"), "kdcli.resume('runs/a')", "kdcli distill --resume runs/a"),
    ],
)
def test_each_reader_spells_an_option_its_own_way(reference: OptionRef, python: str, command_line: str) -> None:
    error = UsageError(option(reference.name, reference.value))
    assert str(error) == python
    assert error.spelled(lambda ref: cli_spelling(ref, "distill")) == command_line


def test_the_python_api_is_told_its_own_names(tmp_path: Path) -> None:
    """``kdcli.evaluate(min_top1=...)`` names the argument, not ``--min-top1``."""
    with pytest.raises(UsageError) as caught:
        kdcli.evaluate([], min_top1=120)
    assert str(caught.value).startswith("min_top1 is a top-1 in percent")
    assert caught.value.options == (OptionRef("min_top1"),)


def test_one_line_is_the_first_line_plain_and_short() -> None:
    assert one_line(ValueError("\x1b[31mbad\x1b[0m   value\nsecond line")) == "bad value"
    assert one_line(OSError()) == "OSError"
    assert one_line(KeyError("k"), named=True) == "KeyError: 'k'"
    assert one_line("x" * 300, limit=10) == "xxxxxxxxx…"
