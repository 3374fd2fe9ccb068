"""CIFAR MobileNetV2 (Sandler et al. 2018, "MobileNetV2: Inverted Residuals and Linear Bottlenecks") as a timm model.

Definitions as in RepDistiller (Tian et al., CRD, ICLR 2020) for checkpoint compatibility: module names, widths and
initialization follow ``mobile_half`` (its ``MobileNetV2`` entry) in ``models/mobilenetv2.py`` of
https://github.com/HobbitLong/RepDistiller (BSD-2-Clause), so the ``state_dict`` inside its ``{'model': state_dict}``
checkpoints loads with ``strict=True``. The code is an independent rewrite in timm's style; global average pooling
replaces the fixed 2x2 pool, which is the same function on 32x32 inputs and also accepts other sizes.

RepDistiller's variant differs from the paper's network in ways the checkpoints depend on: every stage is at half
width (expansion 6) while the last 1x1 convolution keeps 1280 channels, the activations are ReLU rather than ReLU6,
and the first block keeps its (1x) expansion convolution. Its stride-2 stem leaves a 2x2 map for 32x32 inputs.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from timm.layers import create_classifier
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import Tensor, nn

from kdcli.models.cifar_resnet import CIFAR100_MEAN, CIFAR100_STD

__all__ = ["CifarMobileNetV2", "InvertedResidual"]

# (channels, blocks, stride of the first block) of the seven stages, before the width multiplier.
_STAGES = ((16, 1, 1), (24, 2, 1), (32, 3, 2), (64, 4, 2), (96, 3, 1), (160, 3, 2), (320, 1, 1))


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


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.01)
        nn.init.zeros_(module.bias)


class CifarMobileNetV2(nn.Module):
    """MobileNetV2 for 32x32 images with RepDistiller's layout.

    Args:
        expand_ratio: Expansion of every block but the first (which uses 1).
        width_mult: Width multiplier of the stem and the stages; the last convolution keeps 1280 channels unless
            the multiplier exceeds 1.
        num_classes: Classifier outputs; 0 leaves the classifier out.
        in_chans: Input image channels.
        global_pool: timm global pooling type.
        drop_rate: Dropout before the classifier (RepDistiller uses none).
    """

    def __init__(
        self,
        expand_ratio: int,
        width_mult: float,
        num_classes: int = 100,
        in_chans: int = 3,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.drop_rate = drop_rate

        in_chs = int(32 * width_mult)
        self.conv1 = _conv_bn_relu(in_chans, in_chs, kernel_size=3, stride=2)
        self.blocks = nn.ModuleList()
        for stage_idx, (chs, depth, stride) in enumerate(_STAGES):
            out_chs = int(chs * width_mult)
            ratio = 1 if stage_idx == 0 else expand_ratio
            stage = []
            for block_idx in range(depth):
                stage.append(InvertedResidual(in_chs, out_chs, stride if block_idx == 0 else 1, ratio))
                in_chs = out_chs
            self.blocks.append(nn.Sequential(*stage))
        self.num_features = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = _conv_bn_relu(in_chs, self.num_features, kernel_size=1, stride=1)

        self.global_pool, fc = create_classifier(self.num_features, num_classes, pool_type=global_pool)
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()
        # A one-element Sequential only because RepDistiller's checkpoints name the weights ``classifier.0.*``.
        self.classifier = nn.Sequential(fc)
        self.apply(_init_weights)

    def get_classifier(self) -> nn.Module:
        """Returns the final Linear layer, ``classifier[0]`` (``nn.Identity`` when built with ``num_classes=0``)."""
        return self.classifier[0]

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
        self.classifier = nn.Sequential(fc).to(device=ref.device, dtype=ref.dtype)

    def forward_features(self, x: Tensor) -> Tensor:
        """Returns the activated output of the last 1x1 convolution, before global pooling."""
        x = self.conv1(x)
        for stage in self.blocks:
            x = stage(x)
        return self.conv2(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Pools and flattens ``x``; returns those features when ``pre_logits`` is set, else the logits."""
        x = self.global_pool(x)
        if self.drop_rate:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def _create_cifar_mobilenetv2(variant: str, pretrained: bool = False, **kwargs: Any) -> CifarMobileNetV2:
    return build_model_with_cfg(CifarMobileNetV2, variant, pretrained, **kwargs)


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "url": "",
        "num_classes": 100,
        "input_size": (3, 32, 32),
        "pool_size": (2, 2),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": CIFAR100_MEAN,
        "std": CIFAR100_STD,
        "first_conv": "conv1.0",
        "classifier": "classifier.0",
        # Definitions (and the CIFAR-100 checkpoints they load) come from RepDistiller, BSD-2-Clause.
        "license": "bsd-2-clause",
        "origin_url": "https://github.com/HobbitLong/RepDistiller",
        "paper_ids": "arXiv:1801.04381",
        **kwargs,
    }


default_cfgs = generate_default_cfgs({"mobilenetv2_cifar": _cfg()})


@register_model
def mobilenetv2_cifar(pretrained: bool = False, **kwargs: Any) -> CifarMobileNetV2:
    """RepDistiller's ``MobileNetV2`` (``mobile_half``): width 0.5, expansion 6."""
    return _create_cifar_mobilenetv2("mobilenetv2_cifar", pretrained, expand_ratio=6, width_mult=0.5, **kwargs)
