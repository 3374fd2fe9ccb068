"""What the CIFAR zoo models share: timm's classifier head, RepDistiller's initialization and the default config.

Every zoo model ends the same way (global pooling, optional dropout, one Linear layer) and answers timm's classifier
interface (``get_classifier``, ``reset_classifier``, ``forward_head``). ``CifarClassifier`` owns that head, so an
architecture builds its body, calls ``_init_head`` and implements ``forward_features``. The head's attribute name
stays the architecture's choice because it is part of RepDistiller's checkpoint keys.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch.nn.functional as F
from timm.layers import SelectAdaptivePool2d, create_classifier
from torch import Tensor, nn

__all__ = ["CIFAR100_MEAN", "CIFAR100_STD", "CifarClassifier", "cifar_cfg", "repdistiller_init"]

CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)


class CifarClassifier(nn.Module):
    """Base of the CIFAR zoo models: timm's classifier head over the subclass's ``forward_features``.

    A subclass takes its own arguments plus ``in_chans`` for its stem, builds its feature extractor, passes the
    remaining keyword arguments (``num_classes``, ``global_pool``, ``drop_rate``) on to ``_init_head``, then applies
    its weight initialization.
    """

    num_classes: int
    num_features: int
    head_hidden_size: int
    drop_rate: float
    global_pool: SelectAdaptivePool2d

    def _init_head(
        self,
        num_features: int,
        classifier: str,
        init_fn: Callable[[nn.Module], None] | None = None,
        num_classes: int = 100,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
    ) -> None:
        """Creates the pooling and the Linear classifier.

        Call it after the feature extractor is built and before the weight initialization: ``nn.Linear`` draws its
        default initialization from the global RNG when created, so creating it last keeps the weights RepDistiller
        gets from the same seed.

        Args:
            num_features: Channels of the ``forward_features`` output.
            classifier: Where the Linear layer lives: an attribute name, or ``"<name>.0"`` for a Linear layer inside
                a one-element ``nn.Sequential`` (the form of RepDistiller's MobileNetV2 keys).
            init_fn: The model's weight initialization, which ``reset_classifier`` applies to a new classifier (None
                keeps PyTorch's default).
            num_classes: Classifier outputs; 0 leaves the classifier out.
            global_pool: timm global pooling type.
            drop_rate: Dropout before the classifier (RepDistiller uses none).
        """
        name, _, index = classifier.partition(".")
        if index not in ("", "0"):
            raise ValueError(f"classifier must be 'name' or 'name.0', got {classifier!r}")
        self._classifier_path = classifier
        self._classifier_attr = name
        self._classifier_init = init_fn
        self.num_features = num_features
        self.drop_rate = drop_rate
        self._set_head(num_classes, global_pool)

    def _set_head(self, num_classes: int, global_pool: str) -> nn.Module:
        self.num_classes = num_classes
        self.global_pool, fc = create_classifier(self.num_features, num_classes, pool_type=global_pool)
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()
        head = nn.Sequential(fc) if self._classifier_path != self._classifier_attr else fc
        setattr(self, self._classifier_attr, head)
        return head

    def get_classifier(self) -> nn.Module:
        """Returns the final Linear layer (``nn.Identity`` when built with ``num_classes=0``)."""
        return self.get_submodule(self._classifier_path)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replaces the classifier with a freshly initialized one, on the model's device and in its dtype.

        Args:
            num_classes: New number of outputs; 0 removes the classifier.
            global_pool: New pooling type; the current one is kept when None.
        """
        ref = next(self.parameters())
        head = self._set_head(num_classes, self.global_pool.pool_type if global_pool is None else global_pool)
        if self._classifier_init is not None:
            head.apply(self._classifier_init)
        head.to(device=ref.device, dtype=ref.dtype)

    def forward_features(self, x: Tensor) -> Tensor:
        """Returns the feature map before global pooling."""
        raise NotImplementedError

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Pools and flattens ``x``; returns those features when ``pre_logits`` is set, else the logits."""
        x = self.global_pool(x)
        if self.drop_rate:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        # Through the attribute rather than get_classifier(), so hooks on MobileNetV2's ``classifier`` Sequential run.
        return x if pre_logits else getattr(self, self._classifier_attr)(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def repdistiller_init(module: nn.Module, classifier: Literal["default", "zero_bias", "normal"] = "default") -> None:
    """RepDistiller's weight initialization, for ``model.apply`` (its ShuffleNets keep PyTorch's defaults instead).

    Convolutions get Kaiming-normal weights (fan-out, ReLU gain) and a zero bias, BatchNorm the identity. The Linear
    classifier differs between RepDistiller's files, and the same seed only gives the same weights if it draws the
    same random numbers.

    Args:
        module: The module to initialize; modules other than convolutions, BatchNorm and Linear are left alone.
        classifier: ``"default"`` keeps PyTorch's initialization (ResNet), ``"zero_bias"`` zeroes the bias (WRN),
            ``"normal"`` draws the weights from N(0, 0.01) and zeroes the bias (VGG, MobileNetV2).
    """
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Linear) and classifier != "default":
        if classifier == "normal":
            nn.init.normal_(module.weight, std=0.01)
        nn.init.zeros_(module.bias)


def cifar_cfg(first_conv: str, classifier: str, pool_size: tuple[int, int], **kwargs: Any) -> dict[str, Any]:
    """timm's default config of a zoo model: CIFAR-100 inputs, statistics and licence.

    Args:
        first_conv: Module name of the stem convolution (timm adapts it to ``in_chans``).
        classifier: Module name of the classifier, as passed to ``CifarClassifier._init_head``.
        pool_size: Size of the feature map on 32x32 inputs, RepDistiller's fixed pooling window.
        **kwargs: Further or overriding entries, ``paper_ids`` for one.
    """
    return {
        "url": "",
        "num_classes": 100,
        "input_size": (3, 32, 32),
        "pool_size": pool_size,
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": CIFAR100_MEAN,
        "std": CIFAR100_STD,
        "first_conv": first_conv,
        "classifier": classifier,
        # Definitions (and the CIFAR-100 checkpoints they load) come from RepDistiller, BSD-2-Clause.
        "license": "bsd-2-clause",
        "origin_url": "https://github.com/HobbitLong/RepDistiller",
        **kwargs,
    }
