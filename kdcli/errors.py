"""Errors that map to kdcli's exit codes (product.md: 1 failed run or unmet gate, 2 bad input, 130 interrupted)."""

from __future__ import annotations


class KdcliError(Exception):
    """Base of the errors kdcli reports as one line; `exit_code` is what the CLI exits with."""

    exit_code = 1


class UsageError(KdcliError):
    """Bad usage, configuration or input file: the message says what is wrong and how to fix it."""

    exit_code = 2


class RunFailed(KdcliError):
    """A run that could not finish (for example a non-finite loss), or an unmet `--min-top1` gate."""

    exit_code = 1


class Interrupted(KdcliError):
    """The run was interrupted after its last resumable checkpoint was written."""

    exit_code = 130
