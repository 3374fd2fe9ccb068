"""Errors that map to kdcli's exit codes (product.md: 1 failed run or unmet gate, 2 bad input, 130 interrupted), and
how a message names an option without knowing who is reading it.

Below the command line a message names an option with ``option(name, value)``: ``name`` is the option as the Python
API knows it — a configuration key (``"output.dir"``, ``"method.sps"``) or a function's argument (``"force"``,
``"min_top1"``) — and ``value`` what to give it, if the message suggests one. The error keeps these references as
data (``KdcliError.options``, with ``run`` for the run folder concerned); ``str(error)`` spells them as a Python
caller writes them (``method.sps=false``, ``force=True``), and the command line as its flags (kdcli.cli.flags). The
same goes for the notes a run sends to its ``Reporter``: they are spelled by ``spell``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_OPEN, _VALUE, _CLOSE = "\ue000", "\ue001", "\ue002"  # private-use characters: never in a path or a value
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_REFERENCE = re.compile(f"{_OPEN}([^{_VALUE}{_CLOSE}]*)(?:{_VALUE}([^{_CLOSE}]*))?{_CLOSE}")


@dataclass(frozen=True)
class OptionRef:
    """An option a message names: its API name, and the value the message suggests (as text), if any."""

    name: str
    value: str | None = None


def option(name: str, value: object = None) -> str:
    """A reference to the option ``name`` (with a suggested ``value``) inside a message, spelled when shown."""
    return f"{_OPEN}{name}{'' if value is None else _VALUE + str(value)}{_CLOSE}"


def references(text: str) -> tuple[OptionRef, ...]:
    """The options ``text`` names, in order."""
    return tuple(OptionRef(match[1], match[2]) for match in _REFERENCE.finditer(text))


def spell(text: str, spelling: Callable[[OptionRef], str] | None = None) -> str:
    """``text`` with each option reference spelled by ``spelling`` (default: as the Python API writes it)."""
    return _REFERENCE.sub(lambda match: (spelling or api_spelling)(OptionRef(match[1], match[2])), text)


def api_spelling(reference: OptionRef) -> str:
    """``name`` or ``name=value``, as a Python caller writes an argument or a configuration key; a function of the
    API (``kdcli.resume``) as its call."""
    name, value = reference.name, reference.value
    if name.startswith("kdcli."):
        return f"{name}({'' if value is None else repr(value)})"
    return name if value is None else f"{name}={value}"


def one_line(error: BaseException | str, limit: int = 200, *, named: bool = False) -> str:
    """What another library raised, said in one line inside kdcli's own message: the first line of the message (or of
    a text), terminal colour codes removed, whitespace collapsed, cut at ``limit`` characters with "…"; ``named``
    puts the exception's type first (``OSError: ...``). An exception without a message is named by its type."""
    lines = [line for line in _ANSI.sub("", str(error)).splitlines() if line.strip()]
    line = " ".join(lines[0].split()) if lines else ""
    if isinstance(error, BaseException) and (named or not line):
        line = f"{type(error).__name__}: {line}" if line else type(error).__name__
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


class KdcliError(Exception):
    """Base of the errors kdcli reports as one line; ``exit_code`` is what the CLI exits with. The message may name
    options with ``option``; ``run`` is the run folder the error is about, where there is one."""

    exit_code = 1

    def __init__(self, message: str = "", *, run: str | Path | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.run = Path(run) if run is not None else None

    @property
    def options(self) -> tuple[OptionRef, ...]:
        """The options the message names (what to change, or what was wrong)."""
        return references(self.message)

    def spelled(self, spelling: Callable[[OptionRef], str] | None = None) -> str:
        return spell(self.message, spelling)

    def __str__(self) -> str:
        return self.spelled()


class UsageError(KdcliError):
    """Bad usage, configuration or input file: the message says what is wrong and how to fix it."""

    exit_code = 2


class RunFailed(KdcliError):
    """A run that could not finish (for example a non-finite loss), or an unmet top-1 gate."""

    exit_code = 1


class Interrupted(KdcliError):
    """The run was interrupted after its last resumable checkpoint was written."""

    exit_code = 130
