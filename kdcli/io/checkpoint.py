"""The resumable training checkpoint of a run directory: everything a killed run needs to end at the same weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from kdcli.errors import UsageError
from kdcli.io.files import atomic_write

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> None:
    atomic_write(run_dir / CHECKPOINT_NAME, lambda tmp: torch.save(state, tmp))


def load_checkpoint(run_dir: Path) -> dict[str, Any]:
    path = run_dir / CHECKPOINT_NAME
    if not path.is_file():
        raise UsageError(f"{run_dir} has no {CHECKPOINT_NAME}; --resume takes a run directory written by kdcli")
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    return state
