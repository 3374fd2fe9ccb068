"""Results on stdout: exactly one JSON document with ``--json``, else a table; messages go to stderr."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from kdcli.errors import RunFailed


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


def emit(payload: Any, as_json: bool, render: Callable[[], Sequence[Any]]) -> None:
    """Print ``payload`` as one JSON document, or the renderables ``render()`` gives (tables, lines). A stdout that
    cannot take them (a full device, a closed pipe) is a failed command (exit 1) with one line, not a traceback."""
    try:
        if as_json:
            print(json.dumps(payload, indent=2))
        else:
            console = stdout()
            for renderable in render():
                console.print(renderable, highlight=False)
        sys.stdout.flush()
    except OSError as exc:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (nothing more can reach the real one; the exit must not try)
        raise RunFailed(f"cannot write the results to stdout ({exc.strerror or exc})") from None
