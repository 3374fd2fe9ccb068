"""CIFAR ResNets (He et al. 2016, "Deep Residual Learning for Image Recognition", Sec. 4.2) as timm models.

Definitions as in RepDistiller (Tian et al., CRD, ICLR 2020) for checkpoint compatibility: module names, widths and
initialization follow ``models/resnet.py`` of https://github.com/HobbitLong/RepDistiller (BSD-2-Clause), so the
``state_dict`` inside its ``{'model': state_dict}`` checkpoints loads with ``strict=True``. The code is an independent
rewrite in timm's style; global average pooling replaces the fixed 8x8 pool, which is the same function on 32x32
inputs and also accepts other sizes (28x28 MNIST-like images, for instance).

``resnet{d}`` stacks ``(d - 2) / 6`` basic blocks in each of three stages of widths 16, 32 and 64 after a 16-channel
stem. ``resnet8x4`` and ``resnet32x4`` are RepDistiller's wide variants: stages four times wider (64, 128, 256) but a
stem only twice as wide (32), so their first stage starts with a 1x1 projection.

Feature levels (``feature_info``, ``forward_intermediates``), RepDistiller's ``is_feat`` features ``f0`` to ``f3``:
0 is the activated stem (module ``relu``, stride 1), 1 to 3 the stages ``layer1`` to ``layer3`` (strides 1, 2, 4).
"""

from __future__ import annotations

from typing import Any

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import Tensor, nn

from kdcli.models._head import (
    CIFAR100_MEAN,
    CIFAR100_STD,
    CifarClassifier,
    cifar_cfg,
    cifar_feature_cfg,
    repdistiller_init,
)

__all__ = ["CIFAR100_MEAN", "CIFAR100_STD", "BasicBlock", "CifarResNet"]

_WIDTHS = (16, 16, 32, 64)
_WIDTHS_X4 = (32, 64, 128, 256)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions plus a shortcut that is the identity or a 1x1 projection.

    Projections are He et al.'s option B; their own CIFAR networks used zero-padded identities (option A) instead.

    The attribute names ``conv1``, ``bn1``, ``conv2``, ``bn2`` and ``downsample`` are RepDistiller's and are relied
    upon: they are the checkpoint keys, and code that edits blocks (e.g. swapping ``conv1`` and ``conv2`` of a
    shape-preserving block) addresses them by name.

    Args:
        in_chs: Input channels.
        out_chs: Output channels.
        stride: Stride of the first convolution and of the projection.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, out_chs, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_chs, out_chs, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_chs != out_chs:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_chs, out_chs, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_chs),
            )
        # Not in place, so a forward pre-hook on act2 sees the pre-activation sum (RepDistiller's ``preact`` feature).
        self.act2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + shortcut)


def _make_stage(in_chs: int, out_chs: int, depth: int, stride: int) -> nn.Sequential:
    blocks = [BasicBlock(in_chs, out_chs, stride)]
    blocks += [BasicBlock(out_chs, out_chs) for _ in range(depth - 1)]
    return nn.Sequential(*blocks)


class CifarResNet(CifarClassifier):
    """ResNet for 32x32 images: a 3x3 stem and three stages of basic blocks, the last two downsampling by 2.

    Args:
        depth: Number of weighted layers, ``6n + 2`` for ``n`` blocks per stage.
        widths: Channels of the stem and of the three stages.
        in_chans: Input image channels.
        **kwargs: The head's ``num_classes``, ``global_pool`` and ``drop_rate`` (see ``CifarClassifier._init_head``).
    """

    def __init__(self, depth: int, widths: tuple[int, int, int, int], *, in_chans: int = 3, **kwargs: Any) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2 with n >= 1, got {depth}")
        blocks_per_stage = (depth - 2) // 6

        self.conv1 = nn.Conv2d(in_chans, widths[0], kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = _make_stage(widths[0], widths[1], blocks_per_stage, stride=1)
        self.layer2 = _make_stage(widths[1], widths[2], blocks_per_stage, stride=2)
        self.layer3 = _make_stage(widths[2], widths[3], blocks_per_stage, stride=2)
        self._init_features(
            [
                {"num_chs": widths[0], "reduction": 1, "module": "relu"},
                {"num_chs": widths[1], "reduction": 1, "module": "layer1"},
                {"num_chs": widths[2], "reduction": 2, "module": "layer2"},
                {"num_chs": widths[3], "reduction": 4, "module": "layer3"},
            ]
        )

        # RepDistiller leaves the Linear classifier at PyTorch's default initialization.
        self._init_head(widths[3], "fc", repdistiller_init, **kwargs)
        self.apply(repdistiller_init)

    def _forward_level(self, index: int, x: Tensor) -> Tensor:
        """Level 0 is the activated stem, level ``i`` the stage ``layer{i}``; the last one is the feature map."""
        if index == 0:
            return self.relu(self.bn1(self.conv1(x)))
        stage: nn.Module = getattr(self, f"layer{index}")  # through the attribute, which SPS may have replaced
        return stage(x)


def _create_cifar_resnet(variant: str, pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    return build_model_with_cfg(CifarResNet, variant, pretrained, feature_cfg=cifar_feature_cfg(4), **kwargs)


default_cfgs = generate_default_cfgs(
    {
        name: cifar_cfg("conv1", "fc", pool_size=(8, 8), paper_ids="arXiv:1512.03385")
        for name in (
            "resnet8",
            "resnet14",
            "resnet20",
            "resnet32",
            "resnet44",
            "resnet56",
            "resnet110",
            "resnet8x4",
            "resnet32x4",
        )
    }
)


@register_model
def resnet8(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-8 for CIFAR: one basic block per stage, widths 16-16-32-64."""
    return _create_cifar_resnet("resnet8", pretrained, depth=8, widths=_WIDTHS, **kwargs)


@register_model
def resnet14(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-14 for CIFAR: two basic blocks per stage, widths 16-16-32-64."""
    return _create_cifar_resnet("resnet14", pretrained, depth=14, widths=_WIDTHS, **kwargs)


@register_model
def resnet20(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-20 for CIFAR (He et al. 2016): three basic blocks per stage, widths 16-16-32-64."""
    return _create_cifar_resnet("resnet20", pretrained, depth=20, widths=_WIDTHS, **kwargs)


@register_model
def resnet32(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-32 for CIFAR (He et al. 2016): five basic blocks per stage, widths 16-16-32-64."""
    return _create_cifar_resnet("resnet32", pretrained, depth=32, widths=_WIDTHS, **kwargs)


@register_model
def resnet44(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-44 for CIFAR (He et al. 2016): seven basic blocks per stage, widths 16-16-32-64."""
    return _create_cifar_resnet("resnet44", pretrained, depth=44, widths=_WIDTHS, **kwargs)


@register_model
def resnet56(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-56 for CIFAR (He et al. 2016): nine basic blocks per stage, widths 16-16-32-64."""
    return _create_cifar_resnet("resnet56", pretrained, depth=56, widths=_WIDTHS, **kwargs)


@register_model
def resnet110(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-110 for CIFAR (He et al. 2016): eighteen basic blocks per stage, widths 16-16-32-64."""
    return _create_cifar_resnet("resnet110", pretrained, depth=110, widths=_WIDTHS, **kwargs)


@register_model
def resnet8x4(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """RepDistiller's ResNet-8x4: one basic block per stage, widths 32-64-128-256."""
    return _create_cifar_resnet("resnet8x4", pretrained, depth=8, widths=_WIDTHS_X4, **kwargs)


@register_model
def resnet32x4(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """RepDistiller's ResNet-32x4: five basic blocks per stage, widths 32-64-128-256."""
    return _create_cifar_resnet("resnet32x4", pretrained, depth=32, widths=_WIDTHS_X4, **kwargs)
