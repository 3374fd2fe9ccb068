"""``kdcli import``: a PyTorch checkpoint to a kdcli safetensors model file.

Reads RepDistiller's ``{'model': state_dict, ...}``, timm's ``.pth.tar`` (``{'state_dict': ..., 'args': Namespace}``
as timm's ``CheckpointSaver`` writes it) and plain state dicts, in torch's zip or legacy format. Keys lose the
prefixes of DataParallel/DDP (``module.``) and ``torch.compile`` (``_orig_mod.``), stacked in any order (timm's
``clean_state_dict`` strips each once, and in either order only from timm 1.0.30 on).

Files are read with ``torch.load(weights_only=True)`` and nothing else: a checkpoint that pickles Python objects
(a whole model, code) is refused, never unpickled. The one class allowed besides torch's own is
``argparse.Namespace``, as timm's ``load_state_dict`` allows it, because timm's training checkpoints store their
arguments in one.

The architecture is named with ``arch``: a timm name, a CIFAR zoo name, or RepDistiller's own name
(``catalog.ZOO``: ``vgg8``, ``MobileNetV2``, ``ShuffleV1``, ...), since a RepDistiller checkpoint is what this
command is most often given. RepDistiller's ``vgg11`` ... ``vgg19`` are also timm's ImageNet VGGs; for those the
file decides: its state dict is compared with both (keys and shapes) and the one it fits is used, the CIFAR zoo's
when both would fit. Every check that needs no weights (``data``, ``arch``, ``out``) runs before the
checkpoint is read, and the output is written atomically, so a failed import leaves no file behind.
"""

from __future__ import annotations

import argparse
import errno
import os
import pickle
import re
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors import SafetensorError
from timm.models import get_pretrained_cfg
from torch import nn

from kdcli.catalog import ZOO, ZooModel
from kdcli.data.sources import STATS
from kdcli.errors import UsageError, one_line, option
from kdcli.interfaces import Reporter
from kdcli.io.files import check_output_file
from kdcli.io.model_file import ModelCard, conv_in_chans, load_weights, read_card, require_file, save_model
from kdcli.models.factory import create_model, resolve_arch
from kdcli.suggest import did_you_mean

WRAPPER_PREFIXES = ("module.", "_orig_mod.")
"""Prefixes that DataParallel/DDP and torch.compile put before a wrapped model's keys."""
STATE_DICT_KEYS = ("model", "state_dict", "state_dict_ema", "model_ema")
"""Where a checkpoint dict keeps its state dict, in the order they are looked for (RepDistiller and DeiT use
``model``, timm ``state_dict``; the EMA copies only when there is no other)."""

_ZOO_BY_NAME: dict[str, ZooModel] = {model.name: model for model in ZOO}
_ZOO_BY_REPDISTILLER: dict[str, ZooModel] = {model.repdistiller_name.lower(): model for model in ZOO}
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-_]")
_UNSUPPORTED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_WEIGHTS_UNPICKLER = re.compile(r"WeightsUnpickler error: ([^\n]+)")


# --- reading -----------------------------------------------------------------------------------------------------


def _refused(path: Path, error: BaseException) -> UsageError:
    """The message for a checkpoint ``torch.load(weights_only=True)`` refused because it pickles Python objects."""
    try:  # reads the pickle's opcodes without running them
        names = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:  # a legacy-format file, an older torch: fall back to what the error names
        names = []
    text = _ANSI.sub("", str(error))
    names = names or _UNSUPPORTED_GLOBAL.findall(text)
    if not names:  # refused for another reason: a damaged pickle, an unsupported opcode
        reason = _WEIGHTS_UNPICKLER.search(text)
        detail = one_line(reason.group(1) if reason else text)
        return UsageError(
            f"cannot read {path} safely ({detail}); kdcli reads checkpoints with torch.load(weights_only=True): "
            "re-save the weights as a plain state dict, torch.save(model.state_dict(), 'weights.pth'), and import that"
        )
    found = f"{', '.join(names[:3])}{', ...' if len(names) > 3 else ''}"
    return UsageError(
        f"{path} pickles Python objects ({found}), not only tensors, and kdcli never unpickles them (it reads "
        "checkpoints with torch.load(weights_only=True)); if you trust the file, load it yourself and re-save its "
        "weights as a plain state dict, torch.save(model.state_dict(), 'weights.pth'), then import that"
    )


def _load(path: Path) -> Any:
    if os.path.isdir(path):  # (os.path.isdir is False for a name the system cannot look up)
        raise UsageError(f"{path} is a folder; pass the checkpoint file inside it")
    require_file(path, "checkpoint", "pass the checkpoint file to import")  # missing, a device or pipe, a bad name
    try:
        # argparse.Namespace: timm's training checkpoints, as timm allows it. Warnings (a pickle protocol torch did
        # not expect) are dropped so that a failure stays the one line below.
        with torch.serialization.safe_globals([argparse.Namespace]), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # the weights-only unpickler met something it does not allow
        raise _refused(path, exc) from None
    except Exception as exc:  # a damaged or foreign file fails in many ways
        detail = one_line(f"{type(exc).__name__}: {exc}")
        raise UsageError(
            f"cannot read {path} as a PyTorch checkpoint ({detail}); pass a file torch.save wrote"
        ) from None


def _checkpoint_arch(checkpoint: Any) -> str | None:
    """The architecture a checkpoint names itself (timm's ``arch``), for error messages."""
    arch = checkpoint.get("arch") if isinstance(checkpoint, dict) else None
    return arch if isinstance(arch, str) else None


def _state_dict(path: Path, checkpoint: Any) -> dict[str, torch.Tensor]:
    if isinstance(checkpoint, dict):
        for key in STATE_DICT_KEYS:
            if isinstance(checkpoint.get(key), dict):
                checkpoint = checkpoint[key]
                break
    if not (isinstance(checkpoint, dict) and checkpoint and all(torch.is_tensor(v) for v in checkpoint.values())):
        if isinstance(checkpoint, dict):
            keys = [str(key) for key in checkpoint]
            held = f"a dict of {', '.join(keys[:6])}{', ...' if len(keys) > 6 else ''}" if keys else "an empty dict"
        else:
            held = f"a {type(checkpoint).__name__}"
        raise UsageError(
            f"{path} holds no state dict ({held}; looked for {', '.join(repr(k) for k in STATE_DICT_KEYS)} or a "
            "dict of tensors); save the model's state_dict() and import that"
        )
    return {_unwrapped(key): value for key, value in checkpoint.items()}


def _unwrapped(key: str) -> str:
    """``key`` without the wrappers' prefixes: ``module._orig_mod.conv1.weight`` → ``conv1.weight``."""
    while key.startswith(WRAPPER_PREFIXES):
        key = key.split(".", 1)[1]
    return key


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a checkpoint file (see the module docstring), its keys cleaned by timm's
    the wrappers' prefixes removed; a ``UsageError`` that says why when there is none or it cannot be read safely."""
    return _state_dict(path, _load(path))


# --- choosing the architecture -----------------------------------------------------------------------------------


def architecture_candidates(name: str) -> list[str]:
    """The timm registry names ``arch=name`` may mean, the preferred first.

    A zoo name is that zoo model. RepDistiller's name of a zoo model (``catalog.ZOO``, any letter case) is that zoo
    model, followed by timm's model of the same name where timm has one (``vgg11``, ``vgg13``, ``vgg16``,
    ``vgg19``: timm's ImageNet VGGs), for the checkpoint to decide between. Any other name is timm's
    (``resolve_arch``: an unknown name is a ``UsageError`` with suggestions).
    """
    if name in _ZOO_BY_NAME:
        return [name]
    zoo = _ZOO_BY_REPDISTILLER.get(name.lower())
    if zoo is not None:
        return [zoo.name, name] if timm.is_model(name) else [zoo.name]
    return [resolve_arch(name)]


def _describe(arch: str, ambiguous: bool, detail: str = "") -> str:
    """``arch`` for a message: whose model it is, RepDistiller's name, and ``detail``, in one parenthesis."""
    zoo = _ZOO_BY_NAME.get(arch)
    aside = [f"RepDistiller's {zoo.repdistiller_name}"] if zoo and zoo.repdistiller_name != zoo.name else []
    aside += [detail] if detail else []
    whose = "the CIFAR zoo's " if zoo else "timm's ImageNet " if ambiguous else ""
    return f"{whose}{arch!r}" + (f" ({'; '.join(aside)})" if aside else "")


def _module_name(value: Any) -> str | None:
    """A module name from a pretrained config entry (timm gives a tuple for distilled models: the first one)."""
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    return value if isinstance(value, str) and value else None


@dataclass(kw_only=True)
class Fit:
    """How a state dict compares with one architecture built with the file's classes and input channels."""

    arch: str
    num_classes: int | None
    """The classifier's rows in the file (None when the file has no classifier where the architecture has it)."""
    in_chans: int
    classifier: str | None
    problems: list[str] = field(default_factory=list)
    """What differs, worst first: missing keys, unexpected keys, shapes; empty when the file fits."""

    @property
    def fits(self) -> bool:
        return not self.problems

    def summary(self, limit: int = 2) -> str:
        shown = ", ".join(self.problems[:limit])
        return f"{shown}, and {len(self.problems) - limit} more" if len(self.problems) > limit else shown


def _tensors_by_name(model: nn.Module) -> tuple[dict[str, torch.Tensor], set[str]]:
    """The model's state dict, and the names that repeat a tensor listed earlier (tied weights) by identity (which,
    unlike storage addresses, also holds on the meta device)."""
    seen: set[int] = set()
    aliases = set()
    tensors = model.state_dict(keep_vars=True)
    for name, tensor in tensors.items():
        if id(tensor) in seen:
            aliases.add(name)
        seen.add(id(tensor))
    return tensors, aliases


def _shell(arch: str, num_classes: int, in_chans: int) -> nn.Module:
    """The architecture without memory (meta device) for comparing shapes; a real one where the meta device
    fails."""
    try:
        with torch.device("meta"):
            return create_model(arch, num_classes=num_classes, in_chans=in_chans)
    except UsageError:
        raise
    except Exception:  # a model whose constructor computes on its tensors
        return create_model(arch, num_classes=num_classes, in_chans=in_chans)


def compare(arch: str, tensors: dict[str, torch.Tensor], num_classes: int | None = None) -> Fit:
    """Compare a state dict with ``arch``, built with the classes of the file's classifier (else ``num_classes``,
    else the architecture's default) and the input channels of its first convolution."""
    cfg = get_pretrained_cfg(arch)
    classifier = _module_name(cfg.classifier) if cfg else None
    weight = tensors.get(f"{classifier}.weight") if classifier else None
    file_classes = int(weight.shape[0]) if weight is not None and weight.dim() >= 1 else None
    first_conv = _module_name(cfg.first_conv) if cfg else None
    conv = tensors.get(f"{first_conv}.weight") if first_conv else None
    in_chans = int(conv.shape[1]) if conv is not None and conv.dim() == 4 else conv_in_chans(tensors)
    classes = file_classes or num_classes or (cfg.num_classes if cfg and cfg.num_classes else 1000)
    expected, aliases = _tensors_by_name(_shell(arch, classes, in_chans))
    fit = Fit(arch=arch, num_classes=file_classes, in_chans=in_chans, classifier=classifier)
    # BatchNorm's loader fills a missing num_batches_tracked (checkpoints older than torch 0.4.1 have none).
    missing = [k for k in expected if k not in tensors and k not in aliases and not k.endswith("num_batches_tracked")]
    fit.problems += [f"missing {key}" for key in missing]
    fit.problems += [f"unexpected {key}" for key in tensors if key not in expected]
    fit.problems += [
        f"{key} is {tuple(tensors[key].shape)}, not {tuple(expected[key].shape)}"
        for key in tensors
        if key in expected and tuple(tensors[key].shape) != tuple(expected[key].shape)
    ]
    return fit


@dataclass
class Choice:
    """The architecture a checkpoint is imported as, and a note when it is not what ``arch`` literally names."""

    fit: Fit
    note: str | None = None


def choose_architecture(
    name: str,
    tensors: dict[str, torch.Tensor],
    source: Path,
    num_classes: int | None = None,
    hint: str | None = None,
) -> Choice:
    """The architecture ``arch=name`` means for this state dict (``architecture_candidates``): the first
    candidate the file fits (``compare``; ``num_classes`` only counts where the file has no classifier to read);
    a one-line ``UsageError`` naming every candidate and what differs when it fits none. ``hint`` is the
    architecture the checkpoint names itself, if any."""
    names = architecture_candidates(name)
    ambiguous = len(names) > 1
    fits: list[Fit] = []
    for arch in names:
        fits.append(compare(arch, tensors, num_classes))
        if fits[-1].fits:
            break
    chosen = fits[-1]
    says = f"; the checkpoint says it is a {hint!r}" if hint else ""
    if not chosen.fits:
        if ambiguous:
            tried = " nor ".join(_describe(f.arch, True, f.summary()) for f in fits)
            begins = ", ".join(list(tensors)[:2])
            raise UsageError(
                f"{source} fits neither {tried}; its keys begin {begins}{says}; pass the architecture it was saved "
                f"from with {option('arch')}"
            )
        raise UsageError(
            f"{source} does not fit {_describe(chosen.arch, False, chosen.summary())}{says}; pass the "
            f"architecture it was saved from with {option('arch')}"
        )
    note = None
    if chosen.arch != name or ambiguous:
        layout = "RepDistiller's" if chosen.arch in _ZOO_BY_NAME else "timm's"
        others = [n for n in names if n != chosen.arch]
        rather = f", not {_describe(others[0], True)}" if others else ""
        note = f"{name!r}: {source.name} has {layout} layout; imported as {_describe(chosen.arch, True)}{rather}"
    return Choice(chosen, note)


# --- input statistics --------------------------------------------------------------------------------------------


def input_statistics(
    in_chans: int, data: str | None, cfg_mean: Sequence[float] | None, cfg_std: Sequence[float] | None
) -> tuple[tuple[float, ...], tuple[float, ...], str | None]:
    """The mean and std to record for a model of ``in_chans`` input channels, one value per channel, and a note
    when they were adapted; a ``UsageError`` when ``data`` cannot describe such a model.

    With ``data``, its training-set statistics (``kdcli.data.sources.STATS``): a one-channel data set's repeated
    over the channels of a model that takes its images expanded to RGB (as timm's ``resolve_data_config`` repeats
    a single value); a data set with other channels than the model is an error (a one-channel model cannot have
    been trained on CIFAR's RGB images).

    Without ``data``, the architecture's default config (the zoo's: CIFAR-100's; timm's: mostly ImageNet's),
    adapted to ``in_chans`` the way timm's ``adapt_input_conv`` adapts RGB weights: a one-channel model gets the
    grey values, the mean over the RGB channels (timm sums the RGB filters, which is an RGB model seeing a grey
    image), and other channel counts the RGB values repeated in turn (timm repeats the filters so). These are the
    statistics the architecture's own weights would expect, not those of the unknown data the file was trained
    on, so the note asks for ``data``. Without a default config, 0.5 and 0.5 per channel.
    """
    if data is not None:
        data_mean, data_std = STATS[data]
        if len(data_mean) == 1:
            return (data_mean[0],) * in_chans, (data_std[0],) * in_chans, None
        if len(data_mean) != in_chans:
            fitting = ", ".join(name for name, (m, _) in STATS.items() if len(m) in (1, in_chans))
            raise UsageError(
                f"{option('data', data)} has {len(data_mean)}-channel images but the model takes {in_chans}; pass "
                f"the data set it was trained on ({fitting}) or leave {option('data')} out"
            )
        return tuple(data_mean), tuple(data_std), None
    if not cfg_mean or not cfg_std or len(cfg_mean) != len(cfg_std):
        return (0.5,) * in_chans, (0.5,) * in_chans, None
    if len(cfg_mean) == in_chans:
        return tuple(cfg_mean), tuple(cfg_std), None
    if len(cfg_mean) == 1:
        return (cfg_mean[0],) * in_chans, (cfg_std[0],) * in_chans, None
    if in_chans == 1:
        mean: tuple[float, ...] = (round(sum(cfg_mean) / len(cfg_mean), 4),)
        std: tuple[float, ...] = (round(sum(cfg_std) / len(cfg_std), 4),)
        how = "the grey value of"
    else:
        mean = tuple(cfg_mean[i % len(cfg_mean)] for i in range(in_chans))
        std = tuple(cfg_std[i % len(cfg_std)] for i in range(in_chans))
        how = "the repeated"
    note = (
        f"no {option('data')}: recorded {how} the architecture's default normalization for {in_chans} input "
        f"channel(s), mean {list(mean)} std {list(std)}; pass {option('data')} to record the data set's own"
    )
    return mean, std, note


# --- the output --------------------------------------------------------------------------------------------------


def check_output(out: Path, source: Path, force: bool = False) -> None:
    """Refuse an ``out`` that cannot receive the file, before any work: a folder, the checkpoint itself (by any
    path or link), a path below a regular file, or a place this process cannot write; and without ``force`` a
    special file (a device would be replaced) or a file that is not a kdcli model file."""
    example = out / f"{source.name.split('.')[0] or 'model'}.safetensors"
    if os.path.isdir(out):
        raise UsageError(f"{option('out', out)} is a folder; name the file to write, e.g. {option('out', example)}")
    try:
        os.lstat(out)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR):  # a name too long, a link loop above it
            raise UsageError(
                f"{option('out', out)} cannot be used ({exc.strerror or exc}); choose another path"
            ) from None
    check_output_file(out, [source], lambda path: _is_model_file(path), force)
    folder = out.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise UsageError(f"{option('out', out)}: {folder} is a file, not a folder; choose a path in a folder")
    try:  # the one reliable test of a folder's writability (permissions, read-only mounts, root)
        fd, probe = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".probe", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(
            f"{option('out', out)}: cannot write in {folder} ({exc.strerror}); choose a writable location"
        ) from None


def _is_model_file(path: Path) -> bool:
    try:
        return read_card(path) is not None
    except UsageError:
        return False


# --- the command -------------------------------------------------------------------------------------------------


def import_checkpoint(
    source: str | Path,
    arch: str,
    out: str | Path,
    data: str | None = None,
    num_classes: int | None = None,
    reporter: Reporter | None = None,
    default_normalization: bool = False,
    force: bool = False,
) -> ModelCard:
    """Convert ``source`` into a kdcli model file at ``out`` and return its card.

    ``arch`` may be RepDistiller's name (see ``choose_architecture``); the card names the architecture chosen.
    ``data`` (``cifar100``, ``fashion-mnist``, ...) records the data set and its normalization; without it the
    architecture's default config gives the input size, and its mean and std adapted to the model's input channels
    (``input_statistics``), which must then be asked for with ``default_normalization``: a model trained on
    other data and recorded with ImageNet's statistics evaluates at chance. ``num_classes``, when given, must equal
    the classifier's rows in the file. Notes (the architecture chosen for a RepDistiller name, adapted statistics)
    go to ``reporter``. ``out`` is never the source; without ``force`` it replaces only a kdcli model file.
    """
    folder_meant = str(out).endswith(("/", os.sep))  # Path("dir/") drops the slash that says a folder was meant
    source, out = Path(source), Path(out)
    if folder_meant:
        raise UsageError(
            f"{option('out', f'{out}/')} names a folder; name the file to write, e.g. "
            f"{option('out', out / 'model.safetensors')}"
        )
    reporter = reporter or Reporter()
    if data is not None and data not in STATS:
        raise UsageError(
            f"{option('data')} must be one of {', '.join(STATS)} to record its normalization, not {data!r}; "
            f"{did_you_mean(data, STATS, n=1)}leave it out when the data set is none of these"
        )
    if data is None and not default_normalization:
        raise UsageError(
            f"say what {source} was trained on: {option('data', 'NAME')} ({', '.join(STATS)}) records that data "
            f"set's normalization, or {option('default_normalization')} records the architecture's own (ImageNet's "
            "for timm weights); a model evaluated with another normalization than its training's scores near chance"
        )
    architecture_candidates(arch)  # an unknown name fails before any file is touched
    check_output(out, source, force)
    checkpoint = _load(source)
    tensors = _state_dict(source, checkpoint)
    choice = choose_architecture(arch, tensors, source, num_classes, hint=_checkpoint_arch(checkpoint))
    fit = choice.fit
    if fit.num_classes is None and num_classes is None:
        raise UsageError(
            f"cannot tell the number of classes of {source} ({fit.arch!r}); pass {option('num_classes', 'N')}"
        )
    if num_classes is not None and fit.num_classes is not None and num_classes != fit.num_classes:
        raise UsageError(
            f"{source}: its classifier {fit.classifier}.weight has {fit.num_classes} classes, not the {num_classes} "
            f"of {option('num_classes')}; pass {option('num_classes', fit.num_classes)} or leave it out"
        )
    classes = fit.num_classes or num_classes
    assert classes is not None
    cfg = get_pretrained_cfg(fit.arch)
    mean, std, stats_note = input_statistics(fit.in_chans, data, cfg.mean if cfg else None, cfg.std if cfg else None)
    for note in (choice.note, stats_note):
        if note:
            reporter.note(f"note: {note}")
    model = create_model(fit.arch, num_classes=classes, in_chans=fit.in_chans)
    load_weights(model, tensors, source)
    size = tuple(cfg.input_size[1:]) if cfg and cfg.input_size else (32, 32)
    card = ModelCard(
        arch=fit.arch,
        num_classes=classes,
        in_chans=fit.in_chans,
        input_size=(fit.in_chans, *size),
        mean=mean,
        std=std,
        dataset=data,
        method="import",
    )
    try:
        save_model(out, model, card)  # atomic: a temporary file renamed over ``out``, removed when writing fails
    except (OSError, SafetensorError) as exc:
        raise UsageError(
            f"cannot write {out} ({one_line(exc)}); nothing was written, choose another {option('out')}"
        ) from None
    return card
