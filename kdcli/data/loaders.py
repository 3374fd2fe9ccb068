"""Batch iterators. Small data sets live on the training device as uint8; shuffling, random crop, flip and the
conversion to float happen there, in whole-batch tensor operations, with no DataLoader and no host round trip.

Randomness comes from a generator seeded by (seed, epoch), so an epoch draws the same batches and augmentations
whether the run went straight through or was resumed: that is what makes ``--resume`` reproduce a run exactly.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor


class Loader:
    """What the engine iterates: float images in [0, 1] and int64 labels, both on the training device, in batches
    whose order (and augmentation) is a function of ``(seed, epoch)``."""

    def __init__(self, num_samples: int, batch_size: int, device: torch.device, shuffle: bool, seed: int) -> None:
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.device = device
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return -(-self.num_samples // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        raise NotImplementedError


def epoch_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(seed * 1_000_003 + epoch)
    return generator


def crop_flip(images: Tensor, offsets: Tensor, flips: Tensor, padding: int) -> Tensor:
    """Zero-pad each image by ``padding``, cut the window at ``offsets[i] = (dy, dx)`` and mirror where ``flips``.

    Equal to torchvision's ``RandomCrop(size, padding)`` + ``RandomHorizontalFlip`` for the same draws, done for the
    whole batch in one gather.
    """
    batch, channels, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding)) if padding else images
    rows = offsets[:, 0, None] + torch.arange(height, device=images.device)  # (B, H)
    cols = offsets[:, 1, None] + torch.arange(width, device=images.device)  # (B, W)
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    batch_index = torch.arange(batch, device=images.device)[:, None, None, None]
    channel_index = torch.arange(channels, device=images.device)[None, :, None, None]
    return padded[batch_index, channel_index, rows[:, None, :, None], cols[:, None, None, :]]


class TensorLoader(Loader):
    """Batches of an in-memory split, optionally shuffled and augmented with random crop and flip."""

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int,
        device: torch.device,
        shuffle: bool = False,
        crop_padding: int = 0,
        hflip: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(int(labels.numel()), batch_size, device, shuffle, seed)
        self.images = images.to(device)
        self.labels = labels.to(device)
        self.crop_padding = crop_padding
        self.hflip = hflip

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        generator = epoch_generator(self.seed, self.epoch, self.device)
        if self.shuffle:
            order = torch.randperm(self.num_samples, generator=generator, device=self.device)
        else:
            order = torch.arange(self.num_samples, device=self.device)
        augment = self.crop_padding > 0 or self.hflip
        for start in range(0, self.num_samples, self.batch_size):
            index = order[start : start + self.batch_size]
            images = self.images[index]
            if augment:
                size = index.numel()
                offsets = torch.randint(
                    0, 2 * self.crop_padding + 1, (size, 2), generator=generator, device=self.device
                )
                flips = torch.rand(size, generator=generator, device=self.device) < 0.5
                images = crop_flip(images, offsets, flips & self.hflip, self.crop_padding)
            yield images.float().div_(255), self.labels[index]


class FolderLoader(Loader):
    """An image-folder split through a DataLoader with worker processes and pinned memory.

    timm's transforms in prefetcher mode (``use_prefetcher=True``) leave each image as uint8 and timm's
    ``fast_collate`` batches them, so workers never convert to float and the host-to-device copy moves a quarter of
    the bytes; the copy is non-blocking, and the scaling to [0, 1] happens on the device. As for the tensor loader,
    each model normalizes its own input.
    """

    def __init__(
        self,
        dataset: torch.utils.data.Dataset,
        batch_size: int,
        device: torch.device,
        shuffle: bool,
        workers: int,
        seed: int = 0,
    ) -> None:
        super().__init__(len(dataset), batch_size, device, shuffle, seed)  # type: ignore[arg-type]
        self.dataset = dataset
        self.workers = workers

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        from timm.data.loader import fast_collate

        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            shuffle=self.shuffle,
            num_workers=self.workers,
            collate_fn=fast_collate,
            pin_memory=self.device.type == "cuda",
            generator=epoch_generator(self.seed, self.epoch, torch.device("cpu")),
            persistent_workers=False,
        )
        for images, labels in loader:
            images = images.to(self.device, non_blocking=True).float().div_(255)
            yield images, labels.to(self.device, non_blocking=True)
