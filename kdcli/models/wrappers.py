"""Input adaptation and the frozen teacher.

The data pipeline yields float images in [0, 1]; each model gets its own normalization (teacher and student may
have been trained with different mean and std) and grey images are repeated to three channels for a model that
expects three. timm's distillation task re-normalizes the teacher's input the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from kdcli.strategies.base import TeacherOutput


class NormalizedModel(nn.Module):
    """``model((x - mean) / std)`` with grey-to-RGB expansion; ``model`` is the plain timm module that is exported."""

    mean: Tensor
    std: Tensor

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float], in_chans: int) -> None:
        super().__init__()
        self.model = model
        self.in_chans = in_chans
        self.channels_last = False
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def normalize(self, images: Tensor) -> Tensor:
        if images.shape[1] == 1 and self.in_chans == 3:
            images = images.expand(-1, 3, -1, -1)
        images = (images - self.mean) / self.std
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def forward(self, images: Tensor) -> Tensor:
        return self.model(self.normalize(images))


class FrozenTeacher(NormalizedModel):
    """The teacher: eval mode (BatchNorm uses running statistics), no gradients, run without autograd."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float], in_chans: int) -> None:
        super().__init__(model, mean, std, in_chans)
        self.model.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> FrozenTeacher:
        """Stays in eval mode whatever the engine asks: the teacher's BatchNorm statistics must not move."""
        return self

    @torch.no_grad()
    def predict(self, images: Tensor, with_features: bool = False) -> TeacherOutput:
        # no_grad rather than inference_mode: a strategy's adapter takes these tensors as inputs to its own graph.
        if not with_features:
            return TeacherOutput(self.model(self.normalize(images)))
        model: Any = self.model  # a timm classifier: forward_features and forward_head are checked at setup
        feature_map = model.forward_features(self.normalize(images))
        features = model.forward_head(feature_map, pre_logits=True)
        return TeacherOutput(model.forward_head(feature_map), features)
