"""CIFAR MobileNetV2 (Sandler et al. 2018, "MobileNetV2: Inverted Residuals and Linear Bottlenecks") as a timm model.

Definitions as in RepDistiller (Tian et al., CRD, ICLR 2020) for checkpoint compatibility: module names, widths and
initialization follow ``mobile_half`` (its ``MobileNetV2`` entry) in ``models/mobilenetv2.py`` of
https://github.com/HobbitLong/RepDistiller (BSD-2-Clause), so the ``state_dict`` inside its ``{'model': state_dict}``
checkpoints loads with ``strict=True``. The code is an independent rewrite in timm's style; global average pooling
replaces the fixed 2x2 pool, which is the same function on 32x32 inputs and also accepts other sizes.

RepDistiller's variant differs from the paper's network in ways the checkpoints depend on: every stage is at half
width (expansion 6) while the last 1x1 convolution keeps 1280 channels, the activations are ReLU rather than ReLU6,
and the first block keeps its (1x) expansion convolution. Its stride-2 stem leaves a 2x2 map for 32x32 inputs.

Feature levels (``feature_info``, ``forward_intermediates``), RepDistiller's ``is_feat`` features ``f0`` to ``f4``:
0 is the stem (module ``conv1``, stride 2), then one level per resolution, ending at the last stage before the next
stride-2 stage or at the last stage: ``blocks.1``, ``blocks.2``, ``blocks.4`` and ``blocks.6`` (strides 2, 4, 8,
16), timm's ``stage_ends`` convention for its own MobileNets. The final 1x1 convolution ``conv2`` is no level; like
timm's ``conv_head`` it only feeds the classifier.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import Tensor, nn

from kdcli.models._head import CifarClassifier, cifar_cfg, cifar_feature_cfg, repdistiller_init

__all__ = ["CifarMobileNetV2", "InvertedResidual"]

# (channels, blocks, stride of the first block) of the seven stages, before the width multiplier.
_STAGES = ((16, 1, 1), (24, 2, 1), (32, 3, 2), (64, 4, 2), (96, 3, 1), (160, 3, 2), (320, 1, 1))


def _level_stages() -> tuple[tuple[int, ...], ...]:
    """The stages of feature levels 1, 2, ...: a level ends before a stride-2 stage and at the last stage."""
    levels: list[tuple[int, ...]] = []
    current: list[int] = []
    for stage_idx in range(len(_STAGES)):
        current.append(stage_idx)
        if stage_idx + 1 == len(_STAGES) or _STAGES[stage_idx + 1][2] != 1:
            levels.append(tuple(current))
            current = []
    return tuple(levels)


# ((0, 1), (2,), (3, 4), (5, 6)): RepDistiller's f1 to f4 follow blocks 1, 2, 4 and 6.
_LEVEL_STAGES = _level_stages()


class InvertedResidual(nn.Module):
    """Pointwise expansion, 3x3 depthwise convolution, linear pointwise projection; residual when shapes allow.

    Args:
        in_chs: Input channels.
        out_chs: Output channels.
        stride: Stride of the depthwise convolution.
        expand_ratio: Width of the expanded representation relative to ``in_chs``.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        mid_chs = in_chs * expand_ratio
        self.use_res_connect = stride == 1 and in_chs == out_chs
        self.conv = nn.Sequential(
            nn.Conv2d(in_chs, mid_chs, kernel_size=1, bias=False),
            nn.BatchNorm2d(mid_chs),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_chs, mid_chs, kernel_size=3, stride=stride, padding=1, groups=mid_chs, bias=False),
            nn.BatchNorm2d(mid_chs),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_chs, out_chs, kernel_size=1, bias=False),
            nn.BatchNorm2d(out_chs),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


def _conv_bn_relu(in_chs: int, out_chs: int, kernel_size: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_chs),
        nn.ReLU(inplace=True),
    )


# RepDistiller draws the classifier's weights from N(0, 0.01) and zeroes its bias.
_init_weights = partial(repdistiller_init, classifier="normal")


class CifarMobileNetV2(CifarClassifier):
    """MobileNetV2 for 32x32 images with RepDistiller's layout.

    Args:
        expand_ratio: Expansion of every block but the first (which uses 1).
        width_mult: Width multiplier of the stem and the stages; the last convolution keeps 1280 channels unless
            the multiplier exceeds 1.
        in_chans: Input image channels.
        **kwargs: The head's ``num_classes``, ``global_pool`` and ``drop_rate`` (see ``CifarClassifier._init_head``).
    """

    def __init__(self, expand_ratio: int, width_mult: float, *, in_chans: int = 3, **kwargs: Any) -> None:
        super().__init__()
        in_chs = int(32 * width_mult)
        self.conv1 = _conv_bn_relu(in_chans, in_chs, kernel_size=3, stride=2)
        feature_info = [{"num_chs": in_chs, "reduction": 2, "module": "conv1"}]
        self.blocks = nn.ModuleList()
        for stage_idx, (chs, depth, stride) in enumerate(_STAGES):
            out_chs = int(chs * width_mult)
            ratio = 1 if stage_idx == 0 else expand_ratio
            stage = []
            for block_idx in range(depth):
                stage.append(InvertedResidual(in_chs, out_chs, stride if block_idx == 0 else 1, ratio))
                in_chs = out_chs
            self.blocks.append(nn.Sequential(*stage))
        reduction = 2
        for stages in _LEVEL_STAGES:
            for stage_idx in stages:
                reduction *= _STAGES[stage_idx][2]
            chs = int(_STAGES[stages[-1]][0] * width_mult)
            feature_info.append({"num_chs": chs, "reduction": reduction, "module": f"blocks.{stages[-1]}"})
        num_features = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = _conv_bn_relu(in_chs, num_features, kernel_size=1, stride=1)
        self._init_features(feature_info, head_conv=("conv2",))

        # "classifier.0": a one-element Sequential only because RepDistiller's checkpoints name the weights so.
        self._init_head(num_features, "classifier.0", _init_weights, **kwargs)
        self.apply(_init_weights)

    def _forward_level(self, index: int, x: Tensor) -> Tensor:
        """Level 0 is the stem, level ``i`` runs the stages of ``_LEVEL_STAGES[i - 1]``."""
        if index == 0:
            return self.conv1(x)
        for stage_idx in _LEVEL_STAGES[index - 1]:
            x = self.blocks[stage_idx](x)
        return x

    def _level_modules(self, index: int) -> tuple[str, ...]:
        return tuple(f"blocks.{stage_idx}" for stage_idx in _LEVEL_STAGES[index - 1])

    def _forward_head_conv(self, x: Tensor) -> Tensor:
        """The activated last 1x1 convolution, to 1280 channels: ``forward_features`` returns its output."""
        return self.conv2(x)


def _create_cifar_mobilenetv2(variant: str, pretrained: bool = False, **kwargs: Any) -> CifarMobileNetV2:
    feature_cfg = cifar_feature_cfg(len(_LEVEL_STAGES) + 1)
    return build_model_with_cfg(CifarMobileNetV2, variant, pretrained, feature_cfg=feature_cfg, **kwargs)


default_cfgs = generate_default_cfgs(
    {"mobilenetv2_cifar": cifar_cfg("conv1.0", "classifier.0", pool_size=(2, 2), paper_ids="arXiv:1801.04381")}
)


@register_model
def mobilenetv2_cifar(pretrained: bool = False, **kwargs: Any) -> CifarMobileNetV2:
    """RepDistiller's ``MobileNetV2`` (``mobile_half``): width 0.5, expansion 6."""
    return _create_cifar_mobilenetv2("mobilenetv2_cifar", pretrained, expand_ratio=6, width_mult=0.5, **kwargs)
