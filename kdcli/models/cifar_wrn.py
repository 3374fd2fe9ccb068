"""Wide ResNets for CIFAR (Zagoruyko & Komodakis 2016, "Wide Residual Networks") as timm models.

Definitions as in RepDistiller (Tian et al., CRD, ICLR 2020) for checkpoint compatibility: module names (including
the camel-case ``convShortcut``), widths and initialization follow ``models/wrn.py`` of
https://github.com/HobbitLong/RepDistiller (BSD-2-Clause), so the ``state_dict`` inside its ``{'model': state_dict}``
checkpoints loads with ``strict=True``. The code is an independent rewrite in timm's style; global average pooling
replaces the fixed 8x8 pool, which is the same function on 32x32 inputs and also accepts other sizes.

``wrn_{d}_{k}`` is WRN-d-k: a 16-channel stem and three stages of ``(d - 4) / 6`` pre-activation basic blocks of
widths ``16k``, ``32k`` and ``64k``, followed by a final BatchNorm and ReLU.

Feature levels (``feature_info``, ``forward_intermediates``), RepDistiller's ``is_feat`` features ``f0`` to ``f3``:
0 is the stem convolution's output (module ``conv1``, stride 1), 1 to 3 the stages ``block1`` to ``block3`` (strides
1, 2, 4). Being a pre-activation network, its stage outputs are not normalized: level 3 is ``block3``'s raw output,
as RepDistiller's ``f3``, and ``forward_intermediates(..., norm=True)`` applies the final BatchNorm-ReLU to it, which
gives the ``forward_features`` map (timm's pre-activation ResNetV2 treats its final norm the same way).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch.nn.functional as F
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import Tensor, nn

from kdcli.models._head import CifarClassifier, cifar_cfg, cifar_feature_cfg, repdistiller_init

__all__ = ["WideBasicBlock", "WideResNet", "WideStage"]


class WideBasicBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv3x3, BN-ReLU-(dropout)-conv3x3, plus a shortcut.

    When the width changes, the 1x1 projection ``convShortcut`` takes the block's pre-activated input rather than the
    raw one, as in Zagoruyko & Komodakis' reference code.

    Args:
        in_chs: Input channels.
        out_chs: Output channels.
        stride: Stride of the first convolution and of the projection.
        drop_rate: Dropout between the two convolutions.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_chs, out_chs, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_chs, out_chs, kernel_size=3, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.convShortcut: nn.Conv2d | None = None
        if in_chs != out_chs:
            self.convShortcut = nn.Conv2d(in_chs, out_chs, kernel_size=1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(x))
        shortcut = x if self.convShortcut is None else self.convShortcut(out)
        out = self.relu2(self.bn2(self.conv1(out)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return shortcut + self.conv2(out)


class WideStage(nn.Module):
    """A stage of ``depth`` wide blocks; the ``layer`` attribute gives the checkpoint keys ``blockN.layer.i.*``.

    Args:
        in_chs: Input channels.
        out_chs: Output channels of every block.
        depth: Number of blocks.
        stride: Stride of the first block.
        drop_rate: Dropout inside each block.
    """

    def __init__(self, in_chs: int, out_chs: int, depth: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        blocks = [WideBasicBlock(in_chs, out_chs, stride, drop_rate)]
        blocks += [WideBasicBlock(out_chs, out_chs, 1, drop_rate) for _ in range(depth - 1)]
        self.layer = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


# RepDistiller zeroes the classifier's bias but keeps PyTorch's default for its weight.
_init_weights = partial(repdistiller_init, classifier="zero_bias")


class WideResNet(CifarClassifier):
    """Wide ResNet for 32x32 images: a 3x3 stem, three stages (the last two downsampling by 2), final BN-ReLU.

    Args:
        depth: Number of weighted layers, ``6n + 4`` for ``n`` blocks per stage.
        widen_factor: Width multiplier ``k`` of the stages.
        in_chans: Input image channels.
        block_drop_rate: Dropout inside each block, Zagoruyko & Komodakis' ``dropRate`` (RepDistiller uses none).
        **kwargs: The head's ``num_classes``, ``global_pool`` and ``drop_rate`` (see ``CifarClassifier._init_head``).
    """

    def __init__(
        self, depth: int, widen_factor: int, *, in_chans: int = 3, block_drop_rate: float = 0.0, **kwargs: Any
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"Wide ResNet depth must be 6n + 4 with n >= 1, got {depth}")
        blocks_per_stage = (depth - 4) // 6
        widths = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)

        self.conv1 = nn.Conv2d(in_chans, widths[0], kernel_size=3, padding=1, bias=False)
        self.block1 = WideStage(widths[0], widths[1], blocks_per_stage, 1, block_drop_rate)
        self.block2 = WideStage(widths[1], widths[2], blocks_per_stage, 2, block_drop_rate)
        self.block3 = WideStage(widths[2], widths[3], blocks_per_stage, 2, block_drop_rate)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU(inplace=True)
        self._init_features(
            [
                {"num_chs": widths[0], "reduction": 1, "module": "conv1"},
                {"num_chs": widths[1], "reduction": 1, "module": "block1"},
                {"num_chs": widths[2], "reduction": 2, "module": "block2"},
                {"num_chs": widths[3], "reduction": 4, "module": "block3"},
            ],
            norm=("bn1",),
        )

        self._init_head(widths[3], "fc", _init_weights, **kwargs)
        self.apply(_init_weights)

    def _forward_level(self, index: int, x: Tensor) -> Tensor:
        """Level 0 is the stem convolution, level ``i`` the stage ``block{i}``."""
        if index == 0:
            return self.conv1(x)
        stage: nn.Module = getattr(self, f"block{index}")
        return stage(x)

    def _forward_norm(self, x: Tensor) -> Tensor:
        """The final BatchNorm-ReLU: ``forward_features`` returns its output."""
        return self.relu(self.bn1(x))


def _create_wrn(variant: str, pretrained: bool = False, **kwargs: Any) -> WideResNet:
    return build_model_with_cfg(WideResNet, variant, pretrained, feature_cfg=cifar_feature_cfg(4), **kwargs)


default_cfgs = generate_default_cfgs(
    {
        name: cifar_cfg("conv1", "fc", pool_size=(8, 8), paper_ids="arXiv:1605.07146")
        for name in ("wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2")
    }
)


@register_model
def wrn_16_1(pretrained: bool = False, **kwargs: Any) -> WideResNet:
    """WRN-16-1: two blocks per stage, widths 16-32-64."""
    return _create_wrn("wrn_16_1", pretrained, depth=16, widen_factor=1, **kwargs)


@register_model
def wrn_16_2(pretrained: bool = False, **kwargs: Any) -> WideResNet:
    """WRN-16-2: two blocks per stage, widths 32-64-128."""
    return _create_wrn("wrn_16_2", pretrained, depth=16, widen_factor=2, **kwargs)


@register_model
def wrn_40_1(pretrained: bool = False, **kwargs: Any) -> WideResNet:
    """WRN-40-1: six blocks per stage, widths 16-32-64."""
    return _create_wrn("wrn_40_1", pretrained, depth=40, widen_factor=1, **kwargs)


@register_model
def wrn_40_2(pretrained: bool = False, **kwargs: Any) -> WideResNet:
    """WRN-40-2: six blocks per stage, widths 32-64-128."""
    return _create_wrn("wrn_40_2", pretrained, depth=40, widen_factor=2, **kwargs)
