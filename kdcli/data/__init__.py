"""Data sets, subsets and splits, and the loaders the engine iterates."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from kdcli.config import DataConfig
from kdcli.data.device_images import EncodedFiles
from kdcli.data.images import checked_image
from kdcli.data.loaders import DeviceDecodeLoader, FolderLoader, Loader, TensorLoader, crop_flip
from kdcli.data.mixing import Mix, Mixing
from kdcli.data.sources import STATS, ImageArrays, load_cifar, load_embedded, load_fashion_mnist
from kdcli.errors import UsageError, option


@dataclass(kw_only=True)
class DataBundle:
    """Loaders for one run plus what models and reports need to know about the data."""

    name: str
    classes: list[str]
    in_chans: int
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train: Loader
    test: Loader | None
    val: Loader | None
    notes: list[str] = field(default_factory=list)
    """What a user should know about the data as loaded (files of an image folder that were left out)."""

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split(self, name: str) -> Loader:
        loader = {"train": self.train, "test": self.test, "val": self.val}[name]
        if loader is None:
            hint = f" (add {option('data.val_split', 'F')})" if name == "val" else ""
            raise UsageError(f"the {self.name} data has no {name} split{hint}")
        return loader


def stratified_indices(labels: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """``count`` indices with each class's share of ``labels`` kept (largest-remainder rounding), chosen at random."""
    if count >= labels.numel():
        return torch.arange(labels.numel())
    generator = torch.Generator().manual_seed(seed)
    classes, class_sizes = labels.unique(return_counts=True)
    exact = class_sizes.double() * count / labels.numel()
    quota = exact.floor().long()
    leftover = count - int(quota.sum())
    quota[(exact - quota).argsort(descending=True)[:leftover]] += 1
    chosen = []
    for label, take in zip(classes.tolist(), quota.tolist(), strict=True):
        members = (labels == label).nonzero().squeeze(1)
        chosen.append(members[torch.randperm(members.numel(), generator=generator)[:take]])
    return torch.cat(chosen).sort().values


def mixing_of(config: DataConfig) -> Mixing:
    """The training batches' mixup / CutMix (kdcli.data.mixing) that ``data.mixup``, ``data.cutmix`` and
    ``data.mix_prob`` set."""
    return Mixing(config.mixup, config.cutmix, config.mix_prob)


def _pad_to(arrays: ImageArrays, size: int | None) -> ImageArrays:
    if size is None:
        return arrays
    height, width = arrays.images.shape[-2:]
    if size < max(height, width):
        raise UsageError(f"data.image_size={size} is smaller than the images ({height}×{width}); it only pads")
    top, left = (size - height) // 2, (size - width) // 2
    padded = F.pad(arrays.images, (left, size - width - left, top, size - height - top))
    return ImageArrays(padded, arrays.labels)


def _default_image_size(name: str) -> int | None:
    # The FMNIST-5k protocol pads 28×28 to 32×32, the input size of the CIFAR zoo.
    return 32 if name in ("fashion-mnist", "embedded") else None


def build_data(
    config: DataConfig,
    device: torch.device,
    batch_size: int,
    eval_batch_size: int,
    seed: int,
    shard: tuple[int, int] = (0, 1),
) -> DataBundle:
    """Load the configured data set, cut the subset and the validation split, and make the loaders; ``shard`` is this
    process's rank and the number of processes under torchrun (every rank loads the whole set)."""
    if config.name == "imagefolder":
        return _build_imagefolder(config, device, batch_size, eval_batch_size, seed, shard)
    if config.name == "fashion-mnist":
        train, test, classes = load_fashion_mnist(config.dir)
    elif config.name == "embedded":
        train, test, classes = load_embedded()
    else:
        train, test, classes = load_cifar(config.name, config.dir, config.download)
    size = config.image_size or _default_image_size(config.name)
    train, test = _pad_to(train, size), _pad_to(test, size)
    if config.train_subset is not None:
        train = train.select(stratified_indices(train.labels, config.train_subset, config.subset_seed))
    val = None
    if config.val_split > 0:
        held_out = stratified_indices(train.labels, round(config.val_split * len(train)), config.subset_seed + 1)
        keep = torch.ones(len(train), dtype=torch.bool)
        keep[held_out] = False
        train, val = train.select(keep.nonzero().squeeze(1)), train.select(held_out)
        if len(val) == 0 or len(train) < len(classes):
            raise UsageError(
                f"{option('data.val_split', config.val_split)} leaves {len(train)} training and {len(val)} "
                f"validation images of {len(train) + len(val)}; choose a fraction that keeps both (0.1 is usual)"
            )
    if config.drop_last and len(train) < batch_size:
        raise UsageError(
            f"data.drop_last with a batch of {batch_size} leaves no training step on {len(train)} images; "
            "lower the batch size or keep the last batch"
        )
    mean, std = STATS[config.name]

    def eval_loader(arrays: ImageArrays) -> TensorLoader:
        return TensorLoader(arrays.images, arrays.labels, eval_batch_size, device, shard=shard)

    return DataBundle(
        name=config.name,
        classes=classes,
        in_chans=int(train.images.shape[1]),
        image_size=(int(train.images.shape[2]), int(train.images.shape[3])),
        mean=mean,
        std=std,
        train=TensorLoader(
            train.images,
            train.labels,
            batch_size,
            device,
            shuffle=True,
            crop_padding=config.crop_padding,
            hflip=config.hflip,
            seed=seed,
            shard=shard,
            drop_last=config.drop_last,
            mixing=mixing_of(config),
        ),
        test=eval_loader(test),
        val=eval_loader(val) if val is not None else None,
    )


class CheckedImages(torch.utils.data.Dataset):
    """The images of timm's ImageDataset (its reader's files and labels, its transform), each decoded here: a file
    that cannot be decoded is refused by name rather than skipped, and likewise an image whose pixels the conversion
    to RGB would not keep (16-bit or float) and one larger than PIL's decompression-bomb limit. (timm's own
    ``__getitem__`` logs "Skipped sample" and serves the next image instead, which would train on a data set other
    than the one given.)"""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self.reader = dataset.reader

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        name = self.dataset.filename(index, absolute=True)
        source, target = self.reader[index][:2]
        with source, checked_image(source, name) as image:
            picture = image.convert("RGB")  # decodes the pixels: a damaged file fails here
        transform = self.dataset.transform
        return (transform(picture) if transform is not None else picture), target


def scan_image_folder(folder: Path) -> tuple[dict[str, int], list[str]]:
    """The classes of an image folder, the folders directly under it that are not hidden, in timm's order; and a
    note for each kind of file left out: hidden files and folders (``.ipynb_checkpoints``), files that are not
    images, images directly in ``folder``. Images in a folder inside a class folder are refused: timm would label
    them by that inner folder's name."""
    from timm.data.readers.img_extensions import get_img_extensions
    from timm.utils.misc import natural_key

    extensions = get_img_extensions(as_set=True)
    left_out: dict[str, list[str]] = {"hidden": [], "not an image": [], "outside a class folder": []}
    classes = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            left_out["hidden"].append(entry.name)
        elif entry.is_dir():
            classes.append(entry.name)
        elif entry.suffix.lower() in extensions:
            left_out["outside a class folder"].append(entry.name)
        else:
            left_out["not an image"].append(entry.name)
    for name in classes:
        for root, folders, files in os.walk(folder / name, followlinks=True):
            hidden = [f for f in folders if f.startswith(".")]
            left_out["hidden"] += [str(Path(root, f).relative_to(folder)) for f in hidden]
            folders[:] = [f for f in folders if not f.startswith(".")]
            for file in files:
                path = Path(root, file)
                if file.startswith("."):
                    left_out["hidden"].append(str(path.relative_to(folder)))
                elif path.suffix.lower() not in extensions:
                    left_out["not an image"].append(str(path.relative_to(folder)))
                elif Path(root) != folder / name:
                    raise UsageError(
                        f"{path.parent} holds images inside the class folder {folder / name}; kdcli's classes are the "
                        f"folders directly under {folder}: move them into {folder / name} or out of {folder}"
                    )
    notes = [
        f"left out of {folder}: {len(names)} {kind} ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
        for kind, names in left_out.items()
        if names
    ]
    ordered = sorted(classes, key=natural_key)
    return {name: index for index, name in enumerate(ordered)}, notes


def _image_folder(dataset_class: Any, folder: Path, transform: Any) -> tuple[CheckedImages, list[str]]:
    class_map, notes = scan_image_folder(folder)
    try:
        dataset = dataset_class(str(folder), transform=transform, class_map=class_map) if class_map else []
    except RuntimeError:  # timm: "Found 0 images in subfolders of ..."
        dataset = []
    if len(dataset) == 0:
        raise UsageError(f"{folder} holds no images (its class folders are empty); put images in {folder}/CLASS/")
    return CheckedImages(dataset), notes


def usable_core_ids() -> list[int]:
    """The CPU cores this process may run on (its affinity: a sweep pins each run to its share, kdcli.sweeps)."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def usable_cores() -> int:
    """How many CPU cores this process may run on (``usable_core_ids``)."""
    return len(usable_core_ids())


def loader_workers(asked: int | None, processes: int) -> int:
    """Loader processes for an image folder: as asked, at most one per CPU core this process may use (more only adds
    contention); by default one per core, the cores shared among the ``processes`` of a torchrun job. Decoding JPEGs
    at 224 px is what usually sets the pace on one GPU, so the default takes every core rather than a constant."""
    cores = usable_cores()
    if asked is not None:
        return min(asked, cores)
    return max(1, cores // max(1, processes))


def _build_imagefolder(
    config: DataConfig,
    device: torch.device,
    batch_size: int,
    eval_batch_size: int,
    seed: int,
    shard: tuple[int, int],
) -> DataBundle:
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, ImageDataset, create_transform

    if config.dir is None or not (Path(config.dir) / "train").is_dir():
        raise UsageError(
            f"imagefolder needs {option('data.dir', 'DIR')} with train/ and val/ class folders (got {config.dir})"
        )
    # the evaluation folder: val/ (ImageNet's layout) or test/; without one a run would report no accuracy at all
    eval_dir = next((Path(config.dir) / name for name in ("val", "test") if (Path(config.dir) / name).is_dir()), None)
    if eval_dir is None:
        raise UsageError(
            f"{config.dir} has train/ but no val/ (or test/) folder to evaluate on; add one with the same class folders"
        )
    if config.train_subset is not None or config.val_split > 0:
        raise UsageError(
            f"{option('data.train_subset')} and {option('data.val_split')} work on in-memory data sets; "
            "split the folders instead"
        )
    root = Path(config.dir)
    size = config.image_size or 224
    # Prefetcher mode: the transforms stop at uint8 tensors; the loader scales on the device, the models normalize.
    train_transform = create_transform(size, is_training=True, use_prefetcher=True)
    train_set, train_notes = _image_folder(ImageDataset, root / "train", train_transform)
    test_set, test_notes = _image_folder(ImageDataset, eval_dir, create_transform(size, use_prefetcher=True))
    classes = sorted(train_set.reader.class_to_idx, key=train_set.reader.class_to_idx.get)
    if test_set.reader.class_to_idx != train_set.reader.class_to_idx:
        found = sorted(test_set.reader.class_to_idx)
        raise UsageError(
            f"{eval_dir} and {root / 'train'} hold different class folders ({found} vs {classes}); "
            "give both the same classes"
        )
    workers = loader_workers(config.workers, shard[1])
    notes = train_notes + test_notes
    train_options: dict[str, Any] = {
        "batch_size": batch_size,
        "device": device,
        "shuffle": True,
        "workers": workers,
        "seed": seed,
        "shard": shard,
        "drop_last": config.drop_last,
        "mixing": mixing_of(config),
    }
    test_options: dict[str, Any] = {
        "batch_size": eval_batch_size,
        "device": device,
        "shuffle": False,
        "workers": workers,
        "shard": shard,
    }
    train: FolderLoader
    if config.decode == "device" and device.type == "cuda":
        train = DeviceDecodeLoader(EncodedFiles(train_set.reader.samples), size, **train_options)
        test: FolderLoader = DeviceDecodeLoader(EncodedFiles(test_set.reader.samples), size, **test_options)
    else:
        if config.decode == "device":
            notes.append(f"{option('data.decode', 'device')} decodes on a GPU; on {device.type} the host decodes")
        train, test = FolderLoader(train_set, **train_options), FolderLoader(test_set, **test_options)
    return DataBundle(
        name="imagefolder",
        classes=classes,
        in_chans=3,
        image_size=(size, size),
        mean=IMAGENET_DEFAULT_MEAN,
        std=IMAGENET_DEFAULT_STD,
        train=train,
        test=test,
        val=None,
        notes=notes,
    )


__all__ = [
    "DataBundle",
    "ImageArrays",
    "Loader",
    "Mix",
    "Mixing",
    "TensorLoader",
    "build_data",
    "crop_flip",
    "loader_workers",
    "stratified_indices",
]
