"""The fast path gives the eager loop's results: compiled, channels-last and CUDA-graph steps against eager."""

from pathlib import Path
from typing import Any

import pytest
import torch

from kdcli.acceleration import resolve_acceleration
from kdcli.config import TrainConfig, resolve
from kdcli.engine import Reporter, setup, train_epoch
from kdcli.errors import UsageError

from .conftest import tiny_config


def test_switches_default_on_for_cuda_and_off_for_cpu() -> None:
    cpu = resolve_acceleration(TrainConfig(), torch.device("cpu"))
    assert (cpu.precision, cpu.channels_last, cpu.compile, cpu.cuda_graphs) == ("fp32", False, False, False)
    cuda = resolve_acceleration(TrainConfig(), torch.device("cuda"))
    assert (cuda.precision, cuda.channels_last, cuda.compile, cuda.cuda_graphs) == ("bf16", True, True, True)
    explicit = resolve_acceleration(TrainConfig(compile=False, cuda_graphs=False), torch.device("cuda"))
    assert not explicit.compile and not explicit.cuda_graphs


def test_cuda_graphs_are_refused_without_cuda_or_with_no_compile() -> None:
    with pytest.raises(UsageError, match="needs a CUDA device"):
        resolve_acceleration(TrainConfig(cuda_graphs=True), torch.device("cpu"))
    with pytest.raises(UsageError, match="drop --no-compile"):
        resolve_acceleration(TrainConfig(cuda_graphs=True, compile=False), torch.device("cuda"))


def one_epoch(tmp_path: Path, teacher_file: Path, **train: Any) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    config = tiny_config(tmp_path, teacher={"checkpoint": str(teacher_file)}, data={"train_subset": 40},
                         train={"batch_size": 20, "epochs": 1, **train})  # fmt: skip
    run = setup(resolve([("test", config)]).config, tmp_path)
    record = train_epoch(run, Reporter())
    return record, {k: v.detach().clone() for k, v in run.student.model.state_dict().items()}


def assert_same_step(reference: tuple[dict[str, float], dict[str, torch.Tensor]],
                     other: tuple[dict[str, float], dict[str, torch.Tensor]]) -> None:  # fmt: skip
    assert other[0]["train_loss"] == pytest.approx(reference[0]["train_loss"], rel=1e-4)
    for name, tensor in reference[1].items():
        assert torch.allclose(other[1][name].float(), tensor.float(), rtol=1e-4, atol=1e-5), name


def test_compiled_step_equals_eager(tmp_path: Path, teacher_file: Path) -> None:
    eager = one_epoch(tmp_path / "eager", teacher_file, compile=False)
    compiled = one_epoch(tmp_path / "compiled", teacher_file, compile=True)
    assert_same_step(eager, compiled)


def test_channels_last_step_equals_eager(tmp_path: Path, teacher_file: Path) -> None:
    eager = one_epoch(tmp_path / "eager", teacher_file)
    channels_last = one_epoch(tmp_path / "cl", teacher_file, channels_last=True)
    assert_same_step(eager, channels_last)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device; none is visible here")
def test_cuda_graph_step_equals_eager(tmp_path: Path, teacher_file: Path) -> None:
    fast = {"device": "cuda", "precision": "fp32", "channels_last": False}
    eager = one_epoch(tmp_path / "eager", teacher_file, **fast, compile=False, cuda_graphs=False)
    graphs = one_epoch(tmp_path / "graphs", teacher_file, **fast, compile=True, cuda_graphs=True)
    assert_same_step(eager, graphs)
