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


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_a_resumed_image_folder_run_ends_at_the_same_weights(tmp_path: Path, workers: int) -> None:
    """The host-side augmentation (timm's random-resized crop and flip, in worker processes or not) draws the same
    after a resume: the loader is seeded by (seed, epoch)."""
    from safetensors.torch import load_file

    from kdcli.errors import Interrupted

    from ..training.test_engine import InterruptAfter

    make_folder(tmp_path / "data")

    def config(out: Path) -> dict:  # type: ignore[type-arg]
        return {"student": {"arch": "resnet8"},
                "data": {"name": "imagefolder", "dir": str(tmp_path / "data"), "image_size": 8, "workers": workers},
                "train": {"epochs": 2, "batch_size": 4, "device": "cpu"}, "output": {"dir": str(out)}}  # fmt: skip

    straight = kdcli.train(config(tmp_path / "straight"))
    with pytest.raises(Interrupted):
        kdcli.train(config(tmp_path / "stopped"), reporter=InterruptAfter(1))
    resumed = kdcli.resume(tmp_path / "stopped")
    expected = load_file(str(straight.student_path))
    assert all(torch.equal(t, expected[k]) for k, t in load_file(str(resumed.student_path)).items())


def test_a_truncated_jpeg_exits_2_naming_the_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from ..conftest import refused

    make_folder(tmp_path / "data")
    whole = tmp_path / "whole.jpg"
    Image.new("RGB", (64, 64), (90, 120, 30)).save(whole, quality=90)
    (tmp_path / "data" / "train" / "dark" / "cut.jpg").write_bytes(whole.read_bytes()[:200])
    err = refused(capsys, 2, "train", "--model", "resnet8", "--data", "imagefolder", "--data-dir",
                  str(tmp_path / "data"), "--set", "data.image_size=8", "--set", "data.workers=2", "--epochs", "1",
                  "--device", "cpu", "--out", str(tmp_path / "run"))  # fmt: skip
    assert "cut.jpg" in err and len(err.strip().splitlines()) == 1


def test_loader_workers_default_to_the_cores() -> None:
    import os

    from kdcli.data import loader_workers

    cores = len(os.sched_getaffinity(0))
    assert loader_workers(None, 1) == cores and loader_workers(None, 2 * cores) == 1
    assert loader_workers(3, 1) == min(3, cores) and loader_workers(0, 1) == 0
