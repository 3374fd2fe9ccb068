"""The evaluation batch: 512 images a forward on a GPU, 64 on the CPU (bench/eval_batch.py), and predictions that do
not depend on it."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import kdcli
from kdcli.config import TrainConfig, resolve
from kdcli.errors import UsageError
from kdcli.runtime.acceleration import resolve_acceleration
from kdcli.training.run import evaluation_batch, setup

from ..conftest import tiny_config


def test_the_evaluation_batch_defaults_by_device_and_keeps_a_given_size() -> None:
    assert resolve_acceleration(TrainConfig(), torch.device("cpu")).eval_batch_size == 64
    assert resolve_acceleration(TrainConfig(), torch.device("cuda")).eval_batch_size == 512
    for device in ("cpu", "cuda"):
        assert resolve_acceleration(TrainConfig(eval_batch_size=300), torch.device(device)).eval_batch_size == 300


def test_a_run_on_the_cpu_evaluates_64_images_a_forward(tmp_path: Path, teacher_file: Path) -> None:
    config = tiny_config(tmp_path, teacher={"checkpoint": str(teacher_file)}, train={"eval_batch_size": None})
    run = setup(resolve([("test", config)]).config, tmp_path)
    assert run.data.test.batch_size == 64
    assert run.data.train.batch_size == 50  # the training batch is the recipe's, untouched


def test_evaluation_gives_the_same_predictions_at_any_batch(teacher_file: Path) -> None:
    default = kdcli.evaluate([teacher_file], device="cpu").results[0]
    odd = kdcli.evaluate([teacher_file], device="cpu", batch_size=7).results[0]
    assert default.samples == odd.samples
    assert (default.top1, default.top5) == (odd.top1, odd.top5)
    assert odd.nll == pytest.approx(default.nll, rel=1e-5)
    assert odd.ece == pytest.approx(default.ece, abs=1e-4)


def distill(out: Path, teacher_file: Path, eval_batch: int | None, seed: int = 0) -> Path:
    train = {"epochs": 1, "eval_batch_size": eval_batch, "seed": seed}
    teacher = {"checkpoint": str(teacher_file)}
    config = tiny_config(out, teacher=teacher, data={"train_subset": 100}, train=train)
    return kdcli.distill(config).student_path


def test_the_student_trains_the_same_whatever_the_evaluation_batch(tmp_path: Path, teacher_file: Path) -> None:
    students = [load_file(distill(tmp_path / str(batch), teacher_file, batch)) for batch in (1000, None)]
    assert students[0].keys() == students[1].keys()
    for name, tensor in students[0].items():
        assert torch.equal(students[1][name], tensor), name
    # so runs that differ only in it are one arm to `kdcli compare` (reports before 0.2 hold 512, later ones null)
    distill(tmp_path / "seed1", teacher_file, None, seed=1)
    rows = kdcli.compare([tmp_path / "1000", tmp_path / "seed1"])["rows"]
    assert [(row["method"], row["seeds"]) for row in rows] == [("vanilla", [0, 1])]


def test_a_bad_evaluation_batch_is_one_line_naming_the_option(teacher_file: Path) -> None:
    for bad in (0, -3, True, 2.5):
        with pytest.raises(UsageError, match=r"^batch_size is the images per forward pass, 1 or more, not "):
            kdcli.evaluate([teacher_file], device="cpu", batch_size=bad)  # type: ignore[arg-type]


def test_the_default_evaluation_batch_is_each_processs_under_torchrun() -> None:
    cpu = resolve_acceleration(TrainConfig(), torch.device("cpu"))
    assert evaluation_batch(TrainConfig(), cpu, processes=4) == 4 * 64  # 64 images a forward in each process
    assert evaluation_batch(TrainConfig(eval_batch_size=100), cpu, processes=4) == 100  # given: global, as training's
