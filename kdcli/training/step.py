"""The training step: run eagerly, or captured once as a CUDA graph and replayed.

One step is the frozen teacher's forward (no autograd), the student's forward, the method's named losses,
backward, and one optimizer step over the student and the method's own parameters. It adds the losses and the
correct predictions into device tensors, so an epoch reads the host once, at its end. The training progress (epochs
done, fractional) lives in a 0-dim device tensor that the step fills before each call and passes to the method, so a
schedule inside a loss moves under compile and inside a replayed graph alike. A mixed batch (mixup / CutMix,
kdcli.data.mixing) weighs the method's losses under each image's own labels by λ and under its partner's by 1-λ.

With CUDA graphs the whole step (forwards, backward and optimizer) is captured at the training batch size and
replayed for every full batch, after PyTorch's whole-network capture recipe (docs: "CUDA Graphs", notes/cuda):

- the first ``WARMUP_STEPS`` full batches run eagerly on a side stream. They are real training steps (every batch
  is trained on once, whichever way), and they compile, autotune and create the optimizer state the graph uses;
- each group's learning rate becomes a 0-dim device tensor read by the fused optimizer kernel; the scheduler
  ``fill_``\\ s it between replays, so schedules work inside the graph;
- the next full batch is copied into static input buffers and captured, with the gradients set to ``None`` so the
  captured backward allocates them; the capture runs nothing, so the graph is replayed at once for that batch;
- a batch of another size (an epoch's last, partial batch) runs eagerly on the same weights, gradients and
  optimizer state.

A CPU has no CUDA graphs: there the recorded "graph" reruns the step on the static buffers. No configuration reaches
that (``train.cuda_graphs`` needs CUDA); it lets the CPU tests run every line of this path but the capture itself.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from kdcli.data.mixing import Mix
from kdcli.errors import RunFailed, option
from kdcli.interfaces import ModelOutput
from kdcli.methods.base import Method
from kdcli.models.wrappers import FrozenTeacher, NormalizedModel
from kdcli.runtime.acceleration import Acceleration
from kdcli.runtime.distributed import SINGLE, Distributed, all_reduce_sum

WARMUP_STEPS = 3


@dataclass(kw_only=True)
class StepParts:
    """What a training step runs: the two models, the method's losses, the optimizer and the precision, and this
    process's place among the processes of the run (kdcli.runtime.distributed)."""

    student: NormalizedModel
    teacher: FrozenTeacher | None
    method: Method
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    acceleration: Acceleration
    device: torch.device
    batch_size: int
    """Images this process gets from a full batch (the global batch under torchrun is split over the processes)."""
    place: Distributed = SINGLE


class Trainable(nn.Module):
    """The student and the method's losses as one module: what DistributedDataParallel wraps (the student's and the
    method's parameters together) and torch.compile compiles."""

    def __init__(self, student: NormalizedModel, method: Method) -> None:
        super().__init__()
        self.student = student
        self.method = method

    def forward(
        self, images: Tensor, teacher: ModelOutput | None, labels: Tensor, progress: Tensor, mix: Mix | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        student = self.student.outputs(images)
        losses = self.method(student, teacher, labels, progress)
        if mix is None:
            return student.logits, losses
        partners = self.method(student, teacher, mix.partner_labels, progress)
        weight = mix.weight
        return student.logits, {name: weight * loss + (1 - weight) * partners[name] for name, loss in losses.items()}


def trainable_module(parts: StepParts) -> nn.Module:
    """The student and the method, wrapped in DistributedDataParallel under torchrun (the teacher never is)."""
    trainable = Trainable(parts.student, parts.method)
    if not parts.place.active:
        return trainable
    device_ids = [parts.device] if parts.device.type == "cuda" else None
    # A graph-captured step needs DDP's static graph (the same buckets and hooks at every step).
    return nn.parallel.DistributedDataParallel(
        trainable, device_ids=device_ids, static_graph=parts.acceleration.cuda_graphs
    )


class TrainStep:
    """One eager optimizer step per call; ``means()`` gives the epoch's averages over every process."""

    def __init__(self, parts: StepParts, autocast_cache: bool = True) -> None:
        self.parts = parts
        acceleration = parts.acceleration
        self.autocast = acceleration.autocast(parts.device, cache=autocast_cache)
        self.forward: Callable[..., tuple[Tensor, dict[str, Tensor]]] = acceleration.compiled(trainable_module(parts))
        self.teacher_forward: Callable[..., Any] | None = (
            acceleration.frozen(parts.teacher.predict) if parts.teacher is not None else None
        )
        self.progress = torch.zeros((), device=parts.device)
        self.share = torch.ones((), device=parts.device)
        self.sums: dict[str, Tensor] = {}
        self.correct = torch.zeros((), device=parts.device)
        """Correct predictions; in a mixed batch an image counts λ for its own label and 1-λ for its partner's."""
        self.seen = 0

    def begin_epoch(self) -> None:
        for total in (*self.sums.values(), self.correct):
            total.zero_()
        self.seen = 0

    def set_inputs(self, progress: float, share: float) -> None:
        """The training progress, and this process's weight: its images over an even share of the global batch (1
        for one process, and for every full batch split evenly), so that DDP's mean of the gradients is the mean over
        the global batch."""
        self.progress.fill_(progress)
        self.share.fill_(share)

    def __call__(
        self, images: Tensor, labels: Tensor, progress: float, share: float = 1.0, mix: Mix | None = None
    ) -> None:
        self.set_inputs(progress, share)
        self.parts.optimizer.zero_grad(set_to_none=True)
        self.update(images, labels, mix)
        self.seen += labels.numel()

    def update(self, images: Tensor, labels: Tensor, mix: Mix | None) -> None:
        """Forward, backward, optimizer step, and the running sums; the gradients must be zero or ``None``. The
        teacher labels exactly the (mixed) images the student sees."""
        parts = self.parts
        with self.autocast():
            teacher = self.teacher_forward(images) if self.teacher_forward else None
            logits, losses = self.forward(images, teacher, labels, self.progress, mix)
        loss = torch.stack(list(losses.values())).sum()
        parts.scaler.scale(loss * self.share).backward()
        parts.scaler.step(parts.optimizer)
        parts.scaler.update()
        batch = labels.numel()
        for name, value in (("loss", loss), *losses.items()):
            if name not in self.sums:
                self.sums[name] = torch.zeros((), device=parts.device)
            self.sums[name].add_(value.detach().float() * batch)
        predicted = logits.detach().argmax(1)
        if mix is None:
            self.correct.add_(predicted.eq(labels).sum())
        else:
            own, partner = predicted.eq(labels).sum(), predicted.eq(mix.partner_labels).sum()
            self.correct.add_(torch.lerp(partner.float(), own.float(), mix.weight))

    def means(self) -> tuple[dict[str, float], float]:
        """The mean of each loss term (``loss`` their sum) and the top-1 over the epoch so far and over every
        process, read from the device in one transfer (and reduced over the processes in one call)."""
        seen = torch.tensor(float(self.seen), device=self.parts.device)
        totals = all_reduce_sum(torch.stack([*self.sums.values(), self.correct, seen])).tolist()
        losses = {name: total / totals[-1] for name, total in zip(self.sums, totals[:-2], strict=True)}
        return losses, 100.0 * totals[-2] / totals[-1]


class GraphedStep(TrainStep):
    """The step captured as one CUDA graph at the training batch size (see the module's docstring)."""

    def __init__(self, parts: StepParts) -> None:
        super().__init__(parts, autocast_cache=False)
        self.batch_size = parts.batch_size
        self.cuda = parts.device.type == "cuda"
        self.warmed_up = 0
        self.static_images: Tensor | None = None
        self.static_labels: Tensor | None = None
        self.static_mix: Mix | None = None
        self.graph: torch.cuda.CUDAGraph | None = None

    @property
    def captured(self) -> bool:
        """The static buffers exist from the capture on (on the CPU too, where there is no graph)."""
        return self.static_images is not None

    def begin_epoch(self) -> None:
        super().begin_epoch()
        device_learning_rates(self.parts.optimizer)  # again after a resume has loaded the optimizer's groups

    def __call__(
        self, images: Tensor, labels: Tensor, progress: float, share: float = 1.0, mix: Mix | None = None
    ) -> None:
        self.set_inputs(progress, share)
        if labels.numel() != self.batch_size:
            # Before the capture, gradients may be freed; after it, they are the graph's buffers: zero them.
            self.parts.optimizer.zero_grad(set_to_none=not self.captured)
            self.uncaptured_update(images, labels, mix)
        elif self.captured:
            assert self.static_images is not None and self.static_labels is not None
            self.static_images.copy_(images)
            self.static_labels.copy_(labels)
            if mix is not None and self.static_mix is not None:  # a run mixes every batch or none
                self.static_mix.partner_labels.copy_(mix.partner_labels)
                self.static_mix.weight.copy_(mix.weight)
            self.replay()
        elif self.warmed_up < WARMUP_STEPS:
            with self.side_stream():
                self.parts.optimizer.zero_grad(set_to_none=True)
                self.uncaptured_update(images, labels, mix)
            self.warmed_up += 1
        else:
            self.capture(images, labels, mix)
            self.replay()
        self.seen += labels.numel()

    def uncaptured_update(self, images: Tensor, labels: Tensor, mix: Mix | None) -> None:
        """An eager step of this path: warm-up and partial batches, which a capturable AdamW warns about."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*capturable=True.*running without")
            self.update(images, labels, mix)

    @contextlib.contextmanager
    def side_stream(self) -> Iterator[None]:
        """Warm-up runs on a side stream, as the capture itself does (PyTorch's recipe); a no-op on the CPU."""
        if not self.cuda:
            yield
            return
        stream = torch.cuda.Stream(self.parts.device)
        stream.wait_stream(torch.cuda.current_stream(self.parts.device))
        with torch.cuda.stream(stream):
            yield
        torch.cuda.current_stream(self.parts.device).wait_stream(stream)

    def capture(self, images: Tensor, labels: Tensor, mix: Mix | None) -> None:
        self.static_images, self.static_labels = images.clone(), labels.clone()
        self.static_mix = Mix(mix.partner_labels.clone(), mix.weight.clone()) if mix is not None else None
        self.parts.optimizer.zero_grad(set_to_none=True)
        if not self.cuda:
            return
        graph = torch.cuda.CUDAGraph()
        try:
            # On the run's device, on a stream of its own (torch's shared capture stream lives on the device that
            # was current when it was first made); thread_local: a DataLoader's pin-memory thread may call CUDA.
            with (
                torch.cuda.device(self.parts.device),
                torch.cuda.graph(graph, stream=torch.cuda.Stream(self.parts.device), capture_error_mode="thread_local"),
            ):
                self.update(self.static_images, self.static_labels, self.static_mix)
        except RuntimeError as error:
            # A failed capture raises again on leaving the graph's context; the first error is the one to show.
            first = error.__context__ if isinstance(error.__context__, RuntimeError) else error
            raise RunFailed(
                f"the training step could not be captured in a CUDA graph ({str(first).splitlines()[0]}); a step "
                "that reads the host (.item(), data-dependent shapes) or compiles during capture cannot be; "
                f"rerun with {option('train.cuda_graphs', 'false')}"
            ) from error
        self.graph = graph

    def replay(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        else:  # the CPU: see the module's docstring; a captured backward writes fresh gradients, so zero them
            assert self.static_images is not None and self.static_labels is not None
            self.parts.optimizer.zero_grad(set_to_none=True)
            self.update(self.static_images, self.static_labels, self.static_mix)


def device_learning_rates(optimizer: torch.optim.Optimizer) -> None:
    """Turn each group's learning rate into a 0-dim tensor on its parameters' device (kept when it is one already):
    a captured optimizer step reads the rate from there, and torch's schedulers ``fill_`` it in place."""
    for group in optimizer.param_groups:
        if not isinstance(group["lr"], Tensor):
            group["lr"] = torch.tensor(float(group["lr"]), device=group["params"][0].device)


def make_train_step(parts: StepParts) -> TrainStep:
    return GraphedStep(parts) if parts.acceleration.cuda_graphs else TrainStep(parts)
