"""Batch iterators. Small data sets live on the training device as uint8; shuffling, random crop, flip and the
conversion to float happen there, in whole-batch tensor operations, with no DataLoader and no host round trip.

Randomness comes from a generator seeded by (seed, epoch), so an epoch draws the same batches and augmentations
whether the run went straight through or was resumed: that is what makes a resumed run reproduce the run exactly.

Under torchrun (``shard``: this process's rank and the number of processes) ``batch_size`` is the global batch: every
rank draws the same permutation and the same augmentation for the whole global batch and keeps its own contiguous,
disjoint slice of it, so the ranks together see exactly what one process sees. A last training batch with fewer
images than processes is left out by every rank (a rank cannot train on nothing); evaluation keeps every image.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from kdcli.data.mixing import Mix, Mixing, partner_positions
from kdcli.errors import UsageError

MIX_SEED_OFFSET = 104_729
"""Seeds the mixing draws apart from the order and the crops, so turning mixing on leaves those as they were."""

TrainingBatch = tuple[Tensor, Tensor, Mix | None]
"""Images, their labels, and how the batch was mixed (None when it was not)."""


class Loader:
    """What the engine iterates: float images in [0, 1] and int64 labels, both on the training device, in batches
    whose order (and augmentation) is a function of ``(seed, epoch)``."""

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        device: torch.device,
        shuffle: bool,
        seed: int,
        shard: tuple[int, int] = (0, 1),
        drop_last: bool = False,
        mixing: Mixing | None = None,
    ) -> None:
        self.num_samples = num_samples
        """Images in the split, over every rank."""
        self.batch_size = batch_size
        """The global batch size."""
        self.device = device
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.rank, self.world_size = shard
        self.drop_last = drop_last and shuffle
        """A training split leaves out each epoch's last partial batch (timm's loaders, the plain reference loop)."""
        self.mixing = mixing if mixing is not None and mixing.active and shuffle else None
        """Mixup / CutMix of the training batches (kdcli.data.mixing); iterating the loader itself never mixes."""

    def __len__(self) -> int:
        """Global batches per epoch: the training steps, the same on every rank. A shuffled (training) split leaves
        out a last batch with fewer images than ranks, or any partial one with ``drop_last``; an evaluation split
        keeps it (a rank may then get none)."""
        full, rest = divmod(self.num_samples, self.batch_size)
        if self.drop_last:
            return full
        return full + (1 if rest >= (self.world_size if self.shuffle else 1) else 0)

    def share(self, step: int, images: int) -> float:
        """This rank's weight in step ``step`` of an epoch: its ``images`` over an even share of that global batch
        (1 for a single process, and for every batch split evenly)."""
        global_batch = min(self.batch_size, self.num_samples - step * self.batch_size)
        return self.world_size * images / global_batch

    def rank_slice(self, size: int) -> slice:
        """This rank's contiguous part of a global batch of ``size`` images."""
        bounds = (
            torch.linspace(0, size, self.world_size + 1).round().long().tolist() if self.world_size > 1 else [0, size]
        )
        return slice(bounds[self.rank], bounds[self.rank + 1])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        raise NotImplementedError

    def training_batches(self) -> Iterator[TrainingBatch]:
        """The batches the training step takes: mixed when the loader mixes, each process's batch with itself (an
        image-folder loader under torchrun mixes within each rank's batch, which the sampler already makes differ
        from one process's)."""
        if self.mixing is None:
            for images, labels in self:
                yield images, labels, None
            return
        generator = self.mix_generator()
        for images, labels in self:
            partners = partner_positions(labels.numel(), labels.device)
            mixed, weight = self.mixing.apply(images, images[partners], generator)
            yield mixed, labels, Mix(labels[partners], weight)

    def mix_generator(self) -> torch.Generator:
        """This epoch's generator of the mixing draws, apart from the order's and the crops'."""
        return epoch_generator(self.seed + MIX_SEED_OFFSET, self.epoch, self.device)


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
        shard: tuple[int, int] = (0, 1),
        drop_last: bool = False,
        mixing: Mixing | None = None,
    ) -> None:
        super().__init__(int(labels.numel()), batch_size, device, shuffle, seed, shard, drop_last, mixing)
        self.images = images.to(device)
        self.labels = labels.to(device)
        self.crop_padding = crop_padding
        self.hflip = hflip

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for images, labels, _ in self.batches(mixing=None):
            yield images, labels

    def training_batches(self) -> Iterator[TrainingBatch]:
        return self.batches(self.mixing)

    def batches(self, mixing: Mixing | None) -> Iterator[TrainingBatch]:
        """This rank's batches; with ``mixing``, the whole global batch is mixed with itself reversed, so every
        rank's slice is mixed with the same partners as one process's."""
        generator = epoch_generator(self.seed, self.epoch, self.device)
        mix_generator = self.mix_generator() if mixing else None
        if self.shuffle:
            order = torch.randperm(self.num_samples, generator=generator, device=self.device)
        else:
            order = torch.arange(self.num_samples, device=self.device)
        augment = self.crop_padding > 0 or self.hflip
        for step, start in enumerate(range(0, self.num_samples, self.batch_size)):
            if step == len(self):
                return  # a last batch too small to give every rank an image
            index = order[start : start + self.batch_size]
            size = index.numel()
            mine = torch.arange(size, device=self.device)[self.rank_slice(size)]
            offsets = flips = None
            if augment:  # drawn for the whole global batch, so every rank's slice is augmented as one process would
                offsets = torch.randint(
                    0, 2 * self.crop_padding + 1, (size, 2), generator=generator, device=self.device
                )
                flips = (torch.rand(size, generator=generator, device=self.device) < 0.5) & self.hflip
            if mine.numel() == 0:
                continue
            images, labels = self.augmented(index[mine], offsets, flips, mine), self.labels[index[mine]]
            if mixing is None or mix_generator is None:
                yield images, labels, None
                continue
            partners = partner_positions(size, self.device)[mine]
            if self.world_size == 1:
                partner_images = images.flip(0)
            else:
                partner_images = self.augmented(index[partners], offsets, flips, partners)
            mixed, weight = mixing.apply(images, partner_images, mix_generator)
            yield mixed, labels, Mix(self.labels[index[partners]], weight)

    def augmented(self, samples: Tensor, offsets: Tensor | None, flips: Tensor | None, positions: Tensor) -> Tensor:
        """The images ``samples`` as floats in [0, 1], cropped and flipped by the draws at ``positions`` of their
        global batch (none drawn: as they are)."""
        images = self.images[samples]
        if offsets is not None and flips is not None:
            images = crop_flip(images, offsets[positions], flips[positions], self.crop_padding)
        return images.float().div_(255)


class FolderLoader(Loader):
    """An image-folder split through a DataLoader with worker processes and pinned memory.

    timm's transforms in prefetcher mode (``use_prefetcher=True``) leave each image as uint8 and timm's
    ``fast_collate`` batches them, so workers never convert to float and the host-to-device copy moves a quarter of
    the bytes; the copy is non-blocking, and the scaling to [0, 1] happens on the device. As for the tensor loader,
    each model normalizes its own input. Under torchrun the training split goes through torch's
    ``DistributedSampler`` (which pads the last batch with repeated images so the ranks step together) and each rank
    takes ``batch_size / world_size`` images a step; an evaluation split is cut into contiguous shards, so every image
    is evaluated exactly once.
    """

    def __init__(
        self,
        dataset: torch.utils.data.Dataset,
        batch_size: int,
        device: torch.device,
        shuffle: bool,
        workers: int,
        seed: int = 0,
        shard: tuple[int, int] = (0, 1),
        drop_last: bool = False,
        mixing: Mixing | None = None,
    ) -> None:
        super().__init__(
            len(dataset),  # type: ignore[arg-type]
            batch_size,
            device,
            shuffle,
            seed,
            shard,
            drop_last,
            mixing,
        )
        self.dataset = dataset
        self.workers = workers

    def share(self, step: int, images: int) -> float:
        return 1.0  # DistributedSampler pads every rank's batches to the same size

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        from timm.data.loader import fast_collate

        for images, labels in self.worker_batches(fast_collate):
            images = images.to(self.device, non_blocking=True).float().div_(255)
            yield images, labels.to(self.device, non_blocking=True)

    def worker_batches(self, collate: Callable[..., Any]) -> Iterator[Any]:
        """This epoch's batches from ``data_loader``; a file a worker refused (a usage error, which comes back with
        the worker's traceback in its message) is raised again with its own one line."""
        try:
            yield from self.data_loader(collate)
        except UsageError as exc:
            raise UsageError(str(exc).strip().splitlines()[-1].removeprefix("kdcli.errors.UsageError: ")) from None

    def data_loader(self, collate: Callable[..., Any]) -> torch.utils.data.DataLoader:
        """This epoch's DataLoader over the dataset: shuffled by the epoch's generator (by torch's sampler under
        torchrun), its worker processes seeded from it, so a resumed epoch loads and augments the same."""
        sampler: torch.utils.data.Sampler[int] | None = None
        if self.world_size > 1 and self.shuffle:  # training: torch's sampler, reshuffled per epoch
            sampler = torch.utils.data.DistributedSampler(self.dataset, self.world_size, self.rank, seed=self.seed)
            sampler.set_epoch(self.epoch)
        elif self.world_size > 1:  # evaluation: each image exactly once over the ranks, no padding
            bounds = self.rank_slice(self.num_samples)
            sampler = range(bounds.start, bounds.stop)  # type: ignore[assignment]
        return torch.utils.data.DataLoader(
            self.dataset,
            batch_size=max(1, self.batch_size // self.world_size),
            shuffle=self.shuffle and sampler is None,
            sampler=sampler,
            num_workers=self.workers,
            collate_fn=collate,
            pin_memory=self.device.type == "cuda",
            generator=epoch_generator(self.seed, self.epoch, torch.device("cpu")),
            drop_last=self.drop_last,
            persistent_workers=False,
        )


class DeviceDecodeLoader(FolderLoader):
    """An image folder whose JPEGs are decoded, cropped, flipped and resized on the training device
    (kdcli.data.device_images): the worker processes only read the files."""

    def __init__(self, dataset: torch.utils.data.Dataset, image_size: int, **options: Any) -> None:
        super().__init__(dataset, **options)
        self.image_size = image_size

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        from kdcli.data.device_images import augment, collate, decode, draw_seed

        for data, labels, paths, indices in self.worker_batches(collate):
            images = decode(data, paths, self.device)
            seeds = [draw_seed(self.seed, self.epoch, index) for index in indices] if self.shuffle else None
            batch = torch.stack(list(augment(images, self.image_size, seeds))).div_(255)
            yield batch, labels.to(self.device, non_blocking=True)
