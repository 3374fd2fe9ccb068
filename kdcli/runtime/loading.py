"""Devices and models for a run: the frozen teacher, the student (with its method's transform), and any kdcli model
file opened for inference — one path from a file to a normalized model, for teachers and students alike."""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import torch

from kdcli.config import DataConfig, DataName, RunConfig, device_name
from kdcli.data import DataBundle
from kdcli.errors import UsageError, option
from kdcli.io.files import probe_path, sha256_file
from kdcli.io.model_file import ModelCard, conv_in_chans, load_model, load_weights, read_card, read_model_file
from kdcli.models.factory import resolve_arch, sized_model
from kdcli.models.wrappers import FrozenTeacher, NormalizedModel

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then the CPU; an explicit device that is absent is a usage error."""
    try:
        device_name(name)
    except ValueError as exc:
        raise UsageError(f"{option('device')}: {exc}") from None
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(
            f"{option('device', 'cuda')} was asked for but no CUDA GPU is visible; use "
            f"{option('device', 'cpu')} or auto"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(
            f"{option('device', 'mps')} was asked for but MPS is not available; use {option('device', 'cpu')} or auto"
        )
    return device


def resolve_checkpoint_path(reference: str) -> Path:
    """A checkpoint reference: a path, or ``kdcli:NAME`` for a model file shipped with kdcli."""
    if reference.startswith("kdcli:"):
        return ASSETS_DIR / reference.removeprefix("kdcli:")
    path = Path(reference).expanduser()
    probe_path(path, "model file")
    if path.exists() and not (path.is_dir() or stat.S_ISREG(os.stat(path).st_mode)):  # a pipe would block the read
        raise UsageError(
            f"{path} is not a regular file (a pipe, socket or device); give the path of a model file (.safetensors)"
        )
    return path


def open_model_file(
    path: Path,
    device: torch.device,
    arch: str | None = None,
    num_classes: int | None = None,
    frozen: bool = False,
    stats: tuple[Sequence[float], Sequence[float]] | None = None,
    channels_last: bool = False,
) -> tuple[NormalizedModel, ModelCard | None]:
    """A model file built and loaded (its student transform applied, from its metadata), wrapped with its own
    normalization: a ``FrozenTeacher`` when ``frozen``, else an eval-mode ``NormalizedModel``. A file without kdcli
    metadata needs ``arch`` and ``num_classes``, and is normalized with ``stats`` (the data's mean and std).
    ``channels_last``: weights and inputs in that memory format (the resolved acceleration's choice)."""
    model, card = load_model(path, arch=arch, num_classes=num_classes)
    in_chans = card.in_chans if card else conv_in_chans(model.state_dict())
    mean, std = (card.mean, card.std) if card else (stats or ((0.5,) * in_chans, (0.5,) * in_chans))
    name = card.arch if card else str(arch)
    wrapper = FrozenTeacher if frozen else NormalizedModel
    wrapped = wrapper(model, mean, std, in_chans, name).to(device).eval()
    return (wrapped.to_channels_last() if channels_last else wrapped), card


@dataclass
class Teacher:
    module: FrozenTeacher
    arch: str
    sha256: str | None
    path: Path | None


def check_models_named(config: RunConfig, teacher: bool) -> None:
    """The checks of the configuration alone that building the models makes first: a student architecture, and (with
    ``teacher``) trained teacher weights or the smoke-test switch with an architecture. A sweep makes them for every
    run before it starts any."""
    if config.student.arch is None:
        raise UsageError(f"name the student architecture: {option('student.arch', 'ARCH')}")
    spec = config.teacher
    if not teacher or spec.checkpoint is not None or spec.pretrained:
        return
    if not config.train.allow_untrained_teacher:
        raise UsageError(
            f"the teacher has no trained weights: pass {option('teacher.checkpoint', 'FILE')} (or "
            f"{option('teacher.arch', 'FILE.safetensors')}); {option('train.allow_untrained_teacher')} distills "
            "from random weights for smoke tests"
        )
    if spec.arch is None:
        raise UsageError(f"name the teacher architecture: {option('teacher.arch', 'ARCH')}")


def load_teacher(config: RunConfig, data: DataBundle, device: torch.device) -> Teacher:
    """The frozen teacher, refused when it has no trained weights (unless explicitly allowed)."""
    spec = config.teacher
    if spec.checkpoint is None and not spec.pretrained:
        check_models_named(config, teacher=True)
        assert spec.arch is not None
        in_chans = check_channels(spec.in_chans or data.in_chans, data, f"the teacher {spec.arch}")
        model, _ = sized_model(spec.arch, data.num_classes, in_chans, data.image_size[0], kwargs=spec.kwargs)
        return Teacher(FrozenTeacher(model, data.mean, data.std, in_chans, spec.arch).to(device), spec.arch, None, None)
    if spec.checkpoint is None:  # timm hub weights
        assert spec.arch is not None
        model, _ = sized_model(
            spec.arch, data.num_classes, spec.in_chans or 3, data.image_size[0], pretrained=True, kwargs=spec.kwargs
        )
        cfg = getattr(model, "pretrained_cfg", {})
        mean, std = cfg.get("mean", data.mean), cfg.get("std", data.std)
        teacher = FrozenTeacher(model, mean, std, spec.in_chans or 3, spec.arch).to(device)
        return Teacher(teacher, spec.arch, None, None)
    path = resolve_checkpoint_path(spec.checkpoint)
    card = read_card(path)
    if card is not None:  # checked before building, so the message names the real mismatch
        if spec.arch is not None and resolve_arch(spec.arch) != card.arch:
            raise UsageError(
                f"{path} holds a {card.arch!r}, not the {spec.arch!r} the teacher is configured as; "
                "drop the teacher arch (the file names it) or pass the matching file"
            )
        if card.num_classes != data.num_classes:
            raise UsageError(
                f"the teacher {path} predicts {card.num_classes} classes but {data.name} has {data.num_classes}; "
                "pass a teacher trained on this data"
            )
        check_channels(card.in_chans, data, f"the teacher {path}")
    module, card = open_model_file(
        path,
        device,
        arch=None if card else spec.arch,
        num_classes=data.num_classes,
        frozen=True,
        stats=(data.mean, data.std),
    )
    assert isinstance(module, FrozenTeacher)
    return Teacher(module, module.arch, sha256_file(path), path)


def build_student(config: RunConfig, data: DataBundle, device: torch.device) -> NormalizedModel:
    """The student as configured, with initial weights from ``student.checkpoint`` when given."""
    spec = config.student
    check_models_named(config, teacher=False)
    assert spec.arch is not None
    in_chans = check_channels(spec.in_chans or data.in_chans, data, "the student")
    model, kwargs = sized_model(spec.arch, data.num_classes, in_chans, data.image_size[0], spec.pretrained, spec.kwargs)
    if spec.checkpoint is not None:
        path = resolve_checkpoint_path(spec.checkpoint)
        tensors, card = read_model_file(path)
        if card is not None and card.num_classes != data.num_classes:
            raise UsageError(
                f"{path} predicts {card.num_classes} classes but {data.name} has {data.num_classes}; "
                "start from weights of this data's classes, or drop the checkpoint"
            )
        load_weights(model, tensors, path)
    student = NormalizedModel(model, data.mean, data.std, in_chans, resolve_arch(spec.arch)).to(device)
    student.model_kwargs = kwargs
    return student


def data_of_file(data: DataConfig, card: ModelCard, path: Path) -> DataConfig:
    """The data a model file is measured on: ``data`` as given when its ``name`` was set, else with the data set the
    file records (``eval`` and ``analyze`` default to it), refused when the file records none or one kdcli does not
    know."""
    if "name" in data.model_fields_set:
        return data
    if card.dataset is None:
        raise UsageError(f"{path} does not record its data set; pass {option('data', 'NAME')}")
    if card.dataset not in get_args(DataName):
        raise UsageError(
            f"{path} records the data set {card.dataset!r}, which kdcli does not know; pass "
            f"{option('data', 'NAME')} ({', '.join(get_args(DataName))})"
        )
    return data.model_copy(update={"name": card.dataset})


def check_channels(model_channels: int, data: DataBundle, what: str) -> int:
    """A model takes the data's channels, or three for grey data (repeated); anything else is a usage error."""
    if model_channels != data.in_chans and not (data.in_chans == 1 and model_channels == 3):
        raise UsageError(
            f"{what} takes {model_channels}-channel images but {data.name} has {data.in_chans}; use a model made for "
            f"{data.in_chans}-channel images"
        )
    return model_channels
