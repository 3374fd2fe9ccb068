"""Several processes through torch.distributed, as ``torchrun`` starts them (``torchrun`` with N processes per node
running ``python -m kdcli distill ...``): one process per GPU (NCCL), or per CPU worker (gloo).

The contract with the rest of the engine:
- every rank holds the whole data set; each global batch is split into contiguous, disjoint per-rank slices of the
  same seeded permutation and augmentation (kdcli.data.loaders), so the ranks together see exactly what one process
  sees, and ``train.batch_size`` is the global batch;
- the student and the method's trainable parts are wrapped together in DistributedDataParallel; the frozen teacher
  is not (it is replicated, in eval mode, without gradients); each rank's loss is weighted by its share of the
  global batch, so an uneven last batch averages as one process would;
- metrics are reduced once per epoch, evaluation gathers every rank's predictions (no sample is evaluated twice), and
  only rank 0 writes files and prints; pre-stage passes of the teacher run on rank 0 and are broadcast.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from kdcli.errors import UsageError, option


@dataclass(frozen=True)
class Distributed:
    """This process's place among the processes of a run (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = Distributed()


def from_environment() -> Distributed:
    """The process group torchrun describes in the environment (RANK, WORLD_SIZE, LOCAL_RANK), or a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return SINGLE
    return Distributed(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))


def initialize(place: Distributed, device: torch.device) -> bool:
    """Join the process group (NCCL on CUDA, gloo elsewhere); a no-op for a single process or when already joined.
    True when this call joined it (and the caller is to ``leave`` it)."""
    if not place.active or dist.is_initialized():
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "0")  # needed to capture collectives in CUDA graphs
        dist.init_process_group(backend, device_id=device)
    else:
        dist.init_process_group(backend)
    if dist.get_world_size() != place.world_size:
        raise UsageError(f"WORLD_SIZE is {place.world_size} but the process group has {dist.get_world_size()}")
    return True


def device_for(place: Distributed, requested: str) -> str:
    """Under torchrun on CUDA each process takes the GPU of its local rank; ``cuda:N`` with several processes is an
    error (they would share one GPU)."""
    if not place.active:
        return requested
    if requested.startswith("cuda:"):
        raise UsageError(
            f"under torchrun each process takes the GPU of its LOCAL_RANK; use {option('train.device', 'cuda')} or auto"
        )
    if requested in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{place.local_rank}"
    return "cpu" if requested == "auto" else requested


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """The sum over the ranks, in place (the tensor itself for a single process)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        work = tensor.cuda() if dist.get_backend() == "nccl" and tensor.device.type == "cpu" else tensor
        dist.all_reduce(work, op=dist.ReduceOp.SUM)
        tensor.copy_(work)
    return tensor


def gather_rows(tensor: Tensor) -> Tensor:
    """Every rank's rows, concatenated in rank order (ranks may hold different numbers of rows)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return tensor
    home = tensor.device
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else home
    tensor = tensor.to(device)
    sizes = [torch.zeros((), dtype=torch.long, device=device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor(tensor.shape[0], device=device))
    largest = int(max(sizes))
    padded = torch.zeros((largest, *tensor.shape[1:]), dtype=tensor.dtype, device=device)
    padded[: tensor.shape[0]] = tensor
    gathered = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(gathered, padded)
    return torch.cat([part[: int(size)] for part, size in zip(gathered, sizes, strict=True)]).to(home)


def broadcast(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (any picklable object)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def leave() -> None:
    """Leave the process group once every rank is done with it: a barrier, then ``destroy_process_group``. Without
    it a finished run's process could abort at interpreter exit (gloo's threads torn down while joinable: SIGABRT,
    "terminate called without an active exception"), and torchrun reported a run that had written everything as
    failed."""
    if dist.is_initialized():
        if dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()
