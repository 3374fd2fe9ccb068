"""The ``kdcli`` command line (kdcli.cli.app holds the commands).

Exit codes: 0 success; 1 failed run or unmet gate; 2 bad usage, configuration or input file; 130 interrupted after
a resumable checkpoint was written. Results go to stdout, progress and messages to stderr. ``--debug`` (anywhere
on the line) shows tracebacks.
"""

from __future__ import annotations

import signal
import sys
import traceback

import typer

from kdcli.cli.app import app
from kdcli.errors import KdcliError


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


__all__ = ["app", "main"]
