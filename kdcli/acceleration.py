"""The fast path: mixed precision, channels-last memory, torch.compile and CUDA graphs.

Each switch defaults to on for CUDA and off elsewhere (``None`` in the configuration means automatic), so the
CPU path stays the plain eager loop. Compiled forwards share their parameters with the eager modules, so
checkpoints, evaluation and export do not change. CUDA graphs come from ``torch.compile(mode="reduce-overhead")``
(cudagraph trees), which records one graph per input shape, so the last, partial batch gets a graph of its own.
The frozen teacher is compiled separately from the student (it runs without autograd).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from kdcli.config import TrainConfig
from kdcli.errors import UsageError


@dataclass(frozen=True)
class Acceleration:
    precision: str
    channels_last: bool
    compile: bool
    cuda_graphs: bool

    def autocast(self, device: torch.device) -> Callable[[], contextlib.AbstractContextManager[Any]]:
        """bf16 or fp16 autocast (losses stay in float32), or nothing for fp32."""
        if self.precision == "fp32":
            return contextlib.nullcontext
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return lambda: torch.autocast(device_type=device.type, dtype=dtype)

    def grad_scaler(self, device: torch.device) -> torch.amp.GradScaler:
        """Loss scaling for fp16 (a no-op scaler otherwise, so the step has one shape)."""
        return torch.amp.GradScaler(device.type, enabled=self.precision == "fp16")

    def compiled(self, function: Callable[..., Any]) -> Callable[..., Any]:
        if not self.compile:
            return function
        return torch.compile(function, mode="reduce-overhead" if self.cuda_graphs else None)


def resolve_acceleration(train: TrainConfig, device: torch.device) -> Acceleration:
    cuda = device.type == "cuda"
    precision = train.precision if train.precision != "auto" else ("bf16" if cuda else "fp32")
    cuda_graphs = cuda if train.cuda_graphs is None else train.cuda_graphs
    if cuda_graphs and not cuda:
        raise UsageError("--cuda-graphs needs a CUDA device; drop it or use --device cuda")
    if cuda_graphs and train.compile is False:
        raise UsageError("--cuda-graphs works through torch.compile; drop --no-compile")
    compile_ = cuda_graphs or (cuda if train.compile is None else train.compile)
    channels_last = cuda if train.channels_last is None else train.channels_last
    return Acceleration(precision, channels_last, compile_, cuda_graphs)
