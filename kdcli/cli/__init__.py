"""The ``kdcli`` command line (kdcli.cli.app holds the commands).

Exit codes: 0 success; 1 failed run or unmet gate; 2 bad usage, configuration or input file; 130 interrupted after
a resumable checkpoint was written. Results go to stdout, progress and messages to stderr. ``--debug`` (anywhere
on the line) shows tracebacks.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import sys
import traceback

import typer

from kdcli.errors import Interrupted, KdcliError

_signalled = False
"""Set when SIGINT or SIGTERM arrived: an error that follows (a library's import cut short by the interruption and
failing later) is the interruption's doing, and reported as it."""


def _stop_on_sigterm(signum: int, frame: object) -> None:
    # Schedulers and CI runners stop jobs with SIGTERM: treat it like Ctrl-C, so the run says how to resume.
    global _signalled
    _signalled = True
    raise KeyboardInterrupt


def _exit(code: int, process: bool) -> None:
    """``sys.exit(code)``; for an interruption of the process itself, ``os._exit`` after flushing: CPython kills
    itself with SIGINT at exit (whatever the code) once a KeyboardInterrupt has passed through a C extension's
    ``PyRun_String`` (an import cut short), and a caller would then see no exit status at all."""
    if code == 130 and process:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)
    sys.exit(code)


def _interrupted(process: bool) -> None:
    if _speaks(None):
        print(f"kdcli{_rank()}: interrupted", file=sys.stderr)
    _exit(130, process)


def _rank() -> str:
    """`` (rank N)`` under torchrun, so a message says which process it comes from."""
    return f" (rank {os.environ.get('RANK', '?')})" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""


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
            mode = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
        except OSError:
            mode = None
        # An output descriptor open for reading only is not the caller's stream either: a launcher that is a shell
        # script (pyenv's shims) leaves its own script open there when the caller closed the stream (`2>&-`).
        if mode is None or (fd > 0 and mode == os.O_RDONLY):
            held = os.open(os.devnull, os.O_RDWR)
            if held != fd:
                os.dup2(held, fd)
                os.close(held)
            if fd == 1 and mode is not None:
                sys.stdout = None  # as Python sets it for a closed descriptor
            if fd == 2 and mode is not None:
                sys.stderr = None
    if sys.stderr is None:  # print(file=None) would write the error to stdout
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (for the whole process)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app and map errors to exit codes with one-line messages."""
    _hold_closed_streams()
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where the caller ignores it (`nohup`, &)
        signal.signal(signal.SIGINT, _stop_on_sigterm)
    process = argv is None  # the command line of this process, not a call from Python (tests)
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
        _interrupted(process)
    except typer.TyperException as exc:  # usage errors of the vendored click (unknown flag, missing argument): exit 2
        context = getattr(exc, "ctx", None)
        message = exc.format_message()
        if context is None or "\n" in message:  # a bare `kdcli`: the help, as click shows it
            exc.show()  # type: ignore[attr-defined]
        else:  # one line, as kdcli's own errors
            print(f"kdcli: error: {message.rstrip('.')} (see '{context.command_path} -h')", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KdcliError as exc:
        from kdcli.cli.options import cli_spelling

        if debug:
            traceback.print_exc()
        if _speaks(exc):
            command = next((arg for arg in args if not arg.startswith("-")), None)
            print(f"kdcli{_rank()}: error: {exc.spelled(lambda ref: cli_spelling(ref, command))}", file=sys.stderr)
        _exit(exc.exit_code, process)
    except KeyboardInterrupt:
        _interrupted(process)
    except Exception:
        if not _signalled or debug:
            raise
        _interrupted(process)
    if code == 130:  # typer turns a KeyboardInterrupt inside a command into a silent exit code
        _interrupted(process)
    sys.exit(code if isinstance(code, int) else 0)


__all__ = ["main"]
