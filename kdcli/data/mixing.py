"""Mixup and CutMix of a training batch, drawn on the training device for consistent teaching.

Beyer et al., "Knowledge distillation: A good teacher is patient and consistent" (CVPR 2022): teacher and student see
the same aggressively augmented image, so the teacher labels the mixed image the student learns from. kdcli mixes
in the loader, before the step, so every method that reads teacher logits gets this with no change: the teacher's
forward runs on exactly the batch the student's does.

Per batch (timm's ``Mixup`` in its ``batch`` mode; Zhang et al. 2018, Yun et al. 2019): with probability ``prob``
the batch is mixed with itself in reverse order (image i with image B-1-i), by mixup (``λ·x + (1-λ)·x'``) or, when
both are on, by CutMix with probability one half (a box of area ``1-λ`` from the partner, λ corrected to the box's
area after clipping at the borders). λ ~ Beta(α, α). Every draw is a device tensor from the loader's seeded
generator: nothing reads the host, so a resumed epoch draws the same, and a CUDA graph replays the step unchanged.

The labels stay hard: the step evaluates the method's losses once with each image's own labels and once with its
partner's, and weighs them ``λ`` and ``1-λ`` (kdcli.training.step). For the cross-entropy this is exactly timm's
soft-target loss with mixed one-hot targets; a term that does not read the labels (the KD term) is the same both
times and comes out unchanged; a term that does (DKD's target class, PESF's swap) is the λ-weighted mean of the
term under each label.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor


class Mix(NamedTuple):
    """How a batch was mixed, for the loss: each image's partner's labels and the weight λ of the image's own."""

    partner_labels: Tensor
    weight: Tensor
    """0-dim float tensor: λ (1 for a batch left unmixed)."""


@dataclass(frozen=True)
class Mixing:
    """``data.mixup`` / ``data.cutmix`` (the α of each Beta(α, α); 0 turns it off) and ``data.mix_prob``."""

    mixup_alpha: float
    cutmix_alpha: float
    prob: float = 1.0

    @property
    def active(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def draw(self, generator: torch.Generator, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        """One batch's draws: whether it is mixed, whether by CutMix, and λ (0-dim device tensors). Always the same
        number of draws from ``generator``, whatever they come out as."""
        uniform = torch.rand(2, generator=generator, device=device)
        mixed = uniform[0] < self.prob
        cut = torch.full((), self.cutmix_alpha > 0, device=device)
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            cut = uniform[1] < 0.5
        alpha = torch.where(
            cut, torch.tensor(self.cutmix_alpha, device=device), torch.tensor(self.mixup_alpha, device=device)
        )
        return mixed, cut, beta(alpha, generator)

    def apply(self, images: Tensor, partners: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``images`` mixed with ``partners`` (each image's partner, same shape) and λ, the weight of each image's own
        label; draws once from ``generator`` per batch."""
        device = images.device
        mixed, cut, weight = self.draw(generator, device)
        centre = torch.rand(2, generator=generator, device=device)
        result = images
        if self.mixup_alpha > 0:
            result = torch.lerp(partners, images, weight.to(images.dtype))
        if self.cutmix_alpha > 0:
            boxed, box_weight = cutmix(images, partners, weight, centre)
            result = torch.where(cut, boxed, result)
            weight = torch.where(cut, box_weight, weight)
        return torch.where(mixed, result, images), torch.where(mixed, weight, torch.ones_like(weight))


def beta(alpha: Tensor, generator: torch.Generator) -> Tensor:
    """One draw of Beta(α, α) from ``generator``, as ``g₁ / (g₁ + g₂)`` with ``gᵢ ~ Gamma(α)`` (torch's own Beta
    samples this way, but from the global generator, which would make a resumed run draw differently)."""
    gammas = torch._standard_gamma(alpha.expand(2).contiguous(), generator=generator)
    return (gammas[0] / gammas.sum().clamp_min(torch.finfo(gammas.dtype).tiny)).clamp(0.0, 1.0)


def cutmix(images: Tensor, partners: Tensor, weight: Tensor, centre: Tensor) -> tuple[Tensor, Tensor]:
    """The partners' pixels inside a box of side ``√(1-λ)`` of the image's, centred at ``centre`` (fractions of the
    height and width), clipped at the borders; and λ corrected to the area the box really covers (timm's box)."""
    height, width = images.shape[-2:]
    ratio = torch.sqrt(1.0 - weight)
    half_h, half_w = torch.floor(height * ratio).div(2).floor(), torch.floor(width * ratio).div(2).floor()
    cy, cx = torch.floor(centre[0] * height), torch.floor(centre[1] * width)
    top, bottom = (cy - half_h).clamp(0, height), (cy + half_h).clamp(0, height)
    left, right = (cx - half_w).clamp(0, width), (cx + half_w).clamp(0, width)
    rows = torch.arange(height, device=images.device)
    cols = torch.arange(width, device=images.device)
    inside = ((rows >= top) & (rows < bottom))[:, None] & ((cols >= left) & (cols < right))[None, :]
    corrected = 1.0 - (bottom - top) * (right - left) / (height * width)
    return torch.where(inside, partners, images), corrected.to(weight.dtype)


def partner_positions(size: int, device: torch.device) -> Tensor:
    """Each image's partner in a batch of ``size``: the batch in reverse order (timm's pairing)."""
    return torch.arange(size - 1, -1, -1, device=device)
