from pathlib import Path

import pytest
import torch
from PIL import Image

import kdcli
from kdcli.config import DataConfig
from kdcli.data import build_data


def make_folder(root: Path) -> None:
    """Two classes of 12×12 images: dark ones and bright ones."""
    for split, count in (("train", 6), ("val", 2)):
        for label, value in (("bright", 230), ("dark", 20)):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (12, 12), (value, value - i, value)).save(folder / f"{i}.png")


def test_imagefolder_loads_classes_and_scales_to_unit_range(tmp_path: Path) -> None:
    make_folder(tmp_path)
    bundle = build_data(DataConfig(name="imagefolder", dir=str(tmp_path), image_size=8, workers=0),
                        torch.device("cpu"), 4, 4, seed=0)  # fmt: skip
    assert bundle.classes == ["bright", "dark"]
    images, labels = next(iter(bundle.split("test")))
    assert images.shape == (4, 3, 8, 8) and images.dtype == torch.float32  # uint8 from the workers, scaled here
    assert images.min() >= 0.0 and images.max() <= 1.0
    bright = images[labels == 0].mean()
    assert bright > 0.8 and images[labels == 1].mean() < 0.2


@pytest.mark.slow
def test_train_on_an_image_folder(tmp_path: Path) -> None:
    make_folder(tmp_path / "data")
    result = kdcli.train({
        "student": {"arch": "resnet8"},
        "data": {"name": "imagefolder", "dir": str(tmp_path / "data"), "image_size": 8, "workers": 0},
        "train": {"epochs": 1, "batch_size": 4, "device": "cpu"},
        "output": {"dir": str(tmp_path / "run")},
    })  # fmt: skip
    assert result.report.student.arch == "resnet8"
    assert result.report.final.last_top1 is not None
