from pathlib import Path

import pytest
import torch

from kdcli.config import DataConfig
from kdcli.data import build_data, stratified_indices
from kdcli.data.sources import load_embedded
from kdcli.errors import UsageError


def test_stratified_subset_keeps_class_shares_exactly() -> None:
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    picked = stratified_indices(labels, 10, seed=0)
    assert torch.bincount(labels[picked]).tolist() == [5, 3, 2]
    assert picked.unique().numel() == 10
    assert torch.equal(picked, stratified_indices(labels, 10, seed=0))
    assert not torch.equal(picked, stratified_indices(labels, 10, seed=1))


def test_largest_remainder_rounding_hits_the_count() -> None:
    labels = torch.tensor([0] * 7 + [1] * 7 + [2] * 7)
    assert stratified_indices(labels, 10, seed=0).numel() == 10


def test_embedded_set_is_the_documented_subset() -> None:
    train, test, classes = load_embedded()
    assert train.images.shape == (5000, 1, 28, 28) and test.images.shape == (1000, 1, 28, 28)
    assert torch.bincount(train.labels).tolist() == [500] * 10
    assert classes[0] == "T-shirt/top"


def test_subset_and_val_split_are_disjoint_and_padded() -> None:
    config = DataConfig(name="embedded", train_subset=1000, val_split=0.2)
    bundle = build_data(config, torch.device("cpu"), 100, 500, seed=0)
    assert bundle.image_size == (32, 32)  # FMNIST padded to the CIFAR zoo's input size
    assert (bundle.train.num_samples, bundle.split("val").num_samples) == (800, 200)
    train_images = bundle.train.images.flatten(1)  # type: ignore[attr-defined]
    val_images = bundle.split("val").images.flatten(1)  # type: ignore[attr-defined]
    shared = (train_images[:, None, :] == val_images[None, :, :]).all(-1).any()
    assert not shared


def test_missing_fashion_mnist_says_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KDCLI_DATA_DIR", str(tmp_path / "env"))
    with pytest.raises(UsageError) as error:
        build_data(DataConfig(name="fashion-mnist", dir=str(tmp_path / "given")), torch.device("cpu"), 8, 8, 0)
    message = str(error.value)
    assert str(tmp_path / "given") in message and str(tmp_path / "env") in message
    assert "/usr/share/datasets/fashion-mnist" in message


def test_missing_cifar_explains_layout(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cifar-100-python"):
        build_data(DataConfig(name="cifar100", dir=str(tmp_path)), torch.device("cpu"), 8, 8, 0)


def test_fashion_mnist_folder_is_read(tmp_path: Path) -> None:
    """The embedded files are in the same IDX format, so a copy of them is a valid --data-dir."""
    from kdcli.data.sources import EMBEDDED_DIR

    for source in EMBEDDED_DIR.glob("*.gz"):
        (tmp_path / source.name).write_bytes(source.read_bytes())
    bundle = build_data(DataConfig(name="fashion-mnist", dir=str(tmp_path)), torch.device("cpu"), 100, 100, 0)
    assert (bundle.train.num_samples, bundle.num_classes, bundle.in_chans) == (5000, 10, 1)
