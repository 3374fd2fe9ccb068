"""Readers for the data sets kdcli knows, each returning uint8 image tensors (N, C, H, W) and int64 labels."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kdcli.errors import UsageError

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
    """An IDX file (the MNIST format), gzip-compressed or not, as a uint8 array of its dimensions."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise UsageError(f"{path} is not an unsigned-byte IDX file")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def fashion_mnist_search_path(data_dir: str | None) -> list[Path]:
    """Where Fashion-MNIST is looked for: --data-dir, $KDCLI_DATA_DIR, Debian's folder (each also with a
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
    return ImageArrays(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))


def find_fashion_mnist(data_dir: str | None) -> Path:
    searched = fashion_mnist_search_path(data_dir)
    for folder in searched:
        if all((folder / name).is_file() for name in FASHION_MNIST_FILES["train"] + FASHION_MNIST_FILES["test"]):
            return folder
    raise UsageError(
        f"fashion-mnist not found; looked in {', '.join(map(str, searched))}. Pass --data-dir DIR with the four "
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
        b"labels",
        b"label_names",
    ),
    "cifar100": ("cifar-100-python", ["train"], "test", "meta", b"fine_labels", b"fine_label_names"),
}


def _read_cifar_batch(path: Path, label_key: bytes) -> ImageArrays:
    # The official CIFAR files are Python pickles; only open files you trust (torchvision reads them the same way).
    with open(path, "rb") as handle:
        batch = pickle.load(handle, encoding="bytes")
    images = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return ImageArrays(torch.from_numpy(images.copy()), torch.tensor(batch[label_key], dtype=torch.int64))


def load_cifar(name: str, data_dir: str | None, download: bool) -> tuple[ImageArrays, ImageArrays, list[str]]:
    folder_name, train_files, test_file, meta_file, label_key, names_key = CIFAR_LAYOUT[name]
    root = Path(data_dir or os.environ.get("KDCLI_DATA_DIR") or "data")
    folder = root / folder_name
    if not folder.is_dir() and download:
        import torchvision.datasets as tv_datasets

        dataset_cls = tv_datasets.CIFAR10 if name == "cifar10" else tv_datasets.CIFAR100
        try:
            dataset_cls(str(root), download=True)
        except Exception as exc:  # network errors come in many types
            raise UsageError(f"cannot download {name} into {root}: {exc}") from None
    if not (folder / test_file).is_file():
        raise UsageError(
            f"{name} not found: looked for {folder}/ (the python-pickle version). Pass --data-dir DIR that holds "
            f"{folder_name}/, set KDCLI_DATA_DIR, or add --download when online"
        )
    parts = [_read_cifar_batch(folder / f, label_key) for f in train_files]
    train = ImageArrays(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]))
    test = _read_cifar_batch(folder / test_file, label_key)
    with open(folder / meta_file, "rb") as handle:
        classes = [c.decode() for c in pickle.load(handle, encoding="bytes")[names_key]]
    return train, test, classes
