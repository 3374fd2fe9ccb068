"""Wide ResNets for CIFAR (Zagoruyko & Komodakis 2016, "Wide Residual Networks") as timm models.

Definitions as in RepDistiller (Tian et al., CRD, ICLR 2020) for checkpoint compatibility: module names (including
the camel-case ``convShortcut``), widths and initialization follow ``models/wrn.py`` of
https://github.com/HobbitLong/RepDistiller (BSD-2-Clause), so the ``state_dict`` inside its ``{'model': state_dict}``
checkpoints loads with ``strict=True``. The code is an independent rewrite in timm's style; global average pooling
replaces the fixed 8x8 pool, which is the same function on 32x32 inputs and also accepts other sizes.

``wrn_{d}_{k}`` is WRN-d-k: a 16-channel stem and three stages of ``(d - 4) / 6`` pre-activation basic blocks of
widths ``16k``, ``32k`` and ``64k``, followed by a final BatchNorm and ReLU.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from timm.layers import create_classifier
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import Tensor, nn

from kdcli.models.cifar_resnet import CIFAR100_MEAN, CIFAR100_STD

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


def _init_weights(module: nn.Module) -> None:
    # RepDistiller zeroes the classifier's bias but keeps PyTorch's default for its weight.
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        nn.init.zeros_(module.bias)


class WideResNet(nn.Module):
    """Wide ResNet for 32x32 images: a 3x3 stem, three stages (the last two downsampling by 2), final BN-ReLU.

    Args:
        depth: Number of weighted layers, ``6n + 4`` for ``n`` blocks per stage.
        widen_factor: Width multiplier ``k`` of the stages.
        num_classes: Classifier outputs; 0 leaves the classifier out.
        in_chans: Input image channels.
        global_pool: timm global pooling type.
        drop_rate: Dropout before the classifier (RepDistiller uses none).
        block_drop_rate: Dropout inside each block, Zagoruyko & Komodakis' ``dropRate`` (RepDistiller uses none).
    """

    def __init__(
        self,
        depth: int,
        widen_factor: int,
        num_classes: int = 100,
        in_chans: int = 3,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        block_drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"Wide ResNet depth must be 6n + 4 with n >= 1, got {depth}")
        blocks_per_stage = (depth - 4) // 6
        widths = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.num_classes = num_classes
        self.drop_rate = drop_rate

        self.conv1 = nn.Conv2d(in_chans, widths[0], kernel_size=3, padding=1, bias=False)
        self.block1 = WideStage(widths[0], widths[1], blocks_per_stage, 1, block_drop_rate)
        self.block2 = WideStage(widths[1], widths[2], blocks_per_stage, 2, block_drop_rate)
        self.block3 = WideStage(widths[2], widths[3], blocks_per_stage, 2, block_drop_rate)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU(inplace=True)

        self.num_features = widths[3]
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool)
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()
        self.apply(_init_weights)

    def get_classifier(self) -> nn.Module:
        """Returns the final Linear layer (``nn.Identity`` when built with ``num_classes=0``)."""
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replaces the classifier with a freshly initialized one.

        Args:
            num_classes: New number of outputs; 0 removes the classifier.
            global_pool: New pooling type; the current one is kept when None.
        """
        self.num_classes = num_classes
        pool_type = self.global_pool.pool_type if global_pool is None else global_pool
        self.global_pool, fc = create_classifier(self.num_features, num_classes, pool_type=pool_type)
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()
        fc.apply(_init_weights)
        ref = next(self.parameters())
        self.fc = fc.to(device=ref.device, dtype=ref.dtype)

    def forward_features(self, x: Tensor) -> Tensor:
        """Returns the activated output of the final BatchNorm, before global pooling."""
        x = self.conv1(x)
        x = self.block1(x)
        x = self.block2(x)
        x = self.block3(x)
        return self.relu(self.bn1(x))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Pools and flattens ``x``; returns those features when ``pre_logits`` is set, else the logits."""
        x = self.global_pool(x)
        if self.drop_rate:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def _create_wrn(variant: str, pretrained: bool = False, **kwargs: Any) -> WideResNet:
    return build_model_with_cfg(WideResNet, variant, pretrained, **kwargs)


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "url": "",
        "num_classes": 100,
        "input_size": (3, 32, 32),
        "pool_size": (8, 8),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": CIFAR100_MEAN,
        "std": CIFAR100_STD,
        "first_conv": "conv1",
        "classifier": "fc",
        # Definitions (and the CIFAR-100 checkpoints they load) come from RepDistiller, BSD-2-Clause.
        "license": "bsd-2-clause",
        "origin_url": "https://github.com/HobbitLong/RepDistiller",
        "paper_ids": "arXiv:1605.07146",
        **kwargs,
    }


default_cfgs = generate_default_cfgs({name: _cfg() for name in ("wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2")})


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
