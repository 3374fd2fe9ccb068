"""The ``kdcli`` command line (kdcli.cli.app holds the commands).

Exit codes: 0 success; 1 failed run or unmet gate; 2 bad usage, configuration or input file; 130 interrupted after
a resumable checkpoint was written. Results go to stdout, progress and messages to stderr. ``--debug`` (anywhere
on the line) shows tracebacks.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback

import typer

from kdcli.errors import Interrupted, KdcliError


def _stop_on_sigterm(signum: int, frame: object) -> None:
    # Schedulers and CI runners stop jobs with SIGTERM: treat it like Ctrl-C, so the run says how to resume.
    raise KeyboardInterrupt


def _rank() -> str:
    """`` (rank N)`` under torchrun, so a message says which process it comes from."""
    return f" (rank {os.environ['RANK']})" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""


def _speaks(error: KdcliError | None) -> bool:
    """Under torchrun rank 0 speaks for the run; another rank only about a failure of its own (an interruption,
    which torchrun sends every rank when one fails, is rank 0's to report)."""
    if os.environ.get("RANK", "0") == "0":
        return True
    return error is not None and not isinstance(error, Interrupted)


def _hold_closed_streams() -> None:
    """A standard descriptor closed by the caller (`>&-`) would be handed to the next file kdcli opens (a model file,
    a report being written), and whatever is written to that stream would land in the file. Each closed one is held
    on /dev/null instead; ``sys.stdout`` stays None, so results meant for a closed stdout fail the command (exit 1,
    kdcli.cli.output) rather than vanish."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            held = os.open(os.devnull, os.O_RDWR)
            if held != fd:
                os.dup2(held, fd)
                os.close(held)
    if sys.stderr is None:  # print(file=None) would write the error to stdout
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (for the whole process)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app and map errors to exit codes with one-line messages."""
    _hold_closed_streams()
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    try:
        from kdcli.cli.app import app  # inside the try: Ctrl-C during start-up is an interruption, not a traceback

        # Without standalone mode, click returns the code of a `typer.Exit` raised inside a command.
        code = app(args=args, prog_name="kdcli", standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except typer.TyperException as exc:  # usage errors of the vendored click (unknown flag, missing argument): exit 2
        context = getattr(exc, "ctx", None)
        message = exc.format_message()
        if context is None or "\n" in message:  # a bare `kdcli`: the help, as click shows it
            exc.show()  # type: ignore[attr-defined]
        else:  # one line, as kdcli's own errors
            print(f"kdcli: error: {message.rstrip('.')} (see '{context.command_path} -h')", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KdcliError as exc:
        if debug:
            traceback.print_exc()
        if _speaks(exc):
            print(f"kdcli{_rank()}: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        if _speaks(None):
            print(f"kdcli{_rank()}: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


__all__ = ["main"]
