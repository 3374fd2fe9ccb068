"""The resumable training checkpoint of a run directory: everything a killed run needs to end at the same weights."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch

from kdcli.errors import UsageError, one_line, option
from kdcli.io.files import atomic_write

CHECKPOINT_NAME = "checkpoint.pt"
RESUMABLE_KEYS = frozenset({"epoch", "student", "method", "optimizer", "scheduler", "scaler", "history", "rng"})
"""What a checkpoint holds for a run to resume (kdcli.training.run.Run.state)."""


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> None:
    atomic_write(run_dir / CHECKPOINT_NAME, lambda tmp: torch.save(state, tmp))


def load_checkpoint(run_dir: Path) -> dict[str, Any]:
    """A run's checkpoint, read with ``weights_only=True`` (tensors and plain data, never pickled code)."""
    path = run_dir / CHECKPOINT_NAME
    if os.path.lexists(path) and not path.is_file():  # not "stopped before its first checkpoint": something is there
        raise UsageError(
            f"{path} is not a regular file (a folder, a pipe or a broken link), so {run_dir} cannot "
            f"resume: move it away and start the run again with a new {option('output.dir')}",
            run=run_dir,
        )
    if not path.is_file():
        if (run_dir / "config.yaml").is_file():
            raise UsageError(
                f"{run_dir} was stopped before its first checkpoint, so there is nothing to resume; run its original "
                f"command again (a new {option('output.dir')}, or this one)",
                run=run_dir,
            )
        raise UsageError(
            f"{run_dir} has no {CHECKPOINT_NAME}; {option('kdcli.resume')} takes a run directory written by kdcli",
            run=run_dir,
        )
    try:
        with warnings.catch_warnings():  # torch warns about a foreign pickle before failing on it: one line, not three
            warnings.simplefilter("ignore")
            state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncation and tampering come as many types (EOFError, RuntimeError, UnpicklingError)
        raise UsageError(
            f"{path} cannot be read ({one_line(exc, 160)}); it is damaged or not kdcli's, so this run cannot resume: "
            f"start it again with a new {option('output.dir')}",
            run=run_dir,
        ) from None
    if not isinstance(state, dict) or not set(state) >= RESUMABLE_KEYS:
        raise UsageError(
            f"{path} is not a kdcli run's checkpoint (it lacks the training state), so this run cannot "
            f"resume: start it again with a new {option('output.dir')}",
            run=run_dir,
        )
    return state
