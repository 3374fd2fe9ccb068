"""Results on stdout: exactly one JSON document with ``--json``, else a table; messages go to stderr.

A stdout that cannot take the results — a full device, a pipe whose reader has gone (``| head -c1``), a closed
descriptor (``>&-``) — fails the command (exit 1) with one line on stderr, never a traceback and never a silent
exit 0. JSON is always valid: a number that is not finite is written as the string "inf", "-inf" or "nan"
(kdcli.reporting.finite), and a note on stderr names where.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from kdcli.cli.options import cli_spelling
from kdcli.errors import RunFailed, spell
from kdcli.interfaces import Reporter
from kdcli.reporting.finite import described, dumps


def stdout() -> Console:
    return Console(soft_wrap=True)


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[str] = ()) -> Table:
    """A rich table; the columns named in ``right`` are right-aligned (numbers)."""
    found = Table(title=title, title_justify="left")
    for column in columns:
        found.add_column(column, justify="right" if column in right else "left")
    for row in rows:
        found.add_row(*(str(cell) for cell in row))
    return found


def stdout_failed(reason: str) -> RunFailed:
    """The error for results that cannot reach stdout; stdout is pointed at /dev/null first, so that Python's own
    flush at exit does not fail a second time (with a traceback-like "Exception ignored" message)."""
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (nothing more can reach the real one; the exit must not try)
    return RunFailed(
        f"cannot write the results to stdout ({reason}); they are incomplete or missing: send them to "
        "a file with room (> FILE), or to a reader that reads to the end"
    )


def note(text: str) -> None:
    """One line on stderr (when there is a stderr)."""
    if sys.stderr is not None:
        print(f"kdcli: {text}", file=sys.stderr)


class NoteReporter(Reporter):
    """A reporter for commands without progress (compare, import): each note one ``kdcli:`` line on stderr, its
    options spelled as flags."""

    def note(self, message: str) -> None:
        note(spell(message, cli_spelling))


def write(produce: Callable[[], None]) -> None:
    """Run ``produce`` (which prints to stdout) and flush; any failure to write is a failed command (exit 1)."""
    if sys.stdout is None:  # Python starts with no sys.stdout when descriptor 1 is closed (`>&-`)
        raise stdout_failed("it is closed")
    try:
        produce()
        sys.stdout.flush()
    except OSError as exc:  # BrokenPipeError included
        reason = "Broken pipe: its reader has exited" if exc.errno == errno.EPIPE else exc.strerror or str(exc)
        raise stdout_failed(reason) from None


def emit(payload: Any, as_json: bool, render: Callable[[], Sequence[Any]], quiet: bool = False) -> None:
    """Print ``payload`` as one JSON document, or the renderables ``render()`` gives (tables, lines). A number in the
    JSON that is not finite is written as "inf", "-inf" or "nan", with a note on stderr (unless ``quiet``)."""
    if as_json:
        text, found = dumps(payload)
        if found and not quiet:
            note(f"note: {described(found)}")
        write(lambda: print(text))
        return

    def tables() -> None:
        console = stdout()
        for renderable in render():
            console.print(renderable, highlight=False)

    write(tables)


def emit_text(text: str) -> None:
    """Print ``text`` as it is (Markdown, say), with the failures of ``emit``."""
    write(lambda: print(text, end=""))
