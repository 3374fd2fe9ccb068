"""Shuffled Parameter Sharing (SPS), from Pea-KD (Cho and Kang, arXiv 2009.14822), carried over to image models.

More effective depth for the same parameters: the student's layers run a second time with shared weights, and in
the second pass the two same-shaped matrices of each layer trade places.

- ResNets with basic blocks (the CIFAR zoo's and timm's): within each stage, after the stage's blocks, the
  shape-preserving blocks (no downsample, both convolutions 3×3 C→C) run again with ``conv1`` and ``conv2`` swapped.
  Each second pass has its own BatchNorm by default (``share_norm: false``); with ``share_norm`` it reuses the
  first pass's norms position by position.
- Vision transformers with fused ``qkv`` (timm's ``blocks``): blocks 1…L run again with the query and key weights
  (and biases) swapped, so each attention map is the transpose of the first pass's; norms and MLPs are shared.
- ``shuffle: false`` shares without swapping (the paper's ablation); ``tied: false`` gives every second pass weights
  of its own: the plain network of the same effective depth (same MACs, more parameters), for comparison.

The second passes reuse the first pass's modules, so the weights are the same tensors; ``state_dict`` lists them
under both names and safetensors' ``save_model`` stores each once. ``apply_sps`` is registered as the student
transform ``sps`` (entry-point group ``kdcli.student_transforms``): a model file records it with its options, so
kdcli rebuilds the shared structure before loading the weights.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import Tensor, nn

from kdcli.catalog import SpsOptions
from kdcli.errors import UsageError, option

SUPPORTED = "ResNets with basic blocks (CIFAR zoo resnet*, timm resnet18/34-style) and ViTs with fused qkv"


class SwappedQKV(nn.Module):
    """A fused ``qkv`` projection with the query and key rows swapped; the weights are the original module's."""

    def __init__(self, qkv: nn.Linear) -> None:
        super().__init__()
        self.qkv = qkv

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.qkv.weight.chunk(3, dim=0)
        bias = None
        if self.qkv.bias is not None:
            bq, bk, bv = self.qkv.bias.chunk(3)
            bias = torch.cat([bk, bq, bv])
        return F.linear(x, torch.cat([k, q, v]), bias)


class SharedPassStage(nn.Module):
    """A stage's blocks under their own keys (``0``, ``1``, ...), then ``second_pass``: shared-weight re-runs of its
    shape-preserving blocks."""

    def __init__(self, stage: nn.Sequential, second_pass: list[nn.Module]) -> None:
        super().__init__()
        self.first_pass = len(stage)
        for index, block in enumerate(stage):
            self.add_module(str(index), block)
        self.second_pass = nn.ModuleList(second_pass)

    def forward(self, x: Tensor) -> Tensor:
        for index in range(self.first_pass):
            x = self._modules[str(index)](x)  # type: ignore[misc]
        for block in self.second_pass:
            x = block(x)
        return x


def _twin(module: nn.Module) -> nn.Module:
    """A shallow copy with its own module table: the entries are still the original's (shared) modules."""
    twin = copy.copy(module)
    twin._modules = dict(module._modules)
    twin._parameters = dict(module._parameters)
    twin._buffers = dict(module._buffers)
    return twin


def _shape_preserving(block: nn.Module) -> bool:
    conv1, conv2 = getattr(block, "conv1", None), getattr(block, "conv2", None)
    return (
        isinstance(conv1, nn.Conv2d)
        and isinstance(conv2, nn.Conv2d)
        and conv1.weight.shape == conv2.weight.shape
        and conv1.stride == (1, 1)
        and getattr(block, "downsample", None) is None
    )


def _resnet_second_pass(block: nn.Module, shuffle: bool, share_norm: bool, tied: bool) -> nn.Module:
    twin = _twin(block)
    if shuffle:
        twin.conv1, twin.conv2 = block.conv2, block.conv1
    if not tied:
        twin.conv1, twin.conv2 = copy.deepcopy(twin.conv1), copy.deepcopy(twin.conv2)
    if not share_norm:
        twin.bn1, twin.bn2 = copy.deepcopy(block.bn1), copy.deepcopy(block.bn2)
    return twin


def _vit_second_pass(block: Any, shuffle: bool, tied: bool) -> nn.Module:
    if not tied:
        return copy.deepcopy(block)
    twin = _twin(block)
    if shuffle:
        attention = _twin(block.attn)
        attention.qkv = SwappedQKV(block.attn.qkv)
        twin.attn = attention
    return twin


def family(model: nn.Module) -> str | None:
    """``resnet`` or ``vit`` when SPS supports the model, else None."""
    stages = [s for i in range(1, 5) if isinstance(s := getattr(model, f"layer{i}", None), nn.Sequential)]
    if stages and all(not hasattr(block, "conv3") and hasattr(block, "conv2") for s in stages for block in s):
        return "resnet"
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, nn.Sequential) and all(
        isinstance(getattr(getattr(b, "attn", None), "qkv", None), nn.Linear) for b in blocks
    ):
        return "vit"
    return None


def sps_options(**options: Any) -> SpsOptions:
    """The transform's options, checked: they come from a model file's metadata as well as from the method, and an
    unknown key or a value that is not a boolean is a damaged file, said in one line."""
    try:
        return SpsOptions.model_validate(options)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = ".".join(str(part) for part in error["loc"])
        valid = ", ".join(SpsOptions.model_fields)
        what = f"is not one of its options ({valid})" if error["type"] == "extra_forbidden" else "must be true or false"
        raise UsageError(
            f"the student transform 'sps' got option {name}={error.get('input')!r}, which {what}; the model file's "
            "student_transform metadata is damaged: re-export the model (or rerun the run that wrote it)"
        ) from None


def apply_sps(
    model: nn.Module, shuffle: Any = True, share_norm: Any = False, tied: Any = True, **unknown: Any
) -> nn.Module:
    """Give ``model`` shared-weight second passes, in place; returns it. The options are checked (``sps_options``),
    unknown ones included, since a model file's metadata names them."""
    options = sps_options(shuffle=shuffle, share_norm=share_norm, tied=tied, **unknown)
    shuffle, share_norm, tied = options.shuffle, options.share_norm, options.tied
    kind = family(model)
    if kind is None:
        raise UsageError(
            f"SPS supports {SUPPORTED}, not {type(model).__name__}; turn it off with {option('method.sps', 'false')}"
        )
    if kind == "resnet":
        stages = {i: s for i in range(1, 5) if isinstance(s := getattr(model, f"layer{i}", None), nn.Sequential)}
        if not any(_shape_preserving(block) for stage in stages.values() for block in stage):
            raise UsageError(
                f"SPS finds no shape-preserving block in {type(model).__name__} (every block changes its shape), "
                f"so it would change nothing; use {option('method.sps', 'false')}"
            )
        for index, stage in stages.items():
            twins = [_resnet_second_pass(b, shuffle, share_norm, tied) for b in stage if _shape_preserving(b)]
            setattr(model, f"layer{index}", SharedPassStage(stage, twins))
        return model
    if kind == "vit":
        blocks = model.blocks
        assert isinstance(blocks, nn.Sequential)
        model.blocks = nn.Sequential(*blocks, *[_vit_second_pass(b, shuffle, tied) for b in blocks])
        return model
    raise UsageError(
        f"SPS supports {SUPPORTED}, not {type(model).__name__}; turn it off with {option('method.sps', 'false')}"
    )
