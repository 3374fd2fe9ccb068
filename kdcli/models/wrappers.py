"""Input adaptation, feature delivery and the frozen teacher.

The data pipeline yields float images in [0, 1]; each model gets its own normalization (teacher and student may
have been trained with different mean and std) and grey images are repeated to three channels for a model that
expects three. timm's distillation task re-normalizes the teacher's input the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdcli.interfaces import FeatureRequest, ModelOutput
from kdcli.models.features import FeatureReader


class NormalizedModel(nn.Module):
    """``model((x - mean) / std)`` with grey-to-RGB expansion; ``model`` is the plain timm module that is exported.

    ``outputs`` gives the logits with the features a method asked for (``read_features``); ``forward`` the logits.
    """

    mean: Tensor
    std: Tensor

    def __init__(
        self, model: nn.Module, mean: Sequence[float], std: Sequence[float], in_chans: int, arch: str = ""
    ) -> None:
        super().__init__()
        self.model = model
        self.arch = arch
        self.in_chans = in_chans
        self.channels_last = False
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.reader: FeatureReader | None = None
        self.model_kwargs: dict[str, Any] = {}
        """The timm keyword arguments that rebuild ``model`` (recorded in its file), when they differ from none."""

    def normalize(self, images: Tensor) -> Tensor:
        if images.shape[1] == 1 and self.in_chans == 3:
            images = images.expand(-1, 3, -1, -1)
        images = (images - self.mean) / self.std
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def forward(self, images: Tensor) -> Tensor:
        return self.model(self.normalize(images))

    def to_channels_last(self) -> NormalizedModel:
        """Weights and, from now on, every normalized input batch in the channels-last memory format."""
        self.to(memory_format=torch.channels_last)
        self.channels_last = True
        return self

    def read_features(self, requests: tuple[FeatureRequest, ...]) -> None:
        """From now on ``outputs`` delivers these features; call again after the model's structure changed."""
        if self.reader is not None:
            self.reader.close()
        self.reader = FeatureReader(self.model, requests, self.arch)

    def outputs(self, images: Tensor) -> ModelOutput:
        if self.reader is None:
            return ModelOutput(self(images))
        return self.reader(self.normalize(images))


def fixed_input_size(model: nn.Module) -> tuple[int, int] | None:
    """The one input size a model takes (timm's patch models built with a strict ``img_size``), or None for a model
    that takes any size (convolutional networks, ViTs built with ``dynamic_img_size``)."""
    patch = getattr(model, "patch_embed", None)
    size = getattr(patch, "img_size", None)
    if size is None or not getattr(patch, "strict_img_size", False) or getattr(patch, "dynamic_img_size", False):
        return None
    return (int(size[0]), int(size[1]))


class FrozenTeacher(NormalizedModel):
    """The teacher: eval mode (BatchNorm uses running statistics), no gradients, run without autograd.

    **Choice:** a teacher that takes one input size only (a ViT fine-tuned at 384 px, say) gets each batch resized to
    that size (bilinear, antialiased when shrinking) before its own normalization, so any timm teacher distills into a
    student at the data's size; the run says so once (kdcli.training.validation)."""

    def __init__(
        self, model: nn.Module, mean: Sequence[float], std: Sequence[float], in_chans: int, arch: str = ""
    ) -> None:
        super().__init__(model, mean, std, in_chans, arch)
        self.model.requires_grad_(False)
        self.input_size = fixed_input_size(model)
        super().train(False)

    def normalize(self, images: Tensor) -> Tensor:
        size = self.input_size
        if size is not None and tuple(images.shape[-2:]) != size:
            shrink = images.shape[-2] > size[0] or images.shape[-1] > size[1]
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=shrink)
        return super().normalize(images)

    def train(self, mode: bool = True) -> FrozenTeacher:
        """Stays in eval mode whatever the engine asks: the teacher's BatchNorm statistics must not move."""
        return self

    @torch.no_grad()
    def predict(self, images: Tensor) -> ModelOutput:
        # no_grad rather than inference_mode: a method's adapter takes these tensors as inputs to its own graph.
        return self.outputs(images)
