"""What the CIFAR zoo models share: timm's classifier head and feature interface, RepDistiller's initialization and
the default config.

Every zoo model ends the same way (global pooling, optional dropout, one Linear layer) and answers timm's classifier
interface (``get_classifier``, ``reset_classifier``, ``forward_head``). ``CifarClassifier`` owns that head, so an
architecture builds its body, calls ``_init_head`` and implements its feature levels (below). The head's attribute
name stays the architecture's choice because it is part of RepDistiller's checkpoint keys.

It also owns timm's feature interface (``feature_info``, ``forward_intermediates``, ``prune_intermediate_layers``,
and through them ``timm.create_model(name, features_only=True)``). An architecture describes its body as feature
levels, the stem (level 0) and then its stages, which are the feature maps RepDistiller's models return with
``is_feat=True``, and ``forward_features`` runs those levels, so the intermediates are by construction the tensors
that flow through it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch.nn.functional as F
from timm.layers import SelectAdaptivePool2d, create_classifier
from timm.models._features import feature_take_indices
from torch import Tensor, nn

__all__ = [
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "CifarClassifier",
    "cifar_cfg",
    "cifar_feature_cfg",
    "repdistiller_init",
]

CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)


class CifarClassifier(nn.Module):
    """Base of the CIFAR zoo models: timm's classifier head and feature interface over the subclass's feature levels.

    A subclass takes its own arguments plus ``in_chans`` for its stem, builds its feature extractor, describes its
    levels with ``_init_features``, passes the remaining keyword arguments (``num_classes``, ``global_pool``,
    ``drop_rate``) on to ``_init_head``, then applies its weight initialization. It implements ``_forward_level``
    and, when layers follow its last level, ``_forward_norm`` or ``_forward_head_conv``.

    Attributes:
        feature_info: One ``dict(num_chs=..., reduction=..., module=...)`` per feature level, timm's format: output
            channels, stride relative to the input (for inputs of the default size, 32x32) and the name of the
            submodule that produces the level (or whose output the level activates, where the activation is a
            function rather than a module).
    """

    num_classes: int
    num_features: int
    head_hidden_size: int
    drop_rate: float
    global_pool: SelectAdaptivePool2d
    feature_info: list[dict[str, Any]]
    # Levels that forward_features still runs (fewer after prune_intermediate_layers), and the submodules of the
    # final norm and head convolution, emptied when those are pruned.
    _levels_kept: int
    _norm_modules: tuple[str, ...]
    _head_conv_modules: tuple[str, ...]

    def _init_features(
        self,
        feature_info: list[dict[str, Any]],
        norm: tuple[str, ...] = (),
        head_conv: tuple[str, ...] = (),
    ) -> None:
        """Records the feature levels and what ``forward_features`` applies after the last one.

        Args:
            feature_info: One dict per level, see the class docstring; level 0 is the stem.
            norm: Submodules of a final norm that keeps the channels (WRN's BatchNorm-ReLU): applied to the last
                level's intermediate when ``forward_intermediates`` is called with ``norm=True``, pruned with
                ``prune_norm`` (timm's pre-activation ResNets treat their final norm so).
            head_conv: Submodules of a final convolution that widens the features (MobileNetV2's and ShuffleNetV2's
                1x1 convolutions): it only feeds the head, so it never enters the intermediates and is pruned with
                the head or the norm (as timm's EfficientNets treat their ``conv_head``).
        """
        self.feature_info = feature_info
        self._levels_kept = len(feature_info)
        self._norm_modules = norm
        self._head_conv_modules = head_conv

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

    def _forward_level(self, index: int, x: Tensor) -> Tensor:
        """Runs feature level ``index`` (0 is the stem) on the output of the level before (on the image for 0).

        Stages must be called through their attributes (``self.layer1``, not a list made at construction): SPS
        (``kdcli.models.sps``) replaces those attributes after the model is built.
        """
        raise NotImplementedError

    def _level_modules(self, index: int) -> tuple[str, ...]:
        """The submodules only level ``index`` (>= 1) uses, emptied when it is pruned: by default the one it names."""
        return (self.feature_info[index]["module"],)

    def _forward_norm(self, x: Tensor) -> Tensor:
        """The final norm on the last level's output; only called for a model that declared one."""
        raise NotImplementedError

    def _forward_head_conv(self, x: Tensor) -> Tensor:
        """The final head convolution; only called for a model that declared one."""
        raise NotImplementedError

    def _forward_after_levels(self, x: Tensor) -> Tensor:
        if self._norm_modules:
            x = self._forward_norm(x)
        if self._head_conv_modules:
            x = self._forward_head_conv(x)
        return x

    def forward_features(self, x: Tensor) -> Tensor:
        """Returns the feature map before global pooling: the levels in order, then the final norm or convolution."""
        for index in range(self._levels_kept):
            x = self._forward_level(index, x)
        return self._forward_after_levels(x)

    def _take_indices(self, indices: int | Sequence[int] | None) -> tuple[list[int], int]:
        """Absolute level indices and the largest, as timm's ``feature_take_indices`` resolves them."""
        take_indices, max_index = feature_take_indices(
            len(self.feature_info), indices if indices is None or isinstance(indices, int) else list(indices)
        )
        if max_index >= self._levels_kept:
            raise ValueError(
                f"feature level {max_index} was pruned by prune_intermediate_layers; levels 0 to "
                f"{self._levels_kept - 1} remain"
            )
        return take_indices, max_index

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """``forward_features`` that also returns the feature maps of the requested levels, as timm's models do.

        Args:
            x: Input images.
            indices: Levels to return: the last ``n`` for an int, these ones (negative counting from the end) for a
                sequence, all for None.
            norm: Apply the final norm (WRN's BatchNorm-ReLU; the other models have none) to the last level's map.
            stop_early: Stop after the last requested level; the final features are then that level's map.
            output_fmt: Layout of the maps; only ``"NCHW"``.
            intermediates_only: Return only the list of maps.

        Returns:
            The list of maps, in level order, or ``(final_features, maps)`` where ``final_features`` is what
            ``forward_features`` returns (unless ``stop_early`` stopped before the last level).
        """
        if output_fmt != "NCHW":
            raise ValueError(f"CIFAR zoo models give NCHW feature maps only, not {output_fmt!r}")
        take_indices, max_index = self._take_indices(indices)
        last_index = len(self.feature_info) - 1
        levels = max_index + 1 if stop_early else self._levels_kept
        intermediates: list[Tensor] = []
        normed: Tensor | None = None
        for index in range(levels):
            x = self._forward_level(index, x)
            if index not in take_indices:
                continue
            if norm and index == last_index and self._norm_modules:
                # Kept as the final features too, so that the norm runs (and updates BatchNorm statistics) once.
                normed = self._forward_norm(x)
                intermediates.append(normed)
            else:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        if levels == self._levels_kept:
            if normed is not None:
                x = self._forward_head_conv(normed) if self._head_conv_modules else normed
            else:
                x = self._forward_after_levels(x)
        return x, intermediates

    def _replace_module(self, name: str, module: nn.Module) -> None:
        parent, _, leaf = name.rpartition(".")
        setattr(self.get_submodule(parent), leaf, module)

    def prune_intermediate_layers(
        self,
        indices: int | Sequence[int] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> list[int]:
        """Removes what the requested levels do not need, as timm's models do for ``features_only``.

        The levels after the last requested one become empty ``nn.Sequential`` modules and are no longer run; the
        final norm goes with ``prune_norm`` or when levels were removed, the head convolution with either of those or
        with ``prune_head``; the classifier goes with ``prune_head`` or when the features changed width. Afterwards
        ``forward_features`` returns the last kept level's map (norm applied if kept) and ``num_features`` is its
        width.

        Args:
            indices: Levels to keep available: the last ``n`` for an int, these ones for a sequence.
            prune_norm: Remove the final norm (and head convolution).
            prune_head: Remove the classifier (and head convolution).

        Returns:
            The absolute indices of the requested levels, for ``forward_intermediates``: negative ones would now count
            from another end.
        """
        take_indices, max_index = self._take_indices(indices)
        prune_end = max_index < self._levels_kept - 1
        for index in range(max_index + 1, self._levels_kept):
            for name in self._level_modules(index):
                self._replace_module(name, nn.Sequential())
        self._levels_kept = max_index + 1
        if self._norm_modules and (prune_norm or prune_end):
            for name in self._norm_modules:
                self._replace_module(name, nn.Identity())
            self._norm_modules = ()
        resized = prune_end
        if self._head_conv_modules and (prune_norm or prune_head or prune_end):
            for name in self._head_conv_modules:
                self._replace_module(name, nn.Identity())
            self._head_conv_modules = ()
            resized = True
        if resized:
            self.num_features = self.feature_info[max_index]["num_chs"]
        if prune_head or resized:
            self.reset_classifier(0, "")
        return take_indices

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


def cifar_feature_cfg(num_levels: int) -> dict[str, Any]:
    """The ``feature_cfg`` for ``build_model_with_cfg``: ``features_only`` goes through ``forward_intermediates``.

    timm's ``FeatureGetterNet`` (the ``"getter"`` class, which recent timm models use) wraps the model, prunes what
    the requested levels do not need and returns ``forward_intermediates``' maps; by default every level.

    Args:
        num_levels: Number of feature levels (entries of the model's ``feature_info``).
    """
    return {"feature_cls": "getter", "out_indices": tuple(range(num_levels))}


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
