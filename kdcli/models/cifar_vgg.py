"""CIFAR VGGs with BatchNorm (Simonyan & Zisserman 2015, "Very Deep Convolutional Networks for Large-Scale Image
Recognition") as timm models.

Definitions as in RepDistiller (Tian et al., CRD, ICLR 2020) for checkpoint compatibility: module names, widths and
initialization follow the ``vgg*_bn`` models of ``models/vgg.py`` in https://github.com/HobbitLong/RepDistiller
(BSD-2-Clause), so the ``state_dict`` inside its ``{'model': state_dict}`` checkpoints loads with ``strict=True``.
The code is an independent rewrite in timm's style.

These are not ImageNet VGGs: the three fully connected layers are replaced by global average pooling and a single
Linear layer, so ``vgg{n}_cifar`` has ``n - 3`` convolutions (``vgg8_cifar``: five) in five blocks. timm's own
``vgg11`` ... ``vgg19`` are the ImageNet models, hence the ``_cifar`` suffix.

Feature levels (``feature_info``, ``forward_intermediates``), RepDistiller's ``is_feat`` features ``f0`` to ``f4``:
the ReLU-activated outputs of ``block0`` to ``block4``, strides 1, 2, 4, 8 and 8 (16 when built with
``img_size=64``). The blocks themselves end at their last BatchNorm, so a forward hook on ``blockN`` sees
RepDistiller's pre-activation feature (``preact=True``) instead.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch.nn.functional as F
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import Tensor, nn

from kdcli.models._head import CifarClassifier, cifar_cfg, cifar_feature_cfg, repdistiller_init

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


# RepDistiller draws the classifier's weights from N(0, 0.01) and zeroes its bias.
_init_weights = partial(repdistiller_init, classifier="normal")


class CifarVGG(CifarClassifier):
    """VGG for 32x32 images: five blocks of 3x3 conv-BN-ReLU, max pooling between the first four.

    RepDistiller also max-pools between the last two blocks for 64-pixel inputs (its Tiny-ImageNet-sized setting)
    and decides so from the input's height at every call. Here the choice is made once, by ``img_size``, so that the
    forward pass has no data-dependent branch (``torch.fx`` traces it) and ``feature_info`` knows the strides; a
    checkpoint has the same keys either way, and runs the same function when built with the size it was trained on.

    Args:
        cfg: Configuration key: ``"S"`` (VGG-8), ``"A"`` (11), ``"B"`` (13), ``"D"`` (16) or ``"E"`` (19).
        img_size: Input size the model is built for, an int or ``(height, width)``: a height of 64 adds the max
            pooling before ``block4`` (4x4 feature maps for 64x64 inputs), any other size leaves it out (4x4 for
            32x32 inputs).
        in_chans: Input image channels.
        **kwargs: The head's ``num_classes``, ``global_pool`` and ``drop_rate`` (see ``CifarClassifier._init_head``).
    """

    def __init__(self, cfg: str, *, img_size: int | tuple[int, int] = 32, in_chans: int = 3, **kwargs: Any) -> None:
        super().__init__()
        widths = _CONFIGS[cfg]
        self.pool_before_block4 = _pools_before_block4(img_size)

        self.block0 = _make_block(in_chans, widths[0])
        self.block1 = _make_block(widths[0][-1], widths[1])
        self.block2 = _make_block(widths[1][-1], widths[2])
        self.block3 = _make_block(widths[2][-1], widths[3])
        self.block4 = _make_block(widths[3][-1], widths[4])
        reductions = (1, 2, 4, 8, 16 if self.pool_before_block4 else 8)
        self._init_features(
            [
                {"num_chs": block_widths[-1], "reduction": reduction, "module": f"block{index}"}
                for index, (block_widths, reduction) in enumerate(zip(widths, reductions, strict=True))
            ]
        )

        self._init_head(widths[4][-1], "classifier", _init_weights, **kwargs)
        self.apply(_init_weights)

    def _forward_level(self, index: int, x: Tensor) -> Tensor:
        """Level ``i``: max pooling (before blocks 1 to 3, and 4 for 64-pixel models), ``block{i}``, then ReLU."""
        if index in (1, 2, 3) or (index == 4 and self.pool_before_block4):
            x = F.max_pool2d(x, 2)
        block: nn.Module = getattr(self, f"block{index}")
        return F.relu(block(x))


def _size(img_size: int | tuple[int, int]) -> tuple[int, int]:
    return (img_size, img_size) if isinstance(img_size, int) else (img_size[0], img_size[1])


def _pools_before_block4(img_size: int | tuple[int, int]) -> bool:
    return _size(img_size)[0] == 64  # RepDistiller tests the input's height only


def _create_cifar_vgg(variant: str, pretrained: bool = False, **kwargs: Any) -> CifarVGG:
    img_size = kwargs.get("img_size", 32)
    if _pools_before_block4(img_size):
        # The default config describes 32x32 inputs; timm's data config reads the input size from it.
        overlay = kwargs.get("pretrained_cfg_overlay") or {}
        kwargs["pretrained_cfg_overlay"] = {"input_size": (3, *_size(img_size)), **overlay}
    return build_model_with_cfg(CifarVGG, variant, pretrained, feature_cfg=cifar_feature_cfg(5), **kwargs)


default_cfgs = generate_default_cfgs(
    {
        name: cifar_cfg("block0.0", "classifier", pool_size=(4, 4), paper_ids="arXiv:1409.1556")
        for name in ("vgg8_cifar", "vgg11_cifar", "vgg13_cifar", "vgg16_cifar", "vgg19_cifar")
    }
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
