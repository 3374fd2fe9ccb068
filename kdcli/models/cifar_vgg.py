"""CIFAR VGGs with BatchNorm (Simonyan & Zisserman 2015, "Very Deep Convolutional Networks for Large-Scale Image
Recognition") as timm models.

Definitions as in RepDistiller (Tian et al., CRD, ICLR 2020) for checkpoint compatibility: module names, widths and
initialization follow the ``vgg*_bn`` models of ``models/vgg.py`` in https://github.com/HobbitLong/RepDistiller
(BSD-2-Clause), so the ``state_dict`` inside its ``{'model': state_dict}`` checkpoints loads with ``strict=True``.
The code is an independent rewrite in timm's style.

These are not ImageNet VGGs: the three fully connected layers are replaced by global average pooling and a single
Linear layer, so ``vgg{n}_cifar`` has ``n - 3`` convolutions (``vgg8_cifar``: five) in five blocks. timm's own
``vgg11`` ... ``vgg19`` are the ImageNet models, hence the ``_cifar`` suffix.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from timm.layers import create_classifier
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import Tensor, nn

from kdcli.models.cifar_resnet import CIFAR100_MEAN, CIFAR100_STD

__all__ = ["CifarVGG"]

# Convolution widths of the five blocks, per configuration of Simonyan & Zisserman ("S" is RepDistiller's VGG-8).
_BlockWidths = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]
_CONFIGS: dict[str, _BlockWidths] = {
    "S": ((64,), (128,), (256,), (512,), (512,)),
    "A": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "B": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "D": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "E": ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512)),
}


def _make_block(in_chs: int, widths: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for out_chs in widths:
        layers += [nn.Conv2d(in_chs, out_chs, kernel_size=3, padding=1), nn.BatchNorm2d(out_chs), nn.ReLU(inplace=True)]
        in_chs = out_chs
    # The block ends at its last BatchNorm (the model applies that ReLU) so its output is the pre-activation feature
    # RepDistiller's distillers use; this also fixes the checkpoint indices conv=0, 3, 6, ... and bn=1, 4, 7, ...
    return nn.Sequential(*layers[:-1])


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.01)
        nn.init.zeros_(module.bias)


class CifarVGG(nn.Module):
    """VGG for 32x32 images: five blocks of 3x3 conv-BN-ReLU, max pooling between the first four.

    Args:
        cfg: Configuration key: ``"S"`` (VGG-8), ``"A"`` (11), ``"B"`` (13), ``"D"`` (16) or ``"E"`` (19).
        num_classes: Classifier outputs; 0 leaves the classifier out.
        in_chans: Input image channels.
        global_pool: timm global pooling type.
        drop_rate: Dropout before the classifier (RepDistiller uses none).
    """

    def __init__(
        self,
        cfg: str,
        num_classes: int = 100,
        in_chans: int = 3,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        widths = _CONFIGS[cfg]
        self.num_classes = num_classes
        self.drop_rate = drop_rate

        self.block0 = _make_block(in_chans, widths[0])
        self.block1 = _make_block(widths[0][-1], widths[1])
        self.block2 = _make_block(widths[1][-1], widths[2])
        self.block3 = _make_block(widths[2][-1], widths[3])
        self.block4 = _make_block(widths[3][-1], widths[4])

        self.num_features = widths[4][-1]
        self.global_pool, self.classifier = create_classifier(self.num_features, num_classes, pool_type=global_pool)
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()
        self.apply(_init_weights)

    def get_classifier(self) -> nn.Module:
        """Returns the final Linear layer (``nn.Identity`` when built with ``num_classes=0``)."""
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replaces the classifier with a freshly initialized one.

        Args:
            num_classes: New number of outputs; 0 removes the classifier.
            global_pool: New pooling type; the current one is kept when None.
        """
        self.num_classes = num_classes
        pool_type = self.global_pool.pool_type if global_pool is None else global_pool
        self.global_pool, classifier = create_classifier(self.num_features, num_classes, pool_type=pool_type)
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()
        classifier.apply(_init_weights)
        ref = next(self.parameters())
        self.classifier = classifier.to(device=ref.device, dtype=ref.dtype)

    def forward_features(self, x: Tensor) -> Tensor:
        """Returns the activated output of the last block, before global pooling (4x4 for 32x32 inputs)."""
        # RepDistiller pools before block4 only for 64-pixel-high inputs (its Tiny-ImageNet-sized setting): CIFAR
        # images reach block4 at 4x4. Kept so that checkpoints trained either way compute the same function.
        pool_before_block4 = x.shape[2] == 64
        x = F.relu(self.block0(x))
        x = F.relu(self.block1(F.max_pool2d(x, 2)))
        x = F.relu(self.block2(F.max_pool2d(x, 2)))
        x = F.relu(self.block3(F.max_pool2d(x, 2)))
        if pool_before_block4:
            x = F.max_pool2d(x, 2)
        return F.relu(self.block4(x))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Pools and flattens ``x``; returns those features when ``pre_logits`` is set, else the logits."""
        x = self.global_pool(x)
        if self.drop_rate:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def _create_cifar_vgg(variant: str, pretrained: bool = False, **kwargs: Any) -> CifarVGG:
    return build_model_with_cfg(CifarVGG, variant, pretrained, **kwargs)


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "url": "",
        "num_classes": 100,
        "input_size": (3, 32, 32),
        "pool_size": (4, 4),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": CIFAR100_MEAN,
        "std": CIFAR100_STD,
        "first_conv": "block0.0",
        "classifier": "classifier",
        # Definitions (and the CIFAR-100 checkpoints they load) come from RepDistiller, BSD-2-Clause.
        "license": "bsd-2-clause",
        "origin_url": "https://github.com/HobbitLong/RepDistiller",
        "paper_ids": "arXiv:1409.1556",
        **kwargs,
    }


default_cfgs = generate_default_cfgs(
    {name: _cfg() for name in ("vgg8_cifar", "vgg11_cifar", "vgg13_cifar", "vgg16_cifar", "vgg19_cifar")}
)


@register_model
def vgg8_cifar(pretrained: bool = False, **kwargs: Any) -> CifarVGG:
    """RepDistiller's VGG-8 with BatchNorm (``vgg8``): convolutions 64-128-256-512-512, one per block."""
    return _create_cifar_vgg("vgg8_cifar", pretrained, cfg="S", **kwargs)


@register_model
def vgg11_cifar(pretrained: bool = False, **kwargs: Any) -> CifarVGG:
    """CIFAR VGG-11 with BatchNorm (configuration A), RepDistiller's ``vgg11``: eight convolutions."""
    return _create_cifar_vgg("vgg11_cifar", pretrained, cfg="A", **kwargs)


@register_model
def vgg13_cifar(pretrained: bool = False, **kwargs: Any) -> CifarVGG:
    """CIFAR VGG-13 with BatchNorm (configuration B), RepDistiller's ``vgg13``: ten convolutions."""
    return _create_cifar_vgg("vgg13_cifar", pretrained, cfg="B", **kwargs)


@register_model
def vgg16_cifar(pretrained: bool = False, **kwargs: Any) -> CifarVGG:
    """CIFAR VGG-16 with BatchNorm (configuration D), RepDistiller's ``vgg16``: thirteen convolutions."""
    return _create_cifar_vgg("vgg16_cifar", pretrained, cfg="D", **kwargs)


@register_model
def vgg19_cifar(pretrained: bool = False, **kwargs: Any) -> CifarVGG:
    """CIFAR VGG-19 with BatchNorm (configuration E), RepDistiller's ``vgg19``: sixteen convolutions."""
    return _create_cifar_vgg("vgg19_cifar", pretrained, cfg="E", **kwargs)
