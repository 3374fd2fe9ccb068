"""Build kdcli's embedded data set: a stratified subset of Fashion-MNIST in its original IDX .gz format.

    python scripts/make_embedded_data.py ../shared/data/fashion-mnist

Writes kdcli/data/embedded/ (5,000 training and 1,000 test images, 10 classes, equal shares).
The output is deterministic (fixed seed, gzip mtime 0), so re-running it reproduces the shipped files byte for byte.
"""

from __future__ import annotations

import gzip
import struct
import sys
from pathlib import Path

import numpy as np

from kdcli.data import stratified_indices
from kdcli.data.sources import FASHION_MNIST_FILES, read_fashion_mnist

TRAIN_IMAGES, TEST_IMAGES, SEED = 5000, 1000, 0
OUT = Path(__file__).resolve().parent.parent / "kdcli" / "data" / "embedded"


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as handle:
        handle.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def main(source: Path) -> None:
    for split, count in (("train", TRAIN_IMAGES), ("test", TEST_IMAGES)):
        arrays = read_fashion_mnist(source, split)
        picked = arrays.select(stratified_indices(arrays.labels, count, SEED))
        images_name, labels_name = FASHION_MNIST_FILES[split]
        write_idx(OUT / images_name, picked.images.squeeze(1).numpy())
        write_idx(OUT / labels_name, picked.labels.numpy().astype(np.uint8))
        print(split, len(picked), np.bincount(picked.labels.numpy()).tolist())


if __name__ == "__main__":
    main(Path(sys.argv[1]))
