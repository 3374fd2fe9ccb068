"""Model creation: any timm name, the CIFAR zoo (registered into timm by ``kdcli.models``), and friendly errors."""

from __future__ import annotations

from typing import Any

import timm
from torch import nn

from kdcli.errors import UsageError
from kdcli.models import TIMM_SHADOWED, ZOO_ALIASES, ZOO_MODELS
from kdcli.suggest import did_you_mean


def resolve_arch(name: str) -> str:
    """The timm registry name for ``name`` (RepDistiller spellings such as ``MobileNetV2`` are accepted)."""
    name = ZOO_ALIASES.get(name, name)
    if timm.is_model(name):
        return name
    hint = did_you_mean(name, [*ZOO_MODELS, *ZOO_ALIASES, *timm.list_models()])
    raise UsageError(f"unknown architecture {name!r}; {hint}`kdcli models` lists the CIFAR zoo and timm's names")


def shadow_hint(name: str) -> str | None:
    """A note when a name is timm's ImageNet model while the user may have meant the CIFAR zoo's."""
    zoo_name = TIMM_SHADOWED.get(name)
    return f"{name!r} is timm's ImageNet model; the CIFAR zoo's is {zoo_name!r}" if zoo_name else None


def sized_model(
    arch: str,
    num_classes: int,
    in_chans: int,
    image_size: int,
    pretrained: bool = False,
    kwargs: dict[str, Any] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """``create_model`` for images of ``image_size``: a model built for another size that takes ``img_size`` (timm's
    ViTs and other patch models, made for 224) is built for the data's size; a convolutional model, which takes any
    size, is built as it is. Returns the model and the keyword arguments that rebuild it (recorded in its file)."""
    kwargs = dict(kwargs or {})
    cfg = timm.models.get_pretrained_cfg(resolve_arch(arch))
    default = cfg.input_size[-1] if cfg is not None and cfg.input_size else image_size
    if default != image_size and "img_size" not in kwargs:
        try:
            return create_model(arch, num_classes, in_chans, pretrained, {**kwargs, "img_size": image_size}), {
                **kwargs,
                "img_size": image_size,
            }
        except UsageError:
            pass  # no img_size argument: a convolutional model, which takes any size
    return create_model(arch, num_classes, in_chans, pretrained, kwargs), kwargs


def create_model(
    arch: str, num_classes: int, in_chans: int, pretrained: bool = False, kwargs: dict[str, Any] | None = None
) -> nn.Module:
    """``timm.create_model`` with the classes and input channels of the data."""
    arch = resolve_arch(arch)
    try:
        return timm.create_model(
            arch, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans, **(kwargs or {})
        )
    except TypeError as exc:
        raise UsageError(f"cannot build {arch!r} with {kwargs or {}}: {exc}") from None
    except (OSError, RuntimeError) as exc:
        if pretrained:
            raise UsageError(
                f"cannot fetch timm weights for {arch!r} ({exc}); pass a checkpoint file instead"
            ) from None
        raise
