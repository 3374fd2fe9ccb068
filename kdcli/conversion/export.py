"""``kdcli export``: a kdcli model file as ONNX, or as a folder in timm's ``local-dir`` layout.

ONNX (``format="onnx"``, the ``kdcli[onnx]`` extra: onnx, onnxscript, onnxruntime). The exported graph is the
student wrapped in its own input adaptation (``kdcli.models.wrappers.NormalizedModel``, as ``kdcli eval`` runs it):
grey images repeated to three channels for a three-channel model trained on grey data, then ``(x - mean) / std``
with the card's statistics. So the ONNX model takes what kdcli's data pipeline gives a model: float32 images in
[0, 1], shape (N, C, H, W) with the data's channels and the card's size, and returns logits (N, classes). A
transformed student (Pea-KD's SPS) is rebuilt from the file's metadata first; its second passes reuse the first
pass's modules, and the exported graph refers to each shared weight once.

The exporter is ``torch.onnx.export(dynamo=True)``, torch's default since 2.9: it captures the model with
``torch.export`` and translates it with onnxscript's torchlib. The TorchScript exporter (``dynamo=False``) also
exports these CNNs and ViTs, but it is deprecated and warns that it will be removed, so a deployment path built on
it would break with a future torch. The torch.export-based exporter writes opset 18 and later (asked for less, it
silently stays at 18, so kdcli refuses it), and the opset of the written file is checked against the one asked for.

Nothing is kept unchecked: the model is written to a temporary file next to the target, loaded in ONNX Runtime
(CPU), run on seeded random images in [0, 1] — batch 1 and, with ``dynamic_batch``, other batch sizes — and its
logits compared with PyTorch's (fp32, eager, CPU). Only when ``max |ONNX - PyTorch| <= tolerance`` is the file
renamed over the target (``kdcli.io.files.atomic_write``); else nothing is written and the export fails (exit 1).

timm (``format="timm"``): a folder with ``model.safetensors`` and ``config.json`` in the layout timm's
``push_to_hf_hub``/``save_for_hf`` write and ``load_model_config_from_path`` reads (``architecture``,
``num_classes``, ``num_features``, ``model_args``, ``label_names``, ``pretrained_cfg`` with the card's
``input_size``/``mean``/``std``), so ``timm.create_model("local-dir:DIR", pretrained=True)`` builds the student with
its weights (after ``import kdcli.models`` for the CIFAR zoo's names) and timm's train.py takes it as a teacher
(with ``local-dir:DIR`` as its distillation model's name). A timm model takes normalized input: the statistics are in
the config, not in the weights. The folder is checked the same way (timm builds it from the folder, its logits are
compared with the kdcli file's) before it is moved into place. A transformed student cannot be rebuilt by plain timm
and is refused.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import timm
import torch
from pydantic import ConfigDict, Field
from safetensors.torch import save_file
from torch import nn

from kdcli._version import __version__
from kdcli.data.sources import input_preparation
from kdcli.errors import RunFailed, UsageError, one_line, option
from kdcli.interfaces import StudentTransform
from kdcli.io.files import atomic_write, check_output_file, sha256_file, umask
from kdcli.io.model_file import ModelCard, load_model, read_card
from kdcli.models.wrappers import NormalizedModel
from kdcli.records import Record

EXPORT_SCHEMA = "kdcli.export/1"
FORMATS = ("onnx", "timm")
ONNX_EXTRA = "pip install 'kdcli[onnx]'"
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")
MIN_OPSET = 18
"""The lowest opset torch's torch.export-based exporter writes (its torchlib's); ONNX Runtime reads it since 1.14."""
INPUT_NAME = "images"
BATCH = "batch"
"""The name of a dynamic batch dimension, in the ONNX graph and in the summary's shapes."""
OUTPUT_NAME = "logits"
RELATIVE_TOLERANCE = 1e-4
"""The check's bound on ``max |exported - PyTorch|``, relative to the size of the logits: the tolerance is
``RELATIVE_TOLERANCE * max(1, max |PyTorch logit|)``. fp32 rounds at about 6e-8 of a value; ONNX Runtime fuses
Conv+BatchNorm and sums in another order, and the exports measured differ by about 1e-7 relative (resnet8 to
resnet110, wrn, vgg, MobileNetV2, ShuffleNets, ViTs, SPS students). 1e-4 leaves a thousand-fold margin over that
for deep models, and is still far below what a wrong export gives (wrong statistics, a weight in the wrong
place, a lost second pass: differences of 1e-2 and more)."""
CHECK_SEED = 0
CHECK_BATCHES = (1, 1, 1)
"""Batches the check runs with a fixed batch of 1: three seeded random images."""
DYNAMIC_CHECK_BATCHES = (1, 3, 8)
"""Batches the check runs with ``dynamic_batch``: the exported batch dimension must take each."""
TIMM_FILES = ("model.safetensors", "config.json")
_CFG_DROPPED = (
    "url",
    "file",
    "state_dict",
    "hf_hub_id",
    "hf_hub_filename",
    "source",
    "architecture",
    "tag",
    "label_offset",
    "label_names",
    "label_descriptions",
    "test_input_size",
    "test_pool_size",
    "test_crop_pct",
    "min_input_size",
    "num_classes",
    "input_size",
    "mean",
    "std",
)
"""Keys of the architecture's own ``pretrained_cfg`` that describe other weights (timm's hub weights and their
labels, sizes, statistics) and are not carried over: the card says what the student's are."""


class ExportResult(Record):
    """What an export wrote and how it was checked: the summary ``kdcli export`` prints as JSON (``document()``).
    The fields of one format only (``input`` ... ``file_bytes`` for ONNX, ``files`` and ``load_with`` for timm) are
    None for the other."""

    model_config = ConfigDict(populate_by_name=True)

    schema_: str = Field(EXPORT_SCHEMA, alias="schema")
    format: Literal["onnx", "timm"]
    source: str | None
    """The kdcli model file exported (None when a model was exported without one)."""
    path: str
    """The ONNX file, or the timm folder, written."""
    arch: str
    num_classes: int
    student_transform: StudentTransform | None
    input: dict[str, Any] | None = None
    """ONNX: the graph's input (name, shape, dtype, range, layout)."""
    output: dict[str, Any] | None = None
    """ONNX: the graph's output (name, shape)."""
    files: list[str] | None = None
    """timm: the files written into the folder."""
    input_shape: list[int | str]
    """(N, C, H, W); N is ``BATCH`` where any batch size is taken."""
    dynamic_batch: bool | None = None
    normalization_included: bool
    """Whether the exported model normalizes its input itself (ONNX) or takes normalized input (timm)."""
    grey_to_rgb: bool | None = None
    """ONNX: grey images are repeated to the model's three channels inside the graph."""
    mean: list[float]
    std: list[float]
    opset: int | None = None
    """ONNX: the opset written; None for timm."""
    exporter: str | None = None
    max_abs_diff: float
    """The check's ``max |exported - PyTorch|`` over its batches."""
    tolerance: float
    tolerance_rule: str
    checked_batches: list[int] | None = None
    check_runtime: str | None = None
    file_bytes: int | None = None
    load_with: str | None = None
    """timm: the call that builds the exported model."""

    def document(self) -> dict[str, Any]:
        """The JSON summary: every field, but those of the other format left out (``opset`` stays, null for timm)."""
        return {
            key: value
            for key, value in self.model_dump(mode="json", by_alias=True).items()
            if value is not None or key not in _ONE_FORMAT
        }


_ONE_FORMAT = frozenset(
    (
        "input",
        "output",
        "files",
        "dynamic_batch",
        "grey_to_rgb",
        "exporter",
        "checked_batches",
        "check_runtime",
        "file_bytes",
        "load_with",
    )
)
"""The fields of ``ExportResult`` one format has and the other leaves out of its summary."""


# --- what is exported --------------------------------------------------------------------------------------------


def input_channels(card: ModelCard) -> int:
    """The channels of the images the exported model takes: the data's. A three-channel model trained on grey
    data (one mean, as kdcli records it) takes grey images and repeats them, as ``NormalizedModel`` does."""
    return 1 if card.in_chans == 3 and len(card.mean) == 1 else card.in_chans


def default_output(source: Path, format: str) -> Path:
    """``student.safetensors`` → ``student.onnx`` (a file) or ``student-timm/`` (a folder), next to the source."""
    return source.with_suffix(".onnx") if format == "onnx" else source.parent / f"{source.stem}-timm"


def tolerance_for(reference: torch.Tensor) -> float:
    """The check's bound on ``max |exported - PyTorch|`` for these PyTorch logits (``RELATIVE_TOLERANCE``)."""
    return RELATIVE_TOLERANCE * max(1.0, float(reference.abs().max()))


def kdcli_onnx(path: Path) -> bool:
    """Whether ``path`` is an ONNX file kdcli exported (its metadata names kdcli's version)."""
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # not ONNX at all (or no onnx package): not kdcli's
        return False
    return any(prop.key == "kdcli.version" for prop in model.metadata_props)


def kdcli_timm_folder(folder: Path) -> bool:
    """Whether ``folder``'s ``config.json`` is one kdcli exported (it carries a ``kdcli`` section)."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and isinstance(config.get("kdcli"), dict)


def check_request(
    source: Path, format: str, out: Path | None, opset: int | None, dynamic_batch: bool, force: bool = False
) -> tuple[ModelCard, Path]:
    """Everything that can be refused before the model is built: the format and its options, the file (a kdcli
    model file), the output path (by default next to the file; never the file itself, and without ``force`` never a
    file kdcli did not export), a transformed student for timm, and the ONNX packages. Returns the card and the
    output path."""
    if format not in FORMATS:
        raise UsageError(f"{option('format')} must be {' or '.join(FORMATS)}, not {format!r}")
    if format == "timm" and (opset is not None or dynamic_batch):
        raise UsageError(
            f"{option('opset')} and {option('dynamic_batch')} apply to {option('format', 'onnx')} only; "
            f"drop them for {option('format', 'timm')}"
        )
    if opset is not None and opset < MIN_OPSET:
        raise UsageError(
            f"{option('opset', opset)} is below {MIN_OPSET}, the lowest opset torch's exporter writes; pass "
            f"{option('opset', MIN_OPSET)} or more (ONNX Runtime reads it since 1.14)"
        )
    card = read_card(source)  # a missing or unreadable file is refused here, with its own message
    if card is None:
        raise UsageError(
            f"{source} is not a kdcli model file (no kdcli metadata); convert a checkpoint first with "
            f"`kdcli import {source.name} {option('arch', 'ARCH')} {option('out', 'FILE.safetensors')}`"
        )
    out = out if out is not None else default_output(source, format)
    blocking = next((parent for parent in out.parents if parent.exists() and not parent.is_dir()), None)
    if blocking is not None:
        raise UsageError(f"cannot write {out}: {blocking} is a file, not a folder; choose another {option('out')}")
    if format == "onnx" and out.is_dir():
        raise UsageError(
            f"{out} is a directory; give {option('out')} a file path such as {out / (source.stem + '.onnx')}"
        )
    if format == "onnx":
        check_output_file(out, [source], kdcli_onnx, force)
    if format == "timm":
        if out.exists() and not out.is_dir():
            raise UsageError(
                f"{out} is a file; {option('format', 'timm')} writes a folder (config.json, "
                f"model.safetensors): give {option('out')} a folder path"
            )
        for name in TIMM_FILES:
            check_output_file(out / name, [source], lambda _: kdcli_timm_folder(out), force)
        if card.student_transform is not None:
            raise UsageError(
                f"{source} holds a student transformed by {card.student_transform.name!r}, which plain timm "
                f"cannot rebuild; use {option('format', 'onnx')}, or kdcli's own file (kdcli.load_model)"
            )
    if format == "onnx":
        missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
        if missing:
            raise UsageError(
                f"{option('format', 'onnx')} needs {', '.join(missing)} (not installed here): {ONNX_EXTRA}"
            )
    return card, out


def export_model_file(
    source: Path,
    format: str = "onnx",
    out: Path | None = None,
    opset: int | None = None,
    dynamic_batch: bool = False,
    force: bool = False,
) -> ExportResult:
    """Export the kdcli model file ``source`` (checked, then written atomically); returns what was written. Weights
    that are not all finite (a run that diverged) are refused unless ``force``: such a model predicts nothing."""
    card, out = check_request(source, format, out, opset, dynamic_batch, force)
    model, loaded = load_model(source)  # builds the architecture, applies the student transform, loads the weights
    assert loaded is not None
    broken = [
        name
        for name, tensor in model.state_dict().items()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]
    if broken and not force:
        more = " and more" if len(broken) > 1 else ""
        raise UsageError(
            f"{source} holds non-finite weights ({broken[0]}{more}), so the exported model would "
            f"predict nothing; export a good checkpoint, or pass {option('force')}"
        )
    wrapped = NormalizedModel(model, card.mean, card.std, card.in_chans, card.arch).eval()
    if format == "onnx":
        return export_onnx(wrapped, card, out, source=source, opset=opset, dynamic_batch=dynamic_batch)
    return export_timm(wrapped, card, out, source=source)


def _summary(format: str, source: Path | None, out: Path, card: ModelCard) -> dict[str, Any]:
    """The fields of ``ExportResult`` both formats fill the same way."""
    return {
        "schema": EXPORT_SCHEMA,
        "format": format,
        "source": str(source) if source is not None else None,
        "path": str(out),
        "arch": card.arch,
        "num_classes": card.num_classes,
        "student_transform": card.student_transform,
    }


# --- ONNX --------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """torch.onnx and onnxscript log progress and notes (and tracebacks of conversions they recover from); the
    export is checked afterwards, so their chatter stays off kdcli's stderr."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.CRITICAL)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def check_onnx(
    path: Path, model: nn.Module, shape: tuple[int, int, int], batches: tuple[int, ...]
) -> tuple[float, float, str]:
    """Run the ONNX file at ``path`` in ONNX Runtime (CPU) and ``model`` in PyTorch on the same seeded random images
    in [0, 1], one batch of each size in ``batches``; returns ``(max |difference|, tolerance, runtime)``.
    Raises RunFailed when ONNX Runtime cannot run the file or the logits differ by more than the tolerance."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types (opset too new, a missing kernel)
        detail = f"{type(error).__name__}: {one_line(error, 300)}"
        raise RunFailed(
            f"ONNX Runtime {ort.__version__} cannot load the export ({detail}); nothing was written; an "
            f"older {option('opset')} may load"
        ) from None
    generator = torch.Generator().manual_seed(CHECK_SEED)
    worst, tolerance = 0.0, float("inf")
    for batch in batches:
        images = torch.rand((batch, *shape), generator=generator)
        with torch.no_grad():
            reference = model(images).float()
        try:
            (exported,) = session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})
        except Exception as error:
            detail = f"{type(error).__name__}: {one_line(error, 300)}"
            raise RunFailed(
                f"ONNX Runtime cannot run the export on a batch of {batch} ({detail}); nothing was written"
            ) from None
        result = torch.from_numpy(exported)
        if result.shape != reference.shape:
            raise RunFailed(
                f"the export gives logits of shape {list(result.shape)} for a batch of {batch}, PyTorch "
                f"{list(reference.shape)}; nothing was written"
            )
        worst = max(worst, float((result - reference).abs().max()))
        if not torch.isfinite(result).all():
            worst = float("inf")
        tolerance = min(tolerance, tolerance_for(reference))
    if not worst <= tolerance:
        raise RunFailed(
            f"the export disagrees with PyTorch: max |ONNX - PyTorch| = {worst:.3g} > tolerance {tolerance:.3g} on "
            f"random images; nothing was written (run with {option('debug')} and report it)"
        )
    return worst, tolerance, f"onnxruntime {ort.__version__} (CPUExecutionProvider)"


def export_onnx(
    model: NormalizedModel,
    card: ModelCard,
    out: Path,
    source: Path | None = None,
    opset: int | None = None,
    dynamic_batch: bool = False,
) -> ExportResult:
    """Export ``model`` (the student with its input normalization) to ONNX at ``out``, checked against PyTorch in
    ONNX Runtime before it is kept; returns what was written."""
    import onnx

    model = model.to("cpu").eval()
    shape = (input_channels(card), *card.input_size[1:])
    sample = torch.rand((2 if dynamic_batch else 1, *shape), generator=torch.Generator().manual_seed(CHECK_SEED))
    dynamic_shapes = {INPUT_NAME: {0: torch.export.Dim(BATCH, min=1)}} if dynamic_batch else None
    try:
        with _quiet_exporter():
            program = torch.onnx.export(
                model,
                (sample,),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=opset,
                dynamic_shapes=dynamic_shapes,
                verbose=False,
            )
    except Exception as error:  # torch.export's and the translation's errors have many types
        detail = f"{type(error).__name__}: {one_line(error, 300)}"
        raise RunFailed(
            f"torch.onnx.export cannot export {card.arch} ({detail}); kdcli's own model file still "
            "works (kdcli.load_model)"
        ) from None
    assert program is not None
    written = program.model.opset_imports.get("", 0)
    if opset is not None and written != opset:
        raise UsageError(
            f"torch's exporter cannot write opset {opset} (it gave {written}); nothing was written; "
            f"pass {option('opset', written)} or leave {option('opset')} out"
        )
    program.model.metadata_props.update(_onnx_metadata(card, shape))
    check: dict[str, Any] = {}

    def write_and_check(tmp: Path) -> None:
        with _quiet_exporter():
            program.save(tmp, external_data=False)
        try:
            onnx.checker.check_model(str(tmp))
        except onnx.checker.ValidationError as error:
            detail = f"{type(error).__name__}: {one_line(error, 300)}"
            raise RunFailed(f"the export is not valid ONNX ({detail}); nothing was written") from None
        batches = DYNAMIC_CHECK_BATCHES if dynamic_batch else CHECK_BATCHES
        worst, tolerance, runtime = check_onnx(tmp, model, shape, batches)
        check.update(max_abs_diff=worst, tolerance=tolerance, checked_batches=list(batches), runtime=runtime)

    try:
        atomic_write(out, write_and_check)
    except OSError as error:
        raise UsageError(f"cannot write {out} ({error.strerror or error}); choose another {option('out')}") from None
    return ExportResult(
        **_summary("onnx", source, out, card),
        input={
            "name": INPUT_NAME,
            "shape": [BATCH if dynamic_batch else 1, *shape],
            "dtype": "float32",
            "range": [0.0, 1.0],
            "layout": "NCHW",
        },
        output={"name": OUTPUT_NAME, "shape": [BATCH if dynamic_batch else 1, card.num_classes]},
        input_shape=[BATCH if dynamic_batch else 1, *shape],
        dynamic_batch=dynamic_batch,
        normalization_included=True,
        grey_to_rgb=shape[0] != card.in_chans,
        mean=list(card.mean),
        std=list(card.std),
        opset=written,
        exporter=f"torch.onnx.export(dynamo=True), torch {torch.__version__}",
        max_abs_diff=check["max_abs_diff"],
        tolerance=check["tolerance"],
        tolerance_rule=f"{RELATIVE_TOLERANCE:g} * max(1, max |PyTorch logit|)",
        checked_batches=check["checked_batches"],
        check_runtime=check["runtime"],
        file_bytes=out.stat().st_size,
    )


def _onnx_metadata(card: ModelCard, shape: tuple[int, ...]) -> dict[str, str]:
    """What a deployment needs to know, in the ONNX file's own metadata (``metadata_props``, strings)."""
    values: dict[str, Any] = {
        "kdcli.arch": card.arch,
        "kdcli.input": f"float32 images in [0, 1], NCHW, {shape[0]} channel(s), {shape[1]}x{shape[2]}; "
        "normalization included",
        "kdcli.mean": list(card.mean),
        "kdcli.std": list(card.std),
        "kdcli.classes": card.classes,
        "kdcli.dataset": card.dataset,
        "kdcli.preprocess": input_preparation(card.dataset, tuple(card.input_size)),
        "kdcli.method": card.method,
        "kdcli.version": __version__,
    }
    return {
        key: value if isinstance(value, str) else json.dumps(value)
        for key, value in values.items()
        if value is not None
    }


# --- timm's local-dir layout -------------------------------------------------------------------------------------


def timm_config(model: nn.Module, card: ModelCard, source: Path | None = None) -> dict[str, Any]:
    """``config.json`` for ``timm.create_model("local-dir:DIR")``: the layout of timm's ``save_config_for_hf``, with
    the card's classes, input size and statistics in ``pretrained_cfg`` and its build arguments in ``model_args``."""
    own = {
        key: value
        for key, value in dict(getattr(model, "pretrained_cfg", {}) or {}).items()
        if value is not None and key not in _CFG_DROPPED
    }
    if own.get("pool_size") and tuple(card.input_size[1:]) != _cfg_size(model):
        own.pop("pool_size")  # timm's own rule: the pooled map's size is only known at the original input size
    channels = card.in_chans
    stats = {
        key: list(values) * channels if len(values) == 1 else list(values)
        for key, values in (("mean", card.mean), ("std", card.std))
    }
    pretrained_cfg = {
        **own,
        "input_size": [channels, *card.input_size[1:]],
        **stats,
        "num_classes": card.num_classes,
        "crop_pct": 1.0,  # kdcli evaluates whole images: no centre crop
        "crop_mode": "center",
        "custom_load": False,
    }
    config: dict[str, Any] = {
        "architecture": card.arch,
        "num_classes": card.num_classes,
        "num_features": int(getattr(model, "num_features", 0)) or None,
        "model_args": {"in_chans": card.in_chans, "num_classes": card.num_classes, **card.model_kwargs},
        "label_names": card.classes,
        "pretrained_cfg": pretrained_cfg,
        "kdcli": {
            "source_sha256": sha256_file(source) if source is not None else None,
            "dataset": card.dataset,
            "preprocess": input_preparation(card.dataset, tuple(card.input_size)),
            "method": card.method,
            "teacher_arch": card.teacher_arch,
            "teacher_sha256": card.teacher_sha256,
            "metrics": card.metrics,
            "kdcli_version": __version__,
        },
    }
    return {key: value for key, value in config.items() if value is not None}


def _cfg_size(model: nn.Module) -> tuple[int, ...]:
    size = dict(getattr(model, "pretrained_cfg", {}) or {}).get("input_size") or (3, 224, 224)
    return tuple(size[1:])


def check_timm(folder: Path, model: NormalizedModel, card: ModelCard) -> tuple[float, float]:
    """Build the student with timm from ``folder`` and compare its logits with ``model``'s on the same normalized
    seeded random images; returns ``(max |difference|, tolerance)``; raises RunFailed when they differ."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rebuilt = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    except Exception as error:  # timm raises RuntimeError, ValueError, KeyError from its builders
        detail = f"{type(error).__name__}: {one_line(error, 300)}"
        raise RunFailed(
            f"timm cannot rebuild {card.arch} from the exported folder ({detail}); nothing was written"
        ) from None
    generator = torch.Generator().manual_seed(CHECK_SEED)
    images = torch.rand((4, input_channels(card), *card.input_size[1:]), generator=generator)
    with torch.no_grad():
        normalized = model.normalize(images)
        reference, result = model.model(normalized), rebuilt(normalized)
    tolerance = tolerance_for(reference)
    worst = float((result - reference).abs().max()) if result.shape == reference.shape else float("inf")
    if not worst <= tolerance:
        raise RunFailed(
            f"timm's rebuild of the export disagrees with the kdcli file: max |difference| = {worst:.3g} "
            f"> tolerance {tolerance:.3g}; nothing was written"
        )
    return worst, tolerance


def _fsync(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def export_timm(model: NormalizedModel, card: ModelCard, out: Path, source: Path | None = None) -> ExportResult:
    """Write ``model.safetensors`` and ``config.json`` for timm into the folder ``out``, checked by building the
    student from them with timm; a new folder appears whole (one rename), an existing one gets the two files
    replaced one by one (other files in it are left alone). Returns what was written."""
    if card.student_transform is not None:
        raise UsageError(
            f"a student transformed by {card.student_transform.name!r} cannot be rebuilt by plain "
            f"timm; use {option('format', 'onnx')}, or kdcli's own file (kdcli.load_model)"
        )
    plain = model.model
    config = timm_config(plain, card, source)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as error:
        raise UsageError(f"cannot write {out} ({error.strerror or error}); choose another {option('out')}") from None
    try:
        tensors = {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in plain.state_dict().items()}
        save_file(tensors, str(staging / "model.safetensors"), metadata={"format": "pt"})
        (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        for name in TIMM_FILES:
            _fsync(staging / name)
        worst, tolerance = check_timm(staging, model, card)
        staging.chmod(0o777 & ~umask())  # mkdtemp makes the folder private; give it the usual permissions
        for name in TIMM_FILES:
            (staging / name).chmod(0o666 & ~umask())
        if out.is_dir():
            for name in TIMM_FILES:  # the weights first: a config never names weights it does not come with
                os.replace(staging / name, out / name)
        else:
            os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    mean, std = config["pretrained_cfg"]["mean"], config["pretrained_cfg"]["std"]
    return ExportResult(
        **_summary("timm", source, out, card),
        files=list(TIMM_FILES),
        input_shape=[BATCH, *config["pretrained_cfg"]["input_size"]],
        normalization_included=False,
        mean=mean,
        std=std,
        opset=None,
        max_abs_diff=worst,
        tolerance=tolerance,
        tolerance_rule=f"{RELATIVE_TOLERANCE:g} * max(1, max |PyTorch logit|)",
        load_with=f'import kdcli.models; timm.create_model("local-dir:{out}", pretrained=True)',
    )
