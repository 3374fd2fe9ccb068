"""One run's state — models, method, optimizer, history — and how it is built from a configuration."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from kdcli.catalog import method_spec
from kdcli.config import RunConfig, TrainConfig
from kdcli.data import DataBundle, build_data
from kdcli.errors import UsageError, option
from kdcli.interfaces import MethodContext, ModelOutput
from kdcli.io.model_file import apply_transform
from kdcli.methods.base import Method
from kdcli.models.features import model_info
from kdcli.models.wrappers import NormalizedModel
from kdcli.records import EpochRecord
from kdcli.reporting.report import TeacherCheck
from kdcli.runtime.acceleration import Acceleration, resolve_acceleration
from kdcli.runtime.distributed import SINGLE, Distributed, broadcast, device_for
from kdcli.runtime.loading import Teacher, build_student, load_teacher, resolve_device
from kdcli.training.optim import StepSchedule, load_optimizer_state, make_optimizer, optimizer_state
from kdcli.training.step import StepParts, TrainStep, make_train_step


@dataclass(kw_only=True)
class Run:
    """Everything one training run holds while it runs."""

    config: RunConfig
    run_dir: Path
    device: torch.device
    data: DataBundle
    student: NormalizedModel
    method: Method
    teacher: Teacher | None
    acceleration: Acceleration
    scaler: torch.amp.GradScaler
    place: Distributed = SINGLE
    history: list[EpochRecord] = field(default_factory=list)
    teacher_check: TeacherCheck | None = None
    teacher_eval: list[ModelOutput] | None = None
    best: dict[str, Any] | None = None
    epoch: int = 0
    optimizer: torch.optim.Optimizer = field(init=False)
    scheduler: StepSchedule = field(init=False)
    step: TrainStep = field(init=False)

    @property
    def autocast(self) -> Callable[[], contextlib.AbstractContextManager[Any]]:
        return self.acceleration.autocast(self.device)

    def prepare_training(self) -> None:
        """The features each model delivers, the optimizer, the schedule and the training step over the current
        modules, made together: the step is compiled (and captured in a CUDA graph) over this optimizer. Called
        again after a pre-stage that replaced student parameters (PTP's classifier)."""
        self.student.read_features(self.method.student_features)
        if self.teacher is not None:
            self.teacher.module.read_features(self.method.teacher_features)
        self.optimizer, self.scheduler = make_optimizer(
            self.config,
            self.student,
            self.method.parameter_groups(),
            len(self.data.train),
            self.acceleration.cuda_graphs,
        )
        train = self.data.train
        local_batch = train.rank_slice(train.batch_size)  # this process's images of a full global batch
        parts = StepParts(
            student=self.student,
            teacher=self.teacher.module if self.teacher else None,
            method=self.method,
            optimizer=self.optimizer,
            scaler=self.scaler,
            acceleration=self.acceleration,
            device=self.device,
            batch_size=local_batch.stop - local_batch.start,
            place=self.place,
        )
        self.step = make_train_step(parts)

    def state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "student": self.student.model.state_dict(),
            "method": self.method.state_dict(),
            "optimizer": optimizer_state(self.optimizer),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "history": [record.flat() for record in self.history],
            "teacher_check": self.teacher_check.model_dump() if self.teacher_check else None,
            "best": self.best,
            "method_report": self.method.report(),
            "rng": torch.get_rng_state(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.student.model.load_state_dict(state["student"])
        self.method.load_state_dict(state["method"])
        load_optimizer_state(self.optimizer, state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.history = [EpochRecord.model_validate(record) for record in state["history"]]
        self.teacher_check = TeacherCheck.model_validate(state["teacher_check"]) if state["teacher_check"] else None
        self.best = state["best"]
        self.method.restore_report(state["method_report"])
        self.epoch = int(state["epoch"])
        torch.set_rng_state(state["rng"])


def method_class(name: str) -> type[Method]:
    """The implementation of a catalogued method, checked to be a ``Method``."""
    implementation = method_spec(name).load()
    if not (isinstance(implementation, type) and issubclass(implementation, Method)):
        raise UsageError(f"method {name!r}: {method_spec(name).implementation} is not a kdcli Method subclass")
    return implementation


def evaluation_batch(train: TrainConfig, acceleration: Acceleration, processes: int) -> int:
    """The global evaluation batch: as given (split over torchrun's processes, as the training batch), or the
    device's default for each of the ``processes`` (kdcli.runtime.acceleration)."""
    return train.eval_batch_size or acceleration.eval_batch_size * processes


def default_run_dir(config: RunConfig, teacher_arch: str | None) -> Path:
    """``<root>/<time>-<method>-<teacher>-<student>``, or ``<root>/<time>-train-<model>``."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    if teacher_arch is None:
        name = f"{stamp}-train-{config.student.arch}"
    else:
        name = f"{stamp}-{config.method.name}-{teacher_arch}-{config.student.arch}"
    return Path(config.output.root).expanduser() / name.replace("/", "_")


def setup(config: RunConfig, run_dir: Path | None, data: DataBundle | None = None, place: Distributed = SINGLE) -> Run:
    """Build data (unless given, as benchmarks do), models, method, optimizer and schedule for a configuration;
    ``place`` is this process's rank among torchrun's processes (the process group joined already)."""
    device = resolve_device(device_for(place, config.train.device))
    acceleration = resolve_acceleration(config.train, device, cycled_momentum=config.schedule.cycle_momentum)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)  # kernels, streams and graphs of this run go to the device it names
    if config.train.sync_batchnorm and device.type != "cuda":
        raise UsageError(
            f"{option('train.sync_batchnorm')} needs CUDA (torch's SyncBatchNorm runs on GPUs only); drop it on the CPU"
        )
    torch.manual_seed(config.train.seed)
    if data is None:
        train = config.train
        shard = (place.rank, place.world_size)
        eval_batch = evaluation_batch(train, acceleration, place.world_size)
        data = build_data(config.data, device, train.batch_size, eval_batch, train.seed, shard)
        available = data.train.num_samples + (data.val.num_samples if data.val is not None else 0)
        if config.data.train_subset is not None and config.data.train_subset > available:
            subset = option("data.train_subset", config.data.train_subset)
            data.notes.append(
                f"{subset} is more than the {available:,} training images of {data.name}: all {available:,} are used"
            )
    spec = method_spec(config.method.name)
    implementation = method_class(spec.name)
    teacher = load_teacher(config, data, device) if spec.needs_teacher else None
    student = build_student(config, data, device)
    context = MethodContext(
        data.num_classes,
        model_info(student.model, student.arch),
        model_info(teacher.module.model, teacher.arch) if teacher else None,
        config.train.epochs,
    )
    method = implementation(spec.options.model_validate(config.method_options), context).to(device)
    transform = method.student_transform()
    if transform is not None:
        student.model = apply_transform(student.model, transform).to(device)
    if config.train.sync_batchnorm and place.active:
        student.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(student.model)
    if acceleration.channels_last:
        for wrapped in [student] + ([teacher.module] if teacher else []):
            wrapped.to_channels_last()
    run_dir = run_dir or broadcast(default_run_dir(config, teacher.arch if teacher else None))  # rank 0's clock
    run = Run(
        config=config,
        run_dir=run_dir,
        device=device,
        data=data,
        student=student,
        method=method,
        teacher=teacher,
        acceleration=acceleration,
        scaler=acceleration.grad_scaler(device),
        place=place,
    )
    if device.type == "cuda" and (acceleration.compile or acceleration.cuda_graphs):
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest convolutions once
    run.prepare_training()
    return run
