"""Model files: safetensors with kdcli's metadata (the ``ModelCard``), written atomically (kdcli.io.files).

A model file is plain safetensors: ``timm.create_model(arch, num_classes=...)`` (after ``import kdcli`` for zoo
names) loads its tensors with ``load_state_dict``. Its metadata, one string per key as safetensors requires,
is the :class:`ModelCard`; plain strings are stored as they are and everything else as JSON, so other
safetensors tools show readable values.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator, model_validator
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from kdcli._version import __version__
from kdcli.catalog import student_transform
from kdcli.errors import UsageError, option
from kdcli.interfaces import StudentTransform
from kdcli.io.files import atomic_write
from kdcli.models.factory import create_model

MODEL_FORMAT = "kdcli.model/1"
MAX_CLASSES = 1_000_000
MAX_CHANNELS = 1024
MAX_SIDE = 8192
"""Bounds on what a card may say: beyond them a model cannot be built or run (a damaged or forged card)."""


class ModelCard(BaseModel):
    """What a model file says about itself, so that ``kdcli eval FILE`` needs no other flag."""

    model_config = ConfigDict(protected_namespaces=())  # ``model_kwargs`` is timm's word, not pydantic's namespace

    arch: str
    num_classes: int
    in_chans: int
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    dataset: str | None = None
    classes: list[str] | None = None
    method: str | None = None
    teacher_arch: str | None = None
    teacher_sha256: str | None = None
    metrics: dict[str, float] = {}
    model_kwargs: dict[str, Any] = {}
    student_transform: StudentTransform | None = None
    """A registered student transform (kdcli.catalog), stored as ``{"name": ..., "options": {...}}``: kdcli applies it
    again before loading the tensors, so a transformed student (Pea-KD's SPS, a plugin's) loads like any other."""
    kdcli_version: str = __version__

    @field_validator("input_size", mode="before")
    @classmethod
    def _three(cls, value: Any) -> Any:
        if not (isinstance(value, list | tuple) and len(value) == 3):
            raise ValueError(f"must be [channels, height, width], not {value!r}")
        return value

    @field_validator("num_classes", "in_chans")
    @classmethod
    def _positive(cls, value: int, info: ValidationInfo) -> int:
        if value < 1:
            raise ValueError(f"must be 1 or more, not {value}")
        most = MAX_CLASSES if info.field_name == "num_classes" else MAX_CHANNELS
        if value > most:  # building such a layer would ask for terabytes
            raise ValueError(f"must be at most {most:,}, not {value:,}")
        return value

    @field_validator("mean", "std")
    @classmethod
    def _finite(cls, values: tuple[float, ...], info: ValidationInfo) -> tuple[float, ...]:
        if not values:
            raise ValueError("is empty; it needs one value per input channel")
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"must be finite numbers, not {list(values)}")
        if info.field_name == "std" and not all(v > 0 for v in values):
            raise ValueError(f"must be positive (images are divided by it), not {list(values)}")
        return values

    @field_validator("student_transform", mode="before")
    @classmethod
    def _named(cls, value: Any) -> Any:
        if isinstance(value, StudentTransform) or value is None:
            return value
        if not (
            isinstance(value, dict)
            and isinstance(value.get("name"), str)
            and isinstance(value.get("options", {}), dict)
            and set(value) <= {"name", "options"}
        ):
            raise ValueError('must be {"name": NAME, "options": {...}}')
        return StudentTransform(value["name"], dict(value.get("options", {})))

    @model_validator(mode="after")
    def _shapes_fit(self) -> ModelCard:
        """The channels agree: ``input_size`` is (in_chans, height, width) with a positive size, and mean and std
        give one value per channel (or one for all, as for grey data fed to a three-channel model)."""
        channels, height, width = self.input_size
        if channels != self.in_chans or not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE):
            raise ValueError(
                f"input_size must be [in_chans, height, width] = [{self.in_chans}, H, W] with H and W "
                f"from 1 to {MAX_SIDE}, not {list(self.input_size)}"
            )
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, self.in_chans):
                raise ValueError(f"{name} has {len(values)} values for {self.in_chans}-channel input: {list(values)}")
        if self.classes is not None and len(self.classes) != self.num_classes:
            raise ValueError(f"classes names {len(self.classes)} classes but num_classes is {self.num_classes}")
        return self


def _encode_card(card: ModelCard) -> dict[str, str]:
    metadata = {"format": MODEL_FORMAT}
    for key, value in card.model_dump(mode="json").items():
        if value is not None:
            metadata[key] = value if isinstance(value, str) else json.dumps(value)
    return metadata


def _decode_card(metadata: dict[str, str], path: Path) -> ModelCard:
    values: dict[str, Any] = {}
    for key, raw in metadata.items():
        field = ModelCard.model_fields.get(key)
        if field is not None:
            try:
                values[key] = raw if field.annotation in (str, str | None) else json.loads(raw)
            except (ValueError, RecursionError):  # RecursionError: JSON nested thousands deep
                raise UsageError(
                    f"{path}: kdcli metadata is damaged ({key!r} is not JSON); re-export the model"
                ) from None
    if "sps" in metadata and "student_transform" not in values:  # files written before 0.2.0
        try:
            values["student_transform"] = {"name": "sps", "options": json.loads(metadata["sps"])}
        except ValueError:
            raise UsageError(f"{path}: kdcli metadata is damaged ('sps' is not JSON); re-export the model") from None
    try:
        return ModelCard.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        raise UsageError(
            f"{path}: kdcli metadata is damaged ({where + ': ' if where else ''}{message}); re-export the model"
        ) from None


def shared_aliases(model: nn.Module) -> set[str]:
    """State-dict names that repeat a tensor listed earlier (shared weights): stored once, under the first name."""
    seen: set[tuple[int, tuple[int, ...]]] = set()
    aliases = set()
    for name, tensor in model.state_dict(keep_vars=True).items():
        key = (tensor.data_ptr(), tuple(tensor.shape))
        if key in seen and tensor.numel() > 0:
            aliases.add(name)
        seen.add(key)
    return aliases


def save_model(path: Path, model: nn.Module, card: ModelCard) -> None:
    """Write the model's tensors (shared ones once) and its card to a safetensors file, atomically."""
    aliases = shared_aliases(model)
    tensors = {
        name: tensor.detach().to("cpu").contiguous()
        for name, tensor in model.state_dict().items()
        if name not in aliases
    }
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=_encode_card(card)))


def require_file(
    path: Path, what: str = "model file", hint: str = "give the path of a model file (.safetensors)"
) -> None:
    """Refuse a path that is not a model file: missing, a folder, something that is not a regular file (a device, a
    pipe: reading would block or never end), or a path the system cannot look up (a name too long, a link loop)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UsageError(f"{what} {path} is a loop of symbolic links; {hint}") from None
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
            raise UsageError(f"{what} {path} cannot be used ({exc.strerror or exc}); {hint}") from None
        raise UsageError(f"{what} {path} does not exist; {hint}") from None
    except ValueError:  # a NUL byte in the name
        raise UsageError(f"{what} {path!s:.200} is not a valid path; {hint}") from None
    if stat.S_ISDIR(mode):
        raise UsageError(f"{path} is a folder; {hint}")
    if not stat.S_ISREG(mode):
        raise UsageError(f"{what} {path} is not a regular file (a device, pipe or socket); {hint}")


def read_model_file(path: Path) -> tuple[dict[str, torch.Tensor], ModelCard | None]:
    """The tensors of a safetensors file, and its kdcli card when it has one."""
    require_file(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError) as exc:
        hint = "; convert it with `kdcli import`" if path.suffix in (".pth", ".pt", ".tar") else ""
        raise UsageError(f"{path} is not a readable safetensors file ({exc}){hint}") from None
    card = _decode_card(metadata, path) if metadata.get("format") == MODEL_FORMAT else None
    return tensors, card


def require_card(path: Path, command: str) -> ModelCard:
    """The card of a model file that a command (``kdcli eval``) can only use with its metadata; refused before any
    work, with the way to make such a file from plain weights."""
    card = read_card(path)
    if card is None:
        raise UsageError(
            f"{path} has no kdcli metadata, so {command} cannot tell its architecture; give a model file "
            "kdcli wrote (train, distill), or convert the PyTorch checkpoint the weights came from: "
            f"kdcli import CHECKPOINT {option('arch', 'ARCH')} {option('data', 'NAME')} "
            f"{option('out', 'F')}"
        )
    return card


def read_card(path: Path) -> ModelCard | None:
    """Only the metadata of a model file (no tensors are read)."""
    require_file(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise UsageError(f"{path} is not a readable safetensors file ({exc})") from None
    return _decode_card(metadata, path) if metadata.get("format") == MODEL_FORMAT else None


def load_weights(model: nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """``load_state_dict(strict=True)`` with a one-line error that names the first mismatches; shared weights are
    stored once, so their second names are not missing. A floating-point weight stored as integers or booleans
    (which ``load_state_dict`` would silently cast) is refused."""
    expected = model.state_dict()
    for name, tensor in tensors.items():
        if name in expected and expected[name].is_floating_point() and not tensor.is_floating_point():
            raise UsageError(
                f"{path} stores {name} as {str(tensor.dtype).removeprefix('torch.')}, not floating point "
                "(its values would be cast, not restored); pass the model's float weights"
            )
    try:
        result = model.load_state_dict(tensors, strict=False)
    except RuntimeError as exc:  # a shape mismatch: another class count, width or input channels
        first = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), str(exc))
        raise UsageError(
            f"{path} does not fit this model ({first.rstrip('.')}); pass weights of the same architecture, classes and "
            "input channels"
        ) from None
    aliases = shared_aliases(model)
    missing = [k for k in result.missing_keys if k not in aliases]
    mismatched = [f"missing {k}" for k in missing[:2]] + [f"unexpected {k}" for k in result.unexpected_keys[:2]]
    if mismatched:
        raise UsageError(
            f"{path} does not fit this architecture ({', '.join(mismatched)}, ...); check the arch and num_classes"
        )


def load_model(
    path: Path, arch: str | None = None, num_classes: int | None = None
) -> tuple[nn.Module, ModelCard | None]:
    """Build the model a file describes (or ``arch`` for a file without kdcli metadata) and load its weights."""
    tensors, card = read_model_file(path)
    if card is None and (arch is None or num_classes is None):
        raise UsageError(
            f"{path} has no kdcli metadata, so its architecture is unknown; give a model file kdcli wrote "
            "(train, distill, import), or, to distill from these weights, name their architecture: "
            f"{option('teacher.arch', 'ARCH')} {option('teacher.checkpoint', 'FILE')}"
        )
    in_chans = card.in_chans if card else conv_in_chans(tensors)
    try:
        model = create_model(
            arch or card.arch,  # type: ignore[union-attr]
            num_classes=num_classes or card.num_classes,  # type: ignore[union-attr]
            in_chans=in_chans,
            kwargs=card.model_kwargs if card else None,
        )
    except (MemoryError, RuntimeError) as exc:  # a card whose sizes ask for more memory than there is
        if not isinstance(exc, MemoryError) and "alloc" not in str(exc):
            raise
        raise UsageError(
            f"{path}: the model it describes does not fit in memory; its metadata is damaged or the "
            "model is too large for this machine"
        ) from None
    if card is not None and card.student_transform is not None:
        apply_transform(model, card.student_transform)
    try:
        load_weights(model, tensors, path)
    except RuntimeError as exc:  # shape mismatch
        raise UsageError(f"{path} does not fit {arch or card.arch!r}: {str(exc).splitlines()[-1].strip()}") from None  # type: ignore[union-attr]
    return model, card


def conv_in_chans(tensors: dict[str, torch.Tensor]) -> int:
    """Input channels of weights without metadata: those of the first 4-D (convolution) weight, else 3."""
    first_conv = next((t for t in tensors.values() if t.dim() == 4), None)
    return int(first_conv.shape[1]) if first_conv is not None else 3


def apply_transform(model: nn.Module, transform: StudentTransform) -> nn.Module:
    """Apply a registered student transform (kdcli.catalog) to ``model`` in place; returns the transformed model."""
    result = student_transform(transform.name)(model, **transform.options)
    return result if isinstance(result, nn.Module) else model
