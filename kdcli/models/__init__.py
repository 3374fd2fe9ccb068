"""The CIFAR model zoo: RepDistiller's CIFAR-100 architectures, registered into timm's model registry.

Importing this package registers every name in ``ZOO_MODELS``, so ``timm.create_model("resnet20", num_classes=100)``
works like any timm name. The definitions follow RepDistiller (Tian et al., CRD, ICLR 2020) key for key, so its
published checkpoints load into them with ``strict=True``.
"""

from kdcli.models import cifar_mobilenetv2, cifar_resnet, cifar_shufflenet, cifar_vgg, cifar_wrn
from kdcli.models.cifar_resnet import CIFAR100_MEAN, CIFAR100_STD

ZOO_MODELS: tuple[str, ...] = (
    "resnet8",
    "resnet14",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "resnet8x4",
    "resnet32x4",
    "wrn_16_1",
    "wrn_16_2",
    "wrn_40_1",
    "wrn_40_2",
    "vgg8_cifar",
    "vgg11_cifar",
    "vgg13_cifar",
    "vgg16_cifar",
    "vgg19_cifar",
    "mobilenetv2_cifar",
    "shufflenetv1_cifar",
    "shufflenetv2_cifar",
)

# RepDistiller's own spellings that timm does not know, mapped to the zoo's names.
ZOO_ALIASES: dict[str, str] = {
    "vgg8": "vgg8_cifar",
    "MobileNetV2": "mobilenetv2_cifar",
    "ShuffleV1": "shufflenetv1_cifar",
    "ShuffleV2": "shufflenetv2_cifar",
}

# RepDistiller's spellings that are timm's ImageNet models; a user typing one may have meant the CIFAR model.
TIMM_SHADOWED: dict[str, str] = {
    "vgg11": "vgg11_cifar",
    "vgg13": "vgg13_cifar",
    "vgg16": "vgg16_cifar",
    "vgg19": "vgg19_cifar",
}

__all__ = [
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "TIMM_SHADOWED",
    "ZOO_ALIASES",
    "ZOO_MODELS",
    "cifar_mobilenetv2",
    "cifar_resnet",
    "cifar_shufflenet",
    "cifar_vgg",
    "cifar_wrn",
]
