"""The fast path's switches: mixed precision, channels-last memory, torch.compile and CUDA graphs, and the
evaluation batch.

Each switch defaults to on for CUDA and off elsewhere (``None`` in the configuration means automatic), so the
CPU path stays the plain eager loop, but for one: channels-last is on for the CPU too, where oneDNN's convolutions
run 1.26-1.47x faster a training epoch in it (docs/results.md, "Channels-last on the CPU"; the reference loop runs
channels-last on every device). Compiled forwards share their parameters with the eager modules, so
checkpoints, evaluation and export do not change. Each forward is compiled for static shapes: the full batch and
the epoch's last, partial batch get one specialization each, rather than one slower dynamic-shape kernel set.
The frozen teacher is compiled with inductor's freezing, which treats its weights as constants and folds its
BatchNorm into the convolutions. CUDA graphs capture the whole training step (kdcli.training.step); they work with and
without compile, and not with fp16, whose dynamic loss scaling reads the host between steps. Evaluation runs at 512
images a forward per GPU and 64 per CPU process, where larger batches outgrow the caches (measured with
bench/eval_batch.py: 512 costs 1.5-2.3x more per image than 64 for the CIFAR zoo); evaluated in eval mode, each image's
prediction does not depend on its batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch._inductor import config as inductor_config

from kdcli.config import TrainConfig
from kdcli.errors import UsageError, option

GPU_EVAL_BATCH = 512
CPU_EVAL_BATCH = 64


@dataclass(frozen=True)
class Acceleration:
    precision: str
    channels_last: bool
    compile: bool
    cuda_graphs: bool
    eval_batch_size: int

    def autocast(
        self, device: torch.device, cache: bool = True
    ) -> Callable[[], contextlib.AbstractContextManager[Any]]:
        """bf16 or fp16 autocast (losses stay in float32), or nothing for fp32. ``cache=False`` for a region that
        is captured into a CUDA graph, as PyTorch's CUDA-graph notes require."""
        if self.precision == "fp32":
            return contextlib.nullcontext
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return lambda: torch.autocast(device_type=device.type, dtype=dtype, cache_enabled=cache)

    def grad_scaler(self, device: torch.device) -> torch.amp.GradScaler:
        """Loss scaling for fp16 (a no-op scaler otherwise, so the step has one shape)."""
        return torch.amp.GradScaler(device.type, enabled=self.precision == "fp16")

    def compiled(self, function: Callable[..., Any]) -> Callable[..., Any]:
        """``function`` compiled for static shapes, or itself when compile is off."""
        return torch.compile(function, dynamic=False) if self.compile else function

    def frozen(self, predict: Callable[..., Any]) -> Callable[..., Any]:
        """The frozen teacher's forward, compiled with inductor's freezing (weights folded as constants, BatchNorm
        into the convolutions) when compile is on. Freezing applies to graphs compiled without autograd, so the
        call runs under ``no_grad``; the patch is scoped to these calls, never set process-wide."""
        if not self.compile:
            return predict
        compiled = torch.compile(predict, dynamic=False)

        def frozen_predict(*args: Any) -> Any:
            with inductor_config.patch(freezing=True), torch.no_grad():
                return compiled(*args)

        return frozen_predict


def resolve_acceleration(train: TrainConfig, device: torch.device, cycled_momentum: bool = False) -> Acceleration:
    """The switches for a run on ``device``; ``cycled_momentum``: the schedule changes SGD's momentum every step,
    which a captured optimizer kernel would keep at its capture-time value, so CUDA graphs stay off."""
    cuda = device.type == "cuda"
    precision = train.precision if train.precision != "auto" else ("bf16" if cuda else "fp32")
    if train.cuda_graphs and not cuda:
        raise UsageError(
            f"{option('train.cuda_graphs')} needs a CUDA device; drop it or use {option('train.device', 'cuda')}"
        )
    if train.cuda_graphs and precision == "fp16":
        raise UsageError(
            f"{option('train.cuda_graphs')} cannot capture fp16's dynamic loss scaling; use "
            f"{option('train.precision', 'bf16')} or {option('train.cuda_graphs', 'false')}"
        )
    if train.cuda_graphs and cycled_momentum:
        raise UsageError(
            "a CUDA graph cannot follow schedule.cycle_momentum (SGD's momentum is fixed in the captured "
            "kernel); turn one of them off"
        )
    auto_graphs = cuda and precision != "fp16" and not cycled_momentum
    cuda_graphs = auto_graphs if train.cuda_graphs is None else train.cuda_graphs
    compile_ = cuda if train.compile is None else train.compile
    auto_channels_last = cuda or device.type == "cpu"
    channels_last = auto_channels_last if train.channels_last is None else train.channels_last
    eval_batch_size = train.eval_batch_size or (GPU_EVAL_BATCH if cuda else CPU_EVAL_BATCH)
    return Acceleration(precision, channels_last, compile_, cuda_graphs, eval_batch_size)
