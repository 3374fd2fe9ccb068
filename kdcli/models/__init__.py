"""The CIFAR model zoo: RepDistiller's CIFAR-100 architectures, registered into timm's model registry.

Importing this package registers every name in ``kdcli.catalog.ZOO_MODELS``, so
``timm.create_model("resnet20", num_classes=100)`` works like any timm name. The definitions follow RepDistiller
(Tian et al., CRD, ICLR 2020) key for key, so its published checkpoints load into them with ``strict=True``.
"""

from kdcli.catalog import TIMM_SHADOWED, ZOO_ALIASES, ZOO_MODELS
from kdcli.models import cifar_mobilenetv2, cifar_resnet, cifar_shufflenet, cifar_vgg, cifar_wrn
from kdcli.models._head import CIFAR100_MEAN, CIFAR100_STD

REGISTERED: tuple[str, ...] = tuple(
    name
    for module in (cifar_resnet, cifar_wrn, cifar_vgg, cifar_mobilenetv2, cifar_shufflenet)
    for name in module.default_cfgs
)
"""The names the zoo's modules register, in their order (a test holds them equal to the catalog's)."""

__all__ = ["CIFAR100_MEAN", "CIFAR100_STD", "REGISTERED", "TIMM_SHADOWED", "ZOO_ALIASES", "ZOO_MODELS"]
