"""Several processes (torch.distributed, gloo, 2 processes on the CPU) give what one process gives."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

import kdcli
from kdcli.config import DataConfig, resolve
from kdcli.data import TensorLoader
from kdcli.reporting.report import read_report
from kdcli.training.run import setup

from ..conftest import tiny_config

pytestmark = pytest.mark.slow  # starts processes that each import torch and timm


def test_rank_slices_are_disjoint_cover_the_epoch_and_keep_the_augmentation() -> None:
    """Two ranks of a 103-image epoch at global batch 25: together exactly one process's images, augmentation
    included, each image once; the last batch (3 images) is split 1/2."""
    images = torch.randint(0, 256, (103, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ids = torch.arange(103)

    def epoch(shard: tuple[int, int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        loader = TensorLoader(images, ids, 25, torch.device("cpu"), shuffle=True, crop_padding=2, hflip=True, seed=3,
                              shard=shard)  # fmt: skip
        loader.set_epoch(1)
        return list(loader)

    single, first, second = epoch((0, 1)), epoch((0, 2)), epoch((1, 2))
    assert len(single) == len(first) == len(second) == 5
    for whole, a, b in zip(single, first, second, strict=True):
        assert torch.equal(torch.cat([a[1], b[1]]), whole[1])  # rank 0's slice, then rank 1's: the global batch
        assert torch.equal(torch.cat([a[0], b[0]]), whole[0])  # the same crops and flips
    seen = torch.cat([labels for _, labels in first + second])
    assert sorted(seen.tolist()) == list(range(103))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def config_for(out: Path, teacher: Path, method: str) -> dict[str, Any]:
    """A BatchNorm-free student (timm's test_vit): per-process batch statistics would differ from one process's, and
    SyncBatchNorm runs on GPUs only. Global batch 25 splits 12/13, so the per-rank weights are exercised."""
    student = {"arch": "test_vit", "kwargs": {"img_size": 32}}
    train = {"epochs": 2, "batch_size": 25, "eval_batch_size": 32}
    return tiny_config(out, teacher={"checkpoint": str(teacher)}, student=student, method={"name": method},
                       data={"train_subset": 311, "val_split": 0.15}, optim={"name": "adamw", "lr": 1e-3},
                       train=train)  # fmt: skip


def rank_main(rank: int, port: int, config: dict[str, Any], caller_joins: bool) -> None:
    """One process of a 2-process run: rank 1 must write nothing (every write goes through atomic_write). The run
    leaves the process group it joined (else gloo's threads could abort the finished process at exit) and keeps one
    its caller joined (``caller_joins``)."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))  # fmt: skip
    torch.set_num_threads(1)
    if rank == 1:
        from kdcli.io import checkpoint, files, model_file
        from kdcli.reporting import charts

        def refuse(*args: Any, **kwargs: Any) -> None:
            raise AssertionError("rank 1 wrote a file")

        for module in (files, model_file, checkpoint, charts):
            module.atomic_write = refuse  # type: ignore[attr-defined]
    if caller_joins:
        torch.distributed.init_process_group("gloo")
    try:
        kdcli.distill(config)
        assert torch.distributed.is_initialized() == caller_joins
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def spawn_two(config: dict[str, Any], caller_joins: bool = False) -> None:
    mp.spawn(rank_main, args=(free_port(), config, caller_joins), nprocs=2, join=True)


def moved_weights_agree(reference: dict[str, torch.Tensor], other: dict[str, torch.Tensor],
                        initial: dict[str, torch.Tensor], rel: float) -> None:  # fmt: skip
    """Each tensor agrees to ``rel`` of how far training moved it (summation order differs between the all-reduce
    and one process's batch mean)."""
    for name, tensor in reference.items():
        moved = (tensor - initial[name]).norm() + tensor.norm() * 1e-6
        assert (other[name] - tensor).norm() <= rel * moved, name


@pytest.mark.parametrize("method", ["vanilla", "pesf"])
def test_two_processes_train_the_weights_of_one(tmp_path: Path, teacher_file: Path, method: str) -> None:
    """Same global batch and seed: the same student, within rounding; only rank 0 wrote the run directory; the
    evaluation over two ranks (a 47-image validation split, batches of 32 split 16/16 and 8/7) reports exactly
    the top-1 one process computes from the exported student. With pesf the processes join the group before
    calling kdcli, which must then leave it to them."""
    single = kdcli.distill(config_for(tmp_path / "single", teacher_file, method))
    spawn_two(config_for(tmp_path / "ddp", teacher_file, method), caller_joins=method == "pesf")
    initial = setup(resolve([("test", config_for(tmp_path / "initial", teacher_file, method))]).config, None)
    reference, other = load_file(str(single.student_path)), load_file(str(tmp_path / "ddp" / "student.safetensors"))
    assert reference.keys() == other.keys()
    moved_weights_agree(reference, other, initial.student.model.state_dict(), rel=1e-3)
    report = read_report(tmp_path / "ddp")
    data = DataConfig(train_subset=311, val_split=0.15)
    evaluated = kdcli.evaluate([tmp_path / "ddp" / "student.safetensors"], data, split="val", device="cpu",
                               batch_size=32).results[0]  # fmt: skip
    assert evaluated.samples == 47
    last_val = report.epochs[-1].val
    assert last_val is not None and last_val.top1 == evaluated.top1
    if method == "pesf":
        assert report.student.extra_training_parameters > 0  # the adapter trained under DDP too


def torchrun(*args: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
               str(free_port()), "-m", "kdcli", *args]  # fmt: skip
    return subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip


def test_a_run_killed_under_torchrun_resumes_to_the_same_weights(tmp_path: Path, teacher_file: Path) -> None:
    common = ["distill", "--teacher", str(teacher_file), "--student", "resnet8", "--train-subset", "200", "--epochs",
              "3", "--batch-size", "50", "--device", "cpu", "--quiet"]  # fmt: skip
    straight = torchrun(*common, "--out", str(tmp_path / "straight"))
    assert straight.wait(timeout=600) == 0, straight.stderr.read() if straight.stderr else ""
    stopped = torchrun(*common[:-1], "--out", str(tmp_path / "stopped"))
    assert stopped.stderr is not None
    for line in stopped.stderr:
        if line.startswith("epoch   1/3"):
            stopped.send_signal(signal.SIGTERM)  # torchrun passes it on to both processes
            break
    stopped.wait(timeout=120)
    assert (tmp_path / "stopped" / "checkpoint.pt").is_file() and not (tmp_path / "stopped" / "report.json").exists()
    resumed = torchrun("distill", "--resume", str(tmp_path / "stopped"), "--quiet")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read() if resumed.stderr else ""
    expected = load_file(str(tmp_path / "straight" / "student.safetensors"))
    for name, tensor in load_file(str(tmp_path / "stopped" / "student.safetensors")).items():
        assert torch.equal(tensor, expected[name]), name


def rank_process(launcher: int, rank: int) -> int:
    """The pid of torchrun's worker ``rank`` (Linux: read from /proc)."""
    children = Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split()
    for child in children:
        environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        if f"RANK={rank}".encode() in environ:
            return int(child)
    raise AssertionError(f"no worker of rank {rank} among {children}")


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds torchrun's workers through /proc")
def test_one_rank_dying_keeps_the_last_checkpoint_for_resume(tmp_path: Path, teacher_file: Path) -> None:
    """Rank 1 killed outright after the first epoch: the job ends (torchrun stops rank 0), the first epoch's
    checkpoint stays whole, and `--resume` finishes the run."""
    out = tmp_path / "run"
    job = torchrun("distill", "--teacher", str(teacher_file), "--student", "resnet8", "--train-subset", "200",
                   "--epochs", "3", "--batch-size", "50", "--device", "cpu", "--out", str(out))  # fmt: skip
    assert job.stderr is not None
    for line in job.stderr:
        if line.startswith("epoch   1/3"):
            os.kill(rank_process(job.pid, 1), signal.SIGKILL)
            break
    assert job.wait(timeout=180) != 0
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] >= 1
    assert not (out / "student.safetensors").exists()
    resumed = torchrun("distill", "--resume", str(out), "--quiet")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read() if resumed.stderr else ""
    assert (out / "student.safetensors").is_file()
