"""CIFAR ShuffleNet V1 (Zhang et al. 2018) and V2 (Ma et al. 2018) as timm models.

Zhang et al. 2018, "ShuffleNet: An Extremely Efficient Convolutional Neural Network for Mobile Devices"; Ma et al.
2018, "ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture Design".

Definitions as in RepDistiller (Tian et al., CRD, ICLR 2020) for checkpoint compatibility: module names, widths and
initialization follow ``ShuffleV1`` and ``ShuffleV2`` in ``models/ShuffleNetv1.py`` and ``models/ShuffleNetv2.py`` of
https://github.com/HobbitLong/RepDistiller (BSD-2-Clause), so the ``state_dict`` inside its ``{'model': state_dict}``
checkpoints loads with ``strict=True``. The code is an independent rewrite in timm's style; global average pooling
replaces the fixed 4x4 pool, which is the same function on 32x32 inputs and also accepts other sizes.

Both use a 1x1, 24-channel stem without max pooling, so three stride-2 stages take 32x32 inputs to 4x4, and both keep
PyTorch's default initialization (RepDistiller sets none). V1 is the 1x, 3-group network, with a ReLU after the
depthwise convolution that the paper does not have; V2 is the 1x network.

Feature levels (``feature_info``, ``forward_intermediates``), RepDistiller's ``is_feat`` features ``f0`` to ``f3``:
0 is the ReLU-activated stem (module ``bn1``, whose output the functional ReLU activates; stride 1), 1 to 3 the
stages ``layer1`` to ``layer3`` (strides 2, 4, 8). V2's final 1x1 convolution (``conv2``, ``bn2``) is no level; like
timm's ``conv_head`` it only feeds the classifier.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import Tensor, nn

from kdcli.models._head import CifarClassifier, cifar_cfg, cifar_feature_cfg

__all__ = ["CifarShuffleNetV1", "CifarShuffleNetV2", "ShuffleV1Block", "ShuffleV2Block", "ShuffleV2DownBlock"]

_STEM_WIDTH = 24


def _feature_info(stage_widths: tuple[int, int, int]) -> list[dict[str, Any]]:
    """The stem at full resolution, then the three stages, each halving it."""
    stages = [{"num_chs": chs, "reduction": 2**i, "module": f"layer{i}"} for i, chs in enumerate(stage_widths, 1)]
    return [{"num_chs": _STEM_WIDTH, "reduction": 1, "module": "bn1"}, *stages]


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """Interleaves the channels of ``groups`` equal groups, so that the next grouped convolution mixes them."""
    batch, channels, height, width = x.shape
    x = x.view(batch, groups, channels // groups, height, width).transpose(1, 2)
    return x.reshape(batch, channels, height, width)


class ShuffleV1Block(nn.Module):
    """ShuffleNet unit: grouped 1x1, channel shuffle, 3x3 depthwise, grouped 1x1; add, or concatenate when strided.

    Args:
        in_chs: Input channels.
        out_chs: Channels of the residual branch; a strided unit outputs ``in_chs + out_chs``.
        stride: 1 (identity shortcut, added) or 2 (3x3 average-pooled shortcut, concatenated).
        groups: Groups of the second pointwise convolution.
        first_groups: Groups of the first pointwise convolution and of the shuffle.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int, groups: int, first_groups: int) -> None:
        super().__init__()
        mid_chs = out_chs // 4
        self.stride = stride
        self.first_groups = first_groups
        self.conv1 = nn.Conv2d(in_chs, mid_chs, kernel_size=1, groups=first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_chs)
        self.conv2 = nn.Conv2d(mid_chs, mid_chs, kernel_size=3, stride=stride, padding=1, groups=mid_chs, bias=False)
        self.bn2 = nn.BatchNorm2d(mid_chs)
        self.conv3 = nn.Conv2d(mid_chs, out_chs, kernel_size=1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_chs)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = channel_shuffle(out, self.first_groups)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.stride == 2:
            return F.relu(torch.cat([out, F.avg_pool2d(x, kernel_size=3, stride=2, padding=1)], dim=1))
        return F.relu(out + x)


class CifarShuffleNetV1(CifarClassifier):
    """ShuffleNet V1 for 32x32 images: 1x1 stem and three stages whose first unit halves the resolution.

    Args:
        stage_widths: Output channels of the three stages.
        stage_depths: Units per stage.
        groups: Groups of the pointwise convolutions.
        in_chans: Input image channels.
        **kwargs: The head's ``num_classes``, ``global_pool`` and ``drop_rate`` (see ``CifarClassifier._init_head``).
    """

    def __init__(
        self,
        stage_widths: tuple[int, int, int],
        stage_depths: tuple[int, int, int],
        groups: int,
        *,
        in_chans: int = 3,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, _STEM_WIDTH, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(_STEM_WIDTH)
        # The stem is too narrow to split into groups, so the first pointwise convolution is not grouped (Zhang et al.).
        self.layer1 = self._make_stage(_STEM_WIDTH, stage_widths[0], stage_depths[0], groups, first_groups=1)
        self.layer2 = self._make_stage(stage_widths[0], stage_widths[1], stage_depths[1], groups, first_groups=groups)
        self.layer3 = self._make_stage(stage_widths[1], stage_widths[2], stage_depths[2], groups, first_groups=groups)
        self._init_features(_feature_info(stage_widths))

        # No weight initialization: RepDistiller keeps PyTorch's defaults.
        self._init_head(stage_widths[2], "linear", **kwargs)

    @staticmethod
    def _make_stage(in_chs: int, out_chs: int, depth: int, groups: int, first_groups: int) -> nn.Sequential:
        # The strided first unit concatenates its input, so its branch only adds the missing channels.
        blocks = [ShuffleV1Block(in_chs, out_chs - in_chs, 2, groups, first_groups)]
        blocks += [ShuffleV1Block(out_chs, out_chs, 1, groups, groups) for _ in range(depth - 1)]
        return nn.Sequential(*blocks)

    def _forward_level(self, index: int, x: Tensor) -> Tensor:
        """Level 0 is the activated stem, level ``i`` the stage ``layer{i}``; the last one is the feature map."""
        if index == 0:
            return F.relu(self.bn1(self.conv1(x)))
        stage: nn.Module = getattr(self, f"layer{index}")
        return stage(x)


class ShuffleV2Block(nn.Module):
    """ShuffleNet V2 basic unit: half the channels pass through, the other half go through 1x1-dw3x3-1x1.

    Args:
        chs: Input and output channels.
    """

    def __init__(self, chs: int) -> None:
        super().__init__()
        branch_chs = chs // 2
        self.conv1 = nn.Conv2d(branch_chs, branch_chs, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(branch_chs)
        self.conv2 = nn.Conv2d(branch_chs, branch_chs, kernel_size=3, padding=1, groups=branch_chs, bias=False)
        self.bn2 = nn.BatchNorm2d(branch_chs)
        self.conv3 = nn.Conv2d(branch_chs, branch_chs, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(branch_chs)

    def forward(self, x: Tensor) -> Tensor:
        passthrough, x = x.chunk(2, dim=1)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = F.relu(self.bn3(self.conv3(out)))
        return channel_shuffle(torch.cat([passthrough, out], dim=1), 2)


class ShuffleV2DownBlock(nn.Module):
    """ShuffleNet V2 spatial-downsampling unit: two strided branches, each producing half the output channels.

    Args:
        in_chs: Input channels.
        out_chs: Output channels.
    """

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        mid_chs = out_chs // 2
        self.conv1 = nn.Conv2d(in_chs, in_chs, kernel_size=3, stride=2, padding=1, groups=in_chs, bias=False)
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.conv2 = nn.Conv2d(in_chs, mid_chs, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid_chs)
        self.conv3 = nn.Conv2d(in_chs, mid_chs, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid_chs)
        self.conv4 = nn.Conv2d(mid_chs, mid_chs, kernel_size=3, stride=2, padding=1, groups=mid_chs, bias=False)
        self.bn4 = nn.BatchNorm2d(mid_chs)
        self.conv5 = nn.Conv2d(mid_chs, mid_chs, kernel_size=1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid_chs)

    def forward(self, x: Tensor) -> Tensor:
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return channel_shuffle(torch.cat([left, right], dim=1), 2)


class CifarShuffleNetV2(CifarClassifier):
    """ShuffleNet V2 for 32x32 images: 1x1 stem, three downsampling stages and a final 1x1 convolution.

    Args:
        stage_widths: Output channels of the three stages.
        stage_depths: Basic units per stage, after its downsampling unit.
        num_features: Channels of the final 1x1 convolution.
        in_chans: Input image channels.
        **kwargs: The head's ``num_classes``, ``global_pool`` and ``drop_rate`` (see ``CifarClassifier._init_head``).
    """

    def __init__(
        self,
        stage_widths: tuple[int, int, int],
        stage_depths: tuple[int, int, int],
        num_features: int,
        *,
        in_chans: int = 3,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, _STEM_WIDTH, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(_STEM_WIDTH)
        self.layer1 = self._make_stage(_STEM_WIDTH, stage_widths[0], stage_depths[0])
        self.layer2 = self._make_stage(stage_widths[0], stage_widths[1], stage_depths[1])
        self.layer3 = self._make_stage(stage_widths[1], stage_widths[2], stage_depths[2])
        self.conv2 = nn.Conv2d(stage_widths[2], num_features, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(num_features)
        self._init_features(_feature_info(stage_widths), head_conv=("conv2", "bn2"))

        # No weight initialization: RepDistiller keeps PyTorch's defaults.
        self._init_head(num_features, "linear", **kwargs)

    @staticmethod
    def _make_stage(in_chs: int, out_chs: int, depth: int) -> nn.Sequential:
        return nn.Sequential(ShuffleV2DownBlock(in_chs, out_chs), *(ShuffleV2Block(out_chs) for _ in range(depth)))

    def _forward_level(self, index: int, x: Tensor) -> Tensor:
        """Level 0 is the activated stem, level ``i`` the stage ``layer{i}``."""
        if index == 0:
            return F.relu(self.bn1(self.conv1(x)))
        stage: nn.Module = getattr(self, f"layer{index}")
        return stage(x)

    def _forward_head_conv(self, x: Tensor) -> Tensor:
        """The activated final 1x1 convolution: ``forward_features`` returns its output."""
        return F.relu(self.bn2(self.conv2(x)))


def _create_shufflenetv1(variant: str, pretrained: bool = False, **kwargs: Any) -> CifarShuffleNetV1:
    return build_model_with_cfg(CifarShuffleNetV1, variant, pretrained, feature_cfg=cifar_feature_cfg(4), **kwargs)


def _create_shufflenetv2(variant: str, pretrained: bool = False, **kwargs: Any) -> CifarShuffleNetV2:
    return build_model_with_cfg(CifarShuffleNetV2, variant, pretrained, feature_cfg=cifar_feature_cfg(4), **kwargs)


default_cfgs = generate_default_cfgs(
    {
        "shufflenetv1_cifar": cifar_cfg("conv1", "linear", pool_size=(4, 4), paper_ids="arXiv:1707.01083"),
        "shufflenetv2_cifar": cifar_cfg("conv1", "linear", pool_size=(4, 4), paper_ids="arXiv:1807.11164"),
    }
)


@register_model
def shufflenetv1_cifar(pretrained: bool = False, **kwargs: Any) -> CifarShuffleNetV1:
    """RepDistiller's ``ShuffleV1``: ShuffleNet 1x, g = 3, stages 240-480-960 with 4-8-4 units."""
    return _create_shufflenetv1(
        "shufflenetv1_cifar", pretrained, stage_widths=(240, 480, 960), stage_depths=(4, 8, 4), groups=3, **kwargs
    )


@register_model
def shufflenetv2_cifar(pretrained: bool = False, **kwargs: Any) -> CifarShuffleNetV2:
    """RepDistiller's ``ShuffleV2``: ShuffleNet V2 1x, stages 116-232-464 with 3-7-3 units, 1024 final channels."""
    return _create_shufflenetv2(
        "shufflenetv2_cifar",
        pretrained,
        stage_widths=(116, 232, 464),
        stage_depths=(3, 7, 3),
        num_features=1024,
        **kwargs,
    )
