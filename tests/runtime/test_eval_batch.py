"""The evaluation batch: 512 images a forward on a GPU, 64 on the CPU (bench/eval_batch.py), and predictions that do
not depend on it."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import kdcli
from kdcli.config import TrainConfig, resolve
from kdcli.runtime.acceleration import resolve_acceleration
from kdcli.training.run import setup

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


def test_the_student_trains_the_same_whatever_the_evaluation_batch(tmp_path: Path, teacher_file: Path) -> None:
    students = []
    for eval_batch in (1000, None):
        train = {"epochs": 1, "eval_batch_size": eval_batch}
        teacher = {"checkpoint": str(teacher_file)}
        config = tiny_config(tmp_path / str(eval_batch), teacher=teacher, data={"train_subset": 100}, train=train)
        students.append(load_file(kdcli.distill(config).student_path))
    assert students[0].keys() == students[1].keys()
    for name, tensor in students[0].items():
        assert torch.equal(students[1][name], tensor), name
