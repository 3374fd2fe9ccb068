"""Shared fixtures: tiny real runs on the embedded Fashion-MNIST subset (no network, no ../shared)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import kdcli
import kdcli.models  # the CIFAR zoo in timm's registry, for tests that build models directly
from kdcli.catalog import method_spec
from kdcli.interfaces import MethodContext, ModelInfo
from kdcli.methods.base import Method


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


def method_context(classes: int, teacher_width: int = 0) -> MethodContext:
    """What a method is built with in a unit test: the class count and, for a teacher-side adapter, its width."""
    return MethodContext(classes, ModelInfo("student", 0), ModelInfo("teacher", teacher_width), epochs=1)


def build_method(name: str, classes: int, teacher_width: int = 0, **options: Any) -> Method:
    """A catalogued method with these options, as the engine builds it."""
    spec = method_spec(name)
    implementation = spec.load()
    return implementation(spec.options.model_validate(options), method_context(classes, teacher_width))


ZERO = torch.zeros(())
"""The training progress of a unit test's step: the start."""


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``kdcli ARGS`` in this process: its exit code, stdout and stderr."""
    from kdcli.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def refused(capsys: pytest.CaptureFixture[str], code: int, *args: str) -> str:
    """The command exits ``code`` with exactly one line on stderr and no traceback; returns that line."""
    got, _, err = run(capsys, *args)
    assert got == code, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err
