"""The training loop behind ``kdcli train`` and ``kdcli distill``.

One step: the frozen teacher's outputs (no autograd), the student's logits, the strategy's named losses, one
optimizer step over the student and the strategy's own parameters (kdcli.step: run eagerly, or replayed as one CUDA
graph), one scheduler step. After every epoch the splits are evaluated, ``metrics.jsonl`` is rewritten and a
resumable checkpoint is written atomically, so a run killed at any point resumes from its last finished epoch and
ends at the same weights as an uninterrupted one.
A non-finite loss stops the run before anything of that epoch is saved: the last good checkpoint stays.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn

from kdcli import __version__
from kdcli.acceleration import Acceleration, resolve_acceleration
from kdcli.checkpoint import (
    CHECKPOINT_NAME,
    ModelCard,
    atomic_write_text,
    conv_in_chans,
    load_checkpoint,
    load_model,
    load_weights,
    read_card,
    read_model_file,
    save_checkpoint,
    save_model,
    sha256_file,
)
from kdcli.config import RunConfig, ScheduleConfig, dump, read_yaml, resolve
from kdcli.data import DataBundle, build_data
from kdcli.errors import Interrupted, RunFailed, UsageError
from kdcli.metrics import classification_metrics, count_macs, count_parameters
from kdcli.models.factory import create_model, resolve_arch, shadow_hint
from kdcli.models.sps import sps_options
from kdcli.models.wrappers import FrozenTeacher, NormalizedModel
from kdcli.report import build_report, write_reports
from kdcli.step import TrainStep, make_train_step
from kdcli.strategies import Strategy, TeacherOutput, get_strategy

ASSETS_DIR = Path(__file__).resolve().parent / "assets"


class Reporter:
    """Receives progress; the CLI shows it with rich on stderr, the Python API is silent by default."""

    def note(self, message: str) -> None:
        """A one-line remark for the user (a warning, the teacher check)."""

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None: ...

    def advance(self) -> None: ...

    def end_epoch(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


@dataclass
class RunResult:
    run_dir: Path
    report: dict[str, Any]
    student_path: Path


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then the CPU; an explicit device that is absent is a usage error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError("--device mps was asked for but MPS is not available; use --device cpu or auto")
    return device


def resolve_checkpoint_path(reference: str) -> Path:
    """A checkpoint reference: a path, or ``kdcli:NAME`` for a model file shipped with kdcli."""
    if reference.startswith("kdcli:"):
        return ASSETS_DIR / reference.removeprefix("kdcli:")
    return Path(reference).expanduser()


def lr_factor(schedule: ScheduleConfig, epoch: float, epochs: int) -> float:
    """The multiplier of each group's base learning rate at a fractional epoch (a step-wise schedule).

    ``step`` drops by ``gamma`` at each milestone epoch (RepDistiller's MultiStepLR); ``cosine`` anneals to
    ``final_factor``; ``onecycle`` warms up from 1/25 of the rate over ``warmup_epochs`` (30% of the run when
    unset) and then anneals to zero by a cosine, as torch's OneCycleLR does. The other schedules warm up linearly
    from 1% of the rate over ``warmup_epochs``.
    """
    warmup = schedule.warmup_epochs
    if schedule.name == "onecycle" and warmup == 0:
        warmup = 0.3 * epochs
    if warmup > 0 and epoch < warmup:
        return 0.04 + 0.96 * epoch / warmup if schedule.name == "onecycle" else max(epoch / warmup, 0.01)
    if schedule.name == "constant":
        return 1.0
    if schedule.name == "step":
        return float(schedule.gamma ** sum(1 for m in schedule.milestones if int(epoch) >= m))
    progress = min(1.0, (epoch - warmup) / max(epochs - warmup, 1e-9))
    floor = schedule.final_factor if schedule.name == "cosine" else 0.0
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class Teacher:
    module: FrozenTeacher
    arch: str
    sha256: str | None
    path: Path | None


def load_teacher(config: RunConfig, data: DataBundle, device: torch.device) -> Teacher:
    """The frozen teacher, refused when it has no trained weights (unless explicitly allowed)."""
    spec = config.teacher
    if spec.checkpoint is None and not spec.pretrained:
        if not config.train.allow_untrained_teacher:
            raise UsageError(
                "the teacher has no trained weights: pass --teacher-ckpt FILE (or --teacher FILE.safetensors); "
                "--allow-untrained-teacher distills from random weights for smoke tests"
            )
        if spec.arch is None:
            raise UsageError("name the teacher architecture: --teacher ARCH")
        model = create_model(spec.arch, data.num_classes, spec.in_chans or data.in_chans, kwargs=spec.kwargs)
        return Teacher(
            FrozenTeacher(model, data.mean, data.std, spec.in_chans or data.in_chans).to(device),
            spec.arch,
            None,
            None,
        )
    if spec.checkpoint is None:  # timm hub weights
        assert spec.arch is not None
        model = create_model(spec.arch, data.num_classes, spec.in_chans or 3, pretrained=True, kwargs=spec.kwargs)
        cfg = getattr(model, "pretrained_cfg", {})
        mean, std = cfg.get("mean", data.mean), cfg.get("std", data.std)
        return Teacher(FrozenTeacher(model, mean, std, spec.in_chans or 3).to(device), spec.arch, None, None)
    path = resolve_checkpoint_path(spec.checkpoint)
    card = read_card(path)
    if card is not None:  # checked before building, so the message names the real mismatch
        if spec.arch is not None and resolve_arch(spec.arch) != card.arch:
            raise UsageError(
                f"{path} holds a {card.arch!r}, not the {spec.arch!r} the teacher is configured as; "
                "drop the teacher arch (the file names it) or pass the matching file"
            )
        if card.num_classes != data.num_classes:
            raise UsageError(
                f"the teacher {path} predicts {card.num_classes} classes but {data.name} has {data.num_classes}"
            )
    model, card = load_model(path, arch=None if card else spec.arch, num_classes=data.num_classes)
    mean, std = (card.mean, card.std) if card else (data.mean, data.std)
    in_chans = card.in_chans if card else conv_in_chans(model.state_dict())
    arch = card.arch if card else str(spec.arch)
    return Teacher(FrozenTeacher(model, mean, std, in_chans).to(device), arch, sha256_file(path), path)


def build_student(config: RunConfig, data: DataBundle, device: torch.device) -> NormalizedModel:
    spec = config.student
    if spec.arch is None:
        raise UsageError("name the student architecture: --student ARCH (or --model ARCH for kdcli train)")
    in_chans = spec.in_chans or data.in_chans
    model = create_model(spec.arch, data.num_classes, in_chans, pretrained=spec.pretrained, kwargs=spec.kwargs)
    if spec.checkpoint is not None:
        path = resolve_checkpoint_path(spec.checkpoint)
        tensors, _ = read_model_file(path)
        load_weights(model, tensors, path)
    return NormalizedModel(model, data.mean, data.std, in_chans).to(device)


def default_run_dir(config: RunConfig, teacher_arch: str | None) -> Path:
    """``<root>/<time>-<method>-<teacher>-<student>``, or ``<root>/<time>-train-<model>``."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    if teacher_arch is None:
        name = f"{stamp}-train-{config.student.arch}"
    else:
        name = f"{stamp}-{config.method.name}-{teacher_arch}-{config.student.arch}"
    return Path(config.output.root) / name.replace("/", "_")


def config_yaml(config: RunConfig) -> str:
    header = (
        f"# kdcli {__version__} resolved configuration; repeat the run with: kdcli {{train|distill}} --config FILE\n"
    )
    return header + yaml.safe_dump(dump(config), sort_keys=False)


@dataclass
class Run:
    """Everything one training run holds while it runs."""

    config: RunConfig
    run_dir: Path
    device: torch.device
    data: DataBundle
    student: NormalizedModel
    strategy: Strategy
    teacher: Teacher | None
    acceleration: Acceleration
    scaler: torch.amp.GradScaler
    history: list[dict[str, Any]] = field(default_factory=list)
    teacher_check: dict[str, Any] | None = None
    teacher_eval: list[TeacherOutput] | None = None
    best: dict[str, Any] | None = None
    epoch: int = 0
    optimizer: torch.optim.Optimizer = field(init=False)
    scheduler: torch.optim.lr_scheduler.LRScheduler = field(init=False)
    step: TrainStep = field(init=False)

    @property
    def autocast(self) -> Callable[[], contextlib.AbstractContextManager[Any]]:
        return self.acceleration.autocast(self.device)

    def prepare_training(self) -> None:
        """The optimizer, the schedule and the training step over the current modules, made together: the step is
        compiled (and captured in a CUDA graph) over this optimizer. Called again after a pre-stage that replaced
        student parameters (PTP's classifier)."""
        self.optimizer, self.scheduler = make_optimizer(
            self.config, self.student, self.strategy, len(self.data.train), self.acceleration.cuda_graphs
        )
        self.step = make_train_step(self)

    def state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "student": self.student.model.state_dict(),
            "strategy": self.strategy.state_dict(),
            "optimizer": optimizer_state(self.optimizer),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "history": self.history,
            "teacher_check": self.teacher_check,
            "best": self.best,
            "strategy_report": self.strategy.report(),
            "rng": torch.get_rng_state(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.student.model.load_state_dict(state["student"])
        self.strategy.load_state_dict(state["strategy"])
        load_optimizer_state(self.optimizer, state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.history = list(state["history"])
        self.teacher_check = state["teacher_check"]
        self.best = state["best"]
        self.strategy.restore_report(state["strategy_report"])
        self.epoch = int(state["epoch"])
        torch.set_rng_state(state["rng"])


def optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's state dict with plain learning rates (a 0-dim device tensor under CUDA graphs), so a
    checkpoint resumes the same on any device, with or without CUDA graphs (see ``load_optimizer_state``)."""
    state = optimizer.state_dict()
    for group in state["param_groups"]:
        group["lr"] = float(group["lr"])
    return state


IMPLEMENTATION_FLAGS = ("fused", "foreach", "capturable")


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """Load a checkpoint's optimizer state, keeping this machine's implementation flags (fused, foreach,
    capturable): torch would bring back the saving machine's, and e.g. a run started on the CPU would then resume
    on CUDA with an optimizer that cannot be captured. torch places the state (AdamW's step) by these flags."""
    saved = {**saved, "param_groups": [dict(group) for group in saved["param_groups"]]}
    for saved_group, group in zip(saved["param_groups"], optimizer.param_groups, strict=True):
        saved_group.update({key: group[key] for key in IMPLEMENTATION_FLAGS if key in group})
    optimizer.load_state_dict(saved)


def setup(config: RunConfig, run_dir: Path | None, data: DataBundle | None = None) -> Run:
    """Build data (unless given, as benchmarks do), models, strategy, optimizer and schedule for a configuration."""
    device = resolve_device(config.train.device)
    acceleration = resolve_acceleration(config.train, device)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)  # kernels, streams and graphs of this run go to the device it names
    torch.manual_seed(config.train.seed)
    if data is None:
        train = config.train
        data = build_data(config.data, device, train.batch_size, train.eval_batch_size, train.seed)
    strategy_cls = get_strategy(config.method.name)
    teacher = load_teacher(config, data, device) if strategy_cls.needs_teacher else None
    student = build_student(config, data, device)
    features = None
    if teacher is not None and strategy_cls.needs_teacher_features:
        features = _teacher_feature_width(teacher)
    options = strategy_cls.Options.model_validate(config.method_options)
    strategy = strategy_cls(options, data.num_classes, features).to(device)
    student.model = strategy.transform_student(student.model).to(device)
    if acceleration.channels_last:
        for wrapped in [student] + ([teacher.module] if teacher else []):
            wrapped.to(memory_format=torch.channels_last)
            wrapped.channels_last = True
    run = Run(
        config,
        run_dir or default_run_dir(config, teacher.arch if teacher else None),
        device,
        data,
        student,
        strategy,
        teacher,
        acceleration,
        acceleration.grad_scaler(device),
    )
    if device.type == "cuda" and (acceleration.compile or acceleration.cuda_graphs):
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest convolutions once
    run.prepare_training()
    return run


def make_optimizer(
    config: RunConfig, student: nn.Module, strategy: Strategy, steps_per_epoch: int, capturable: bool = False
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """The optimizer over the student and the strategy's own groups, and the step-wise schedule. ``capturable``:
    the step will be captured in a CUDA graph (AdamW must know; SGD's fused kernel is capturable as it is).

    With ``optim.lr_batch_size`` every group's rate is scaled linearly to the batch size (``config.lr_scale``), so
    a recipe keeps its meaning at another batch size; pair a large batch with ``schedule.warmup_epochs``.
    """
    optim = config.optim
    scale = config.lr_scale
    groups: list[dict[str, Any]] = [{"params": list(student.parameters()), "name": "student", "lr": optim.lr * scale}]
    frozen_epochs = [0.0]
    for group in strategy.parameter_groups():
        group = dict(group)
        frozen_epochs.append(float(group.pop("frozen_epochs", 0.0)))
        ratio = float(group.pop("lr_ratio", 1.0))
        groups.append({**group, "lr": optim.lr * scale * ratio})
    # On CUDA the fused kernels: one launch per step, and a learning rate that may live on the device (CUDA graphs).
    fused = next(student.parameters()).device.type == "cuda"
    optimizer: torch.optim.Optimizer
    if optim.name == "sgd":
        optimizer = torch.optim.SGD(
            groups,
            lr=optim.lr,
            momentum=optim.momentum,
            weight_decay=optim.weight_decay,
            nesterov=optim.nesterov,
            fused=fused or None,
        )
    else:
        optimizer = torch.optim.AdamW(
            groups, lr=optim.lr, weight_decay=optim.weight_decay, fused=fused or None, capturable=capturable
        )
    epochs = config.train.epochs
    factors = [group_schedule(config.schedule, epochs, steps_per_epoch, frozen) for frozen in frozen_epochs]
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factors)


def group_schedule(
    schedule: ScheduleConfig, epochs: int, steps_per_epoch: int, frozen_epochs: float = 0.0
) -> Callable[[int], float]:
    """One parameter group's learning-rate factor at a step: the run's schedule, or 0 in the group's first
    ``frozen_epochs`` (a transform kept frozen while the student is still random). A rate of 0 leaves the parameters
    exactly unchanged with SGD and AdamW alike, and keeps one optimizer, one step and one CUDA graph. A plain
    function, so LambdaLR keeps it out of the checkpoint."""

    def factor(step: int) -> float:
        epoch = step / steps_per_epoch
        return 0.0 if epoch < frozen_epochs else lr_factor(schedule, epoch, epochs)

    return factor


def _teacher_feature_width(teacher: Teacher) -> int:
    model = teacher.module.model
    if not (hasattr(model, "forward_head") and hasattr(model, "num_features")):
        raise UsageError(
            f"the teacher {teacher.arch!r} has no forward_head(pre_logits=True) to give pre-logit features; "
            "this method needs a timm classifier that has one"
        )
    width = model.num_features
    assert isinstance(width, int)
    return width


@torch.no_grad()
def teacher_eval_outputs(run: Run) -> list[TeacherOutput]:
    """The frozen teacher's outputs on the evaluation split, batch by batch, computed once per run: they cannot
    change, so the per-epoch diagnostics reuse them instead of running the teacher again."""
    assert run.teacher is not None
    if run.teacher_eval is None:
        features = run.strategy.needs_teacher_features
        outputs = []
        for images, _ in run.data.split(run.config.data.eval_split):
            with run.autocast():
                outputs.append(run.teacher.module.predict(images, features))
        run.teacher_eval = outputs
    return run.teacher_eval


def check_teacher(run: Run, reporter: Reporter) -> dict[str, Any]:
    """Measure the teacher on the evaluation split before distilling, and say when it looks untrained."""
    assert run.teacher is not None
    split = run.config.data.eval_split
    logits = torch.cat([output.logits.float().cpu() for output in teacher_eval_outputs(run)])
    labels = torch.cat([labels.cpu() for _, labels in run.data.split(split)])
    metrics = classification_metrics(logits, labels)
    check = {
        "arch": run.teacher.arch,
        "split": split,
        "sha256": run.teacher.sha256,
        "path": str(run.teacher.path) if run.teacher.path else None,
        "parameters": count_parameters(run.teacher.module.model),
        "macs": count_macs(run.teacher.module.model, (run.teacher.module.in_chans, *run.data.image_size)),
        **metrics,
    }
    chance = 100.0 / run.data.num_classes
    reporter.note(f"teacher {run.teacher.arch}: top-1 {metrics['top1']:.2f}% on {split}")
    if metrics["top1"] < 2 * chance:
        reporter.note(
            f"warning: the teacher is near chance ({metrics['top1']:.1f}% for {run.data.num_classes} classes); "
            "check that its weights, classes and normalization match this data"
        )
    return check


def train_epoch(run: Run, reporter: Reporter) -> dict[str, float]:
    """One pass over the training split; losses accumulate on the device and are read once, at the end."""
    run.student.train()
    run.strategy.train()
    run.step.begin_epoch()
    loader = run.data.train
    loader.set_epoch(run.epoch)
    for images, labels in loader:
        run.step(images, labels)
        run.scheduler.step()
        reporter.advance()
    return run.step.means()


@torch.no_grad()
def evaluate_epoch(run: Run) -> dict[str, float]:
    """The student on the validation and test splits; on the evaluation split, with a teacher, also the strategy's
    diagnostics (averaged per example), from the same student pass and the cached teacher outputs."""
    run.student.eval()
    run.strategy.eval()
    record: dict[str, float] = {}
    for split, loader in (("val", run.data.val), ("test", run.data.test)):
        if loader is None:
            continue
        with_teacher = run.teacher is not None and split == run.config.data.eval_split
        teacher_outputs = teacher_eval_outputs(run) if with_teacher else None
        all_logits, all_labels = [], []
        sums: dict[str, Tensor] = {}
        for index, (images, labels) in enumerate(loader):
            with run.autocast():
                logits = run.student(images)
                values = run.strategy.diagnostics(logits, teacher_outputs[index], labels) if teacher_outputs else {}
            for name, value in values.items():
                sums[name] = sums.get(name, torch.zeros((), device=run.device)) + value.float().sum()
            all_logits.append(logits.float().cpu())
            all_labels.append(labels.cpu())
        metrics = classification_metrics(torch.cat(all_logits), torch.cat(all_labels))
        record.update({f"{split}_{name}": value for name, value in metrics.items()})
        record.update({f"diag_{name}": float(total) / loader.num_samples for name, total in sums.items()})
    return record


TARGET_TOP1_DROP = 5.0
"""Points of top-1 below the teacher's at which the target the student learns from is said to have drifted."""
TARGET_MAX_NORMALIZED_ENTROPY = 0.9
"""``H_T / ln C`` above which the target is said to be near uniform (label smoothing, not the teacher's knowledge)."""


def target_guard(record: dict[str, Any], teacher_top1: float) -> str | None:
    """What is wrong with the target the student learns from at this epoch, or None: its top-1 on the evaluation
    split fell more than ``TARGET_TOP1_DROP`` points below the teacher's (a transform drifting toward the student),
    or its normalized entropy exceeds ``TARGET_MAX_NORMALIZED_ENTROPY`` (a target flattened toward uniform)."""
    problems = []
    top1 = record.get("diag_target_top1")
    if top1 is not None and top1 < teacher_top1 - TARGET_TOP1_DROP:
        problems.append(f"its top-1 is {top1:.1f}%, {teacher_top1 - top1:.1f} points below the teacher's")
    normalized = record.get("diag_target_normalized_entropy")
    if normalized is not None and normalized > TARGET_MAX_NORMALIZED_ENTROPY:
        problems.append(f"its entropy at T is {normalized:.2f} of the maximum (near uniform)")
    return "; ".join(problems) or None


def check_target(run: Run, record: dict[str, Any], reporter: Reporter) -> None:
    """Record a target warning in the epoch's record, and say it on the epoch where it starts."""
    if run.teacher_check is None:
        return
    problem = target_guard(record, run.teacher_check["top1"])
    if problem is None:
        return
    record["target_warning"] = problem
    if not (run.history and "target_warning" in run.history[-1]):
        reporter.note(
            f"warning: epoch {record['epoch']}: the target the student learns from has gone bad: {problem}; "
            "a transform drifting to the student or to uniform (see `kdcli methods`: anchor_weight, "
            "transform_lr_ratio; temperature)"
        )


def run_epochs(run: Run, reporter: Reporter) -> None:
    epochs = run.config.train.epochs
    while run.epoch < epochs:
        reporter.start_epoch(run.epoch, epochs, len(run.data.train))
        lr = float(run.optimizer.param_groups[0]["lr"])
        started = time.perf_counter()
        record: dict[str, Any] = {"epoch": run.epoch + 1, "lr": lr, **train_epoch(run, reporter)}
        if run.device.type == "cuda":
            torch.cuda.synchronize(run.device)
        seconds = time.perf_counter() - started
        if not all(math.isfinite(v) for k, v in record.items() if k.startswith("train_")):
            raise RunFailed(
                f"the loss became non-finite in epoch {run.epoch + 1} ({record['train_loss']}); the last good "
                f"checkpoint (epoch {run.epoch}) is kept in {run.run_dir}; lower --lr and resume with --resume"
            )
        record["seconds"] = seconds
        record["images_per_second"] = run.data.train.num_samples / seconds
        record.update(evaluate_epoch(run))
        check_target(run, record, reporter)
        run.epoch += 1
        run.history.append(record)
        if run.data.val is not None and (run.best is None or record["val_top1"] > run.best["val_top1"]):
            run.best = {
                "epoch": run.epoch,
                "val_top1": record["val_top1"],
                "test_top1": record.get("test_top1"),
                "student": {k: v.detach().clone() for k, v in run.student.model.state_dict().items()},
            }
        write_metrics(run)
        save_checkpoint(run.run_dir, run.state())
        reporter.end_epoch(record)


def write_metrics(run: Run) -> None:
    atomic_write_text(run.run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in run.history))


def student_card(run: Run, metrics: dict[str, float]) -> ModelCard:
    return ModelCard(
        arch=str(run.config.student.arch),
        num_classes=run.data.num_classes,
        in_chans=run.student.in_chans,
        input_size=(run.student.in_chans, *run.data.image_size),
        mean=run.data.mean,
        std=run.data.std,
        dataset=run.data.name,
        classes=run.data.classes,
        method=run.config.method.name,
        teacher_arch=run.teacher.arch if run.teacher else None,
        teacher_sha256=run.teacher.sha256 if run.teacher else None,
        metrics=metrics,
        model_kwargs=run.config.student.kwargs,
        sps=sps_options(run.student.model),
    )


def sps_costs(run: Run) -> dict[str, int]:
    """Parameters and MACs of the student without SPS, with it, and untied (a plain network of the same effective
    depth: every second pass with weights of its own, so the MACs of SPS and the parameters of depth)."""
    shape = (run.student.in_chans, *run.data.image_size)
    plain = create_model(str(run.config.student.arch), run.data.num_classes, run.student.in_chans,
                         kwargs=run.config.student.kwargs)  # fmt: skip
    model = run.student.model
    macs = count_macs(model, shape)
    return {
        "parameters_without_sps": count_parameters(plain),
        "macs_without_sps": count_macs(plain, shape),
        "parameters_with_sps": count_parameters(model),
        "macs_with_sps": macs,
        "parameters_untied_same_depth": sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False)),
        "macs_untied_same_depth": macs,
    }


def finish(run: Run, wall_seconds: float) -> RunResult:
    """Export the student (and the best-on-val student), and write report.json and report.md."""
    last = run.history[-1]
    final = {"last_top1": last.get("test_top1"), "last_top5": last.get("test_top5")}
    student_path = run.run_dir / "student.safetensors"
    save_model(student_path, run.student.model, student_card(run, {k: v for k, v in final.items() if v is not None}))
    if run.best is not None:
        best_model = copy.deepcopy(run.student.model)  # keeps any shared structure (SPS) of the student
        best_model.load_state_dict(run.best["student"])
        save_model(
            run.run_dir / "student-best.safetensors",
            best_model,
            student_card(run, {"test_top1": run.best["test_top1"], "val_top1": run.best["val_top1"]}),
        )
    model = run.student.model
    cost: dict[str, Any] = {
        "arch": run.config.student.arch,
        "parameters": count_parameters(model),
        "macs": count_macs(model, (run.student.in_chans, *run.data.image_size)),
        "file_bytes": student_path.stat().st_size,
        "extra_training_parameters": run.strategy.extra_parameter_count(),
    }
    if sps_options(model) is not None:
        cost["sps"] = sps_costs(run)
    report = build_report(run.config, run.history, cost, run.teacher_check, run.best, wall_seconds, run.device)
    report["strategy"] = run.strategy.report()
    write_reports(run.run_dir, report)
    return RunResult(run.run_dir, report, student_path)


def execute(
    config: RunConfig, resume: bool = False, run_dir: Path | None = None, reporter: Reporter | None = None
) -> RunResult:
    """Run (or, with ``resume``, continue) a training or distillation run and write its outputs."""
    reporter = reporter or Reporter()
    run_dir = run_dir or (Path(config.output.dir) if config.output.dir else None)
    if not resume and run_dir is not None and (run_dir / CHECKPOINT_NAME).exists():
        raise UsageError(f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose another --out")
    hint = shadow_hint(config.student.arch or "") or shadow_hint(config.teacher.arch or "")
    if hint:
        reporter.note(f"note: {hint}")
    run = setup(config, run_dir)
    started = time.perf_counter()
    if resume:
        state = load_checkpoint(run.run_dir)
        run.restore(state)
        started -= sum(r["seconds"] for r in run.history)
        reporter.note(f"resuming {run.run_dir} after epoch {run.epoch} of {config.train.epochs}")
    else:
        run.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run.run_dir / "config.yaml", config_yaml(config))
        if run.teacher is not None:
            run.teacher_check = check_teacher(run, reporter)
        run.strategy.pre_stage(run, reporter)
        run.prepare_training()  # a pre-stage may replace student parameters: the optimizer must hold the new ones
        save_checkpoint(run.run_dir, run.state())  # resumable from the first epoch on
    try:
        run_epochs(run, reporter)
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted; the checkpoint after epoch {run.epoch} is in {run.run_dir}: "
            f"continue with `kdcli {'train' if config.method.name == 'none' else 'distill'} --resume {run.run_dir}`"
        ) from None
    finally:
        reporter.close()
    return finish(run, time.perf_counter() - started)


def resume_config(run_dir: Path) -> RunConfig:
    """The configuration a run directory was started with."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise UsageError(f"{run_dir} is not a kdcli run directory (no config.yaml)")
    return resolve([(f"config {path}", read_yaml(path))]).config
