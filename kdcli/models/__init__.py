"""The CIFAR model zoo: RepDistiller's CIFAR-100 architectures, registered into timm's model registry.

Importing this package registers every name in ``ZOO_MODELS``, so ``timm.create_model("resnet20", num_classes=100)``
works like any timm name. The definitions follow RepDistiller (Tian et al., CRD, ICLR 2020) key for key, so its
published checkpoints load into them with ``strict=True``.
"""

from kdcli.models import cifar_mobilenetv2, cifar_resnet, cifar_shufflenet, cifar_vgg, cifar_wrn
from kdcli.models._head import CIFAR100_MEAN, CIFAR100_STD

# The names each module registers, in its order: every ``register_model`` there has an entry in ``default_cfgs``.
ZOO_MODELS: tuple[str, ...] = tuple(
    name
    for module in (cifar_resnet, cifar_wrn, cifar_vgg, cifar_mobilenetv2, cifar_shufflenet)
    for name in module.default_cfgs
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
