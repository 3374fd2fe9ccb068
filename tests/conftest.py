"""Shared fixtures: tiny real runs on the embedded Fashion-MNIST subset (no network, no ../shared)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import kdcli


def tiny_config(out: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    """A distillation config small enough for a CPU test: 300 images, batch 50."""
    config: dict[str, Any] = {
        "teacher": {"arch": "resnet8"},
        "student": {"arch": "resnet8"},
        "data": {"name": "embedded", "train_subset": 300},
        "optim": {"lr": 0.05},
        "schedule": {"name": "cosine"},
        "train": {"epochs": 2, "batch_size": 50, "eval_batch_size": 1000, "device": "cpu"},
        "output": {"dir": str(out)},
    }
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    return config


@pytest.fixture(scope="session")
def teacher_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small teacher trained by kdcli itself (one epoch of resnet8 on 300 embedded images)."""
    out = tmp_path_factory.mktemp("teacher")
    config = tiny_config(out / "run", train={"epochs": 1})
    del config["teacher"]
    return kdcli.train(config).student_path
