"""``kdcli import``: a PyTorch checkpoint to a kdcli safetensors model file.

Reads RepDistiller's ``{'model': state_dict, ...}``, timm's ``.pth.tar`` (``{'state_dict': ...}``) and plain state
dicts, with or without DataParallel's ``module.`` prefix. Files are read with ``torch.load(weights_only=True)``,
which refuses pickled code: a checkpoint that needs more is not loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch

from kdcli.data.sources import STATS
from kdcli.errors import UsageError
from kdcli.io.model_file import ModelCard, conv_in_chans, load_weights, save_model
from kdcli.models.factory import create_model, resolve_arch


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise UsageError(f"{path} does not exist")
    try:
        checkpoint: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise UsageError(
            f"cannot read {path} safely ({str(exc).splitlines()[0]}); kdcli loads checkpoints with weights_only=True"
        ) from None
    for key in ("model", "state_dict", "state_dict_ema"):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
            break
    if not (isinstance(checkpoint, dict) and checkpoint and all(torch.is_tensor(v) for v in checkpoint.values())):
        raise UsageError(f"{path} holds no state dict (looked for 'model', 'state_dict' or a dict of tensors)")
    return {key.removeprefix("module."): value for key, value in checkpoint.items()}


def import_checkpoint(
    source: str | Path, arch: str, out: str | Path, data: str | None = None, num_classes: int | None = None
) -> ModelCard:
    """Convert ``source`` into a kdcli model file at ``out`` and return its card.

    ``data`` (``cifar100``, ``fashion-mnist``, ...) records the data set and its normalization; without it the
    architecture's default config gives the input size, mean and std.
    """
    source, out = Path(source), Path(out)
    arch = resolve_arch(arch)
    tensors = read_state_dict(source)
    cfg = timm.models.get_pretrained_cfg(arch)
    classifier_weight = tensors.get(f"{cfg.classifier}.weight") if cfg and cfg.classifier else None
    classes = num_classes or (int(classifier_weight.shape[0]) if classifier_weight is not None else None)
    if classes is None:
        raise UsageError(f"cannot tell the number of classes of {source}; pass --num-classes N")
    in_chans = conv_in_chans(tensors)
    model = create_model(arch, num_classes=classes, in_chans=in_chans)
    load_weights(model, tensors, source)
    if data is not None and data not in STATS:
        raise UsageError(f"--data must be one of {', '.join(STATS)} to record its normalization, not {data!r}")
    mean, std = STATS[data] if data else (cfg.mean, cfg.std) if cfg else ((0.5,) * in_chans, (0.5,) * in_chans)
    size = cfg.input_size[1:] if cfg else (32, 32)
    card = ModelCard(arch=arch, num_classes=classes, in_chans=in_chans, input_size=(in_chans, *size),
                     mean=tuple(mean), std=tuple(std), dataset=data, method="import")  # fmt: skip
    save_model(out, model, card)
    return card
