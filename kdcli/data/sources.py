"""Readers for the data sets kdcli knows, each returning uint8 image tensors (N, C, H, W) and int64 labels."""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import pickle
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from kdcli.errors import UsageError, option

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
EMBEDDED_DIR = Path(__file__).resolve().parent / "embedded"

# Per-channel statistics of each training set: the normalization a model trained on it expects.
STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "embedded": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
}

NATIVE_SIZE = {"fashion-mnist": 28, "embedded": 28, "cifar10": 32, "cifar100": 32}
"""The side of each in-memory data set's images as stored; kdcli pads smaller ones with zeros (``data.image_size``)."""


def input_preparation(dataset: str | None, input_size: tuple[int, ...]) -> str | None:
    """How to turn a data set's stored images into a model's input when kdcli padded them (Fashion-MNIST's 28×28 to
    the CIFAR zoo's 32×32): what a reader of an exported model must do instead of resizing (timm's default)."""
    native = NATIVE_SIZE.get(dataset or "")
    side = input_size[-1]
    if native is None or native >= side:
        return None
    return (
        f"zero-pad each {native}x{native} image by {(side - native) // 2} pixels on each side to {side}x{side} "
        "(no resize), values in [0, 1]"
    )


@dataclass
class ImageArrays:
    """A whole split in memory: uint8 images (N, C, H, W), int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.numel())

    def select(self, index: torch.Tensor) -> ImageArrays:
        return ImageArrays(self.images[index], self.labels[index])


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format), gzip-compressed or not, as a uint8 array of its dimensions; a truncated or
    damaged file is a usage error that says to fetch it again."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError, zlib.error) as exc:  # gzip's truncation is an EOFError (click would call it ^D)
        raise UsageError(f"{path} is truncated or damaged ({exc}); download it again") from None
    try:
        zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
        shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    except struct.error:
        raise UsageError(f"{path} is not an IDX file (too short for its header); download it again") from None
    if zero != 0 or dtype_code != 0x08:
        raise UsageError(f"{path} is not an unsigned-byte IDX file; download it again")
    expected = 4 + 4 * ndim + int(np.prod(shape))
    if len(data) != expected:
        raise UsageError(f"{path} holds {len(data)} bytes but its header promises {expected}; download it again")
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def fashion_mnist_search_path(data_dir: str | None) -> list[Path]:
    """Where Fashion-MNIST is looked for: ``data.dir``, $KDCLI_DATA_DIR, Debian's folder (each also with a
    ``fashion-mnist`` subfolder)."""
    roots = [Path(p) for p in (data_dir, os.environ.get("KDCLI_DATA_DIR")) if p]
    candidates = []
    for root in roots:
        candidates += [root, root / "fashion-mnist"]
    return [*candidates, SYSTEM_FASHION_MNIST]


def read_fashion_mnist(folder: Path, split: str) -> ImageArrays:
    images_name, labels_name = FASHION_MNIST_FILES[split]
    images = read_idx(folder / images_name)
    labels = read_idx(folder / labels_name)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise UsageError(
            f"{folder / images_name} holds {len(images)} images but {folder / labels_name} {len(labels)} labels; "
            "the two files of a split must match (download both again)"
        )
    if labels.size and int(labels.max()) >= len(FASHION_MNIST_CLASSES):
        raise UsageError(f"{folder / labels_name} has labels up to {int(labels.max())}, not 0–9; download it again")
    return ImageArrays(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))


def find_fashion_mnist(data_dir: str | None) -> Path:
    searched = fashion_mnist_search_path(data_dir)
    for folder in searched:
        if all((folder / name).is_file() for name in FASHION_MNIST_FILES["train"] + FASHION_MNIST_FILES["test"]):
            return folder
    raise UsageError(
        f"fashion-mnist not found; looked in {', '.join(map(str, searched))}. Pass {option('data.dir', 'DIR')} with "
        "the four "
        "IDX .gz files, set KDCLI_DATA_DIR, or `apt-get install dataset-fashion-mnist`"
    )


def load_fashion_mnist(data_dir: str | None) -> tuple[ImageArrays, ImageArrays, list[str]]:
    folder = find_fashion_mnist(data_dir)
    return read_fashion_mnist(folder, "train"), read_fashion_mnist(folder, "test"), list(FASHION_MNIST_CLASSES)


def load_embedded() -> tuple[ImageArrays, ImageArrays, list[str]]:
    """The small stratified Fashion-MNIST subset shipped inside the package (see embedded/README.md)."""
    return (
        read_fashion_mnist(EMBEDDED_DIR, "train"),
        read_fashion_mnist(EMBEDDED_DIR, "test"),
        list(FASHION_MNIST_CLASSES),
    )


CIFAR_LAYOUT = {
    # name: (folder, train files, test file, meta file, label key, class-names key)
    "cifar10": (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        "test_batch",
        "batches.meta",
        "labels",
        "label_names",
    ),
    "cifar100": ("cifar-100-python", ["train"], "test", "meta", "fine_labels", "fine_label_names"),
}


class _CifarUnpickler(pickle.Unpickler):
    """The official CIFAR files are Python pickles: dictionaries of bytes, lists and numpy arrays. This unpickler
    rebuilds exactly those and refuses every other class, so a doctored file cannot run code."""

    ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset(
        {
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it asks for {module}.{name}, which a CIFAR batch never holds")
        return super().find_class(module, name)


def _read_cifar_pickle(path: Path) -> dict[Any, Any]:
    try:
        with open(path, "rb") as handle:
            batch = _CifarUnpickler(handle, encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as exc:
        raise UsageError(f"{path} is not a CIFAR python-pickle batch ({exc}); download the data set again") from None
    if not isinstance(batch, dict):
        raise UsageError(f"{path} is not a CIFAR python-pickle batch (no dictionary inside); download it again")
    # Written by Python 2 the keys are bytes; re-saved by Python 3 they may be str: both are the same data.
    return {key.decode() if isinstance(key, bytes) else key: value for key, value in batch.items()}


def _read_cifar_batch(path: Path, label_key: str) -> ImageArrays:
    batch = _read_cifar_pickle(path)
    if "data" not in batch or label_key not in batch:
        raise UsageError(f"{path} has no 'data' and '{label_key}' entries, so it is not a CIFAR batch")
    images = np.asarray(batch["data"], dtype=np.uint8)
    labels = torch.tensor(batch[label_key], dtype=torch.int64)
    if images.size != len(labels) * 3 * 32 * 32:
        raise UsageError(f"{path} holds {images.size} bytes of pixels for {len(labels)} labels; download it again")
    return ImageArrays(torch.from_numpy(images.reshape(-1, 3, 32, 32).copy()), labels)


def load_cifar(name: str, data_dir: str | None, download: bool) -> tuple[ImageArrays, ImageArrays, list[str]]:
    folder_name, train_files, test_file, meta_file, label_key, names_key = CIFAR_LAYOUT[name]
    root = Path(data_dir or os.environ.get("KDCLI_DATA_DIR") or "data")
    folder = root / folder_name
    if not folder.is_dir() and download:
        import torchvision.datasets as tv_datasets

        dataset_cls = tv_datasets.CIFAR10 if name == "cifar10" else tv_datasets.CIFAR100
        chatter = io.StringIO()  # torchvision prints each try and each mirror; kdcli says one line
        try:
            with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
                dataset_cls(str(root), download=True)
        except Exception as exc:  # network errors come in many types
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise UsageError(
                f"cannot download {name} into {root} ({reason}); check the network, or put the "
                f"python-pickle {folder_name}/ folder there by hand"
            ) from None
    if not (folder / test_file).is_file():
        raise UsageError(
            f"{name} not found: looked for {folder}/ (the python-pickle version). Pass {option('data.dir', 'DIR')} "
            f"that holds {folder_name}/, set KDCLI_DATA_DIR, or download it with a train or distill run "
            f"({option('data.download', 'true')}) when online"
        )
    missing = [f for f in [*train_files, test_file, meta_file] if not (folder / f).is_file()]
    if missing:
        raise UsageError(
            f"{folder} lacks {', '.join(missing)}; download {name} again (a train or distill run with "
            f"{option('data.download', 'true')} fetches it)"
        )
    parts = [_read_cifar_batch(folder / f, label_key) for f in train_files]
    train = ImageArrays(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]))
    test = _read_cifar_batch(folder / test_file, label_key)
    names = _read_cifar_pickle(folder / meta_file).get(names_key)
    if not isinstance(names, list):
        raise UsageError(f"{folder / meta_file} has no '{names_key}' list of class names; download {name} again")
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in names]
    return train, test, classes
