"""The training loop behind ``kdcli train`` and ``kdcli distill``: the orchestration of one run.

One step: the frozen teacher's outputs (no autograd), the student's outputs, the method's named losses, one optimizer
step over the student and the method's own parameters (kdcli.training.step: run eagerly, or replayed as one CUDA
graph), one scheduler step. After every epoch the splits are evaluated, ``metrics.jsonl`` is rewritten and a
resumable checkpoint is written atomically, so a run killed at any point resumes from its last finished epoch and
ends at the same weights as an uninterrupted one.
A non-finite loss stops the run before anything of that epoch is saved: the last good checkpoint stays.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import torch
import yaml

from kdcli._version import __version__
from kdcli.config import RunConfig, dump, read_yaml, resolve
from kdcli.errors import Interrupted, RunFailed, UsageError, one_line, option
from kdcli.interfaces import Reporter
from kdcli.io.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from kdcli.io.files import RunDirectory, atomic_write_text, check_run_directory, check_run_path
from kdcli.models.factory import shadow_hint
from kdcli.records import EpochRecord
from kdcli.reporting.finite import dumps as finite_dumps
from kdcli.reporting.report import RunResult
from kdcli.runtime.distributed import device_for, from_environment, initialize, leave
from kdcli.runtime.loading import resolve_device
from kdcli.training.finish import finish
from kdcli.training.run import Run, setup
from kdcli.training.stages import run_pre_stage
from kdcli.training.validation import check_target, check_teacher, evaluate_epoch


def config_yaml(config: RunConfig) -> str:
    header = (
        f"# kdcli {__version__} resolved configuration; give this file as a run's configuration to repeat the run\n"
    )
    return header + yaml.safe_dump(dump(config), sort_keys=False)


class EpochTraining(NamedTuple):
    losses: dict[str, float]
    """The mean of each loss term over the epoch (``loss`` their sum)."""
    top1: float
    loader_seconds: float
    """Host time spent waiting for the next batch: what the data path cost beyond the steps. (On a GPU the host runs
    ahead of the device, so a step-bound epoch blocks in the step, not here; a loader-bound one blocks here.)"""


def train_epoch(run: Run, reporter: Reporter) -> EpochTraining:
    """One pass over the training split: the mean of each loss term, the top-1 (losses accumulate on the device and
    are read once, at the end) and the time spent waiting for batches."""
    run.student.train()
    run.method.train()
    run.step.begin_epoch()
    loader = run.data.train
    loader.set_epoch(run.epoch)
    steps = len(loader)
    waited = 0.0
    asked = time.perf_counter()
    for index, (images, labels, mix) in enumerate(loader.training_batches()):
        waited += time.perf_counter() - asked
        run.step(images, labels, run.epoch + index / steps, loader.share(index, labels.numel()), mix)
        run.scheduler.step()
        reporter.advance()
        asked = time.perf_counter()
    waited += time.perf_counter() - asked  # the loader's end of epoch (its workers stopping)
    losses, top1 = run.step.means()
    return EpochTraining(losses, top1, waited)


def non_finite(run: Run) -> str | None:
    """The first tensor of the student's or the method's state that is not finite (NaN/inf), or None. Checked after
    each epoch's training, before evaluation, so a checkpoint is written only when every one is finite and the last
    good checkpoint is good (BatchNorm statistics included); every process checks the same (synchronized) state."""
    for state in (run.student.model.state_dict(), run.method.state_dict()):
        for name, tensor in state.items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                return str(name)
    return None


def run_epochs(run: Run, reporter: Reporter) -> None:
    epochs = run.config.train.epochs
    while run.epoch < epochs:
        reporter.start_epoch(run.epoch, epochs, len(run.data.train))
        lr = float(run.optimizer.param_groups[0]["lr"])
        started = time.perf_counter()
        losses, top1, loader_seconds = train_epoch(run, reporter)
        if run.device.type == "cuda":
            torch.cuda.synchronize(run.device)
        seconds = time.perf_counter() - started
        if not all(math.isfinite(v) for v in [*losses.values(), top1]):
            raise RunFailed(
                f"the loss became non-finite in epoch {run.epoch + 1} ({losses['loss']}); the last good "
                f"checkpoint (epoch {run.epoch}) is kept in {run.run_dir}; continue with a lower rate: "
                f"{option('kdcli.resume', run.run_dir)} {option('lr', 'X')}",
                run=run.run_dir,
            )
        damaged = non_finite(run)
        if damaged:
            raise RunFailed(
                f"the student's {damaged} became non-finite in epoch {run.epoch + 1}; the last good checkpoint "
                f"(epoch {run.epoch}) is kept in {run.run_dir}; continue with a lower rate: "
                f"{option('kdcli.resume', run.run_dir)} {option('lr', 'X')}",
                run=run.run_dir,
            )
        split_metrics, diagnostics = evaluate_epoch(run)
        record = EpochRecord(
            epoch=run.epoch + 1,
            lr=lr,
            train_losses=losses,
            train_top1=top1,
            seconds=seconds,
            loader_seconds=loader_seconds,
            images_per_second=run.data.train.num_samples / seconds,
            **split_metrics,
            diagnostics=diagnostics,
        )
        check_target(run, record, reporter)
        run.epoch += 1
        run.history.append(record)
        if record.val is not None and (run.best is None or record.val.top1 > run.best["val_top1"]):
            run.best = {
                "epoch": run.epoch,
                "val_top1": record.val.top1,
                "test_top1": record.test.top1 if record.test else None,
                "student": {k: v.detach().clone() for k, v in run.student.model.state_dict().items()},
            }
        if run.place.is_main:
            checkpoint = run.state()
            metrics = "".join(finite_dumps(r.flat(), indent=None)[0] + "\n" for r in run.history)  # inf as "inf"
            writing(run, partial(atomic_write_text, run.run_dir / "metrics.jsonl", metrics))
            writing(run, partial(save_checkpoint, run.run_dir, checkpoint))
        reporter.end_epoch(record)


def execute(
    config: RunConfig,
    resume: bool = False,
    run_dir: Path | None = None,
    reporter: Reporter | None = None,
    resume_lr: float | None = None,
    force: bool = False,
) -> RunResult:
    """Run (or, with ``resume``, continue) a training or distillation run and write its outputs. ``resume_lr``
    continues with a new learning rate (after a non-finite loss, say): every group keeps its ratio to the student's
    and its place in the schedule. A new run refuses a folder holding files it did not write unless ``force``, and
    any folder where its files would replace its teacher's or student's weights. Under torchrun every process runs
    this; rank 0 alone writes files and reports progress (the others are given a silent reporter), and every
    process returns rank 0's result."""
    place = from_environment()
    joined = initialize(place, resolve_device(device_for(place, config.train.device)))
    reporter = (reporter or Reporter()) if place.is_main else Reporter()
    run_dir = run_dir or (Path(config.output.dir).expanduser() if config.output.dir else None)
    if run_dir is not None:
        check_run_path(run_dir)
    if not resume and run_dir is not None and (run_dir / CHECKPOINT_NAME).exists():
        raise UsageError(
            f"{run_dir} already holds a run; continue it with {option('kdcli.resume', run_dir)} or choose "
            f"another {option('output.dir')}",
            run=run_dir,
        )
    if not resume and run_dir is not None:
        weights = (config.teacher.checkpoint, config.student.checkpoint)
        check_run_directory(run_dir, [Path(w) for w in weights if w and not w.startswith("kdcli:")], force)
    state = load_checkpoint(run_dir) if resume and run_dir is not None else None  # before any work: is it there?
    hint = shadow_hint(config.student.arch or "") or shadow_hint(config.teacher.arch or "")
    if hint:
        reporter.note(f"note: {hint}")
    with contextlib.ExitStack() as held:
        try:
            run = setup(config, run_dir, place=place)
            for note in run.data.notes:
                reporter.note(f"note: {note}")
            if place.is_main:
                held.enter_context(RunDirectory(run.run_dir))
            started = time.perf_counter()
            if state is not None:
                restore(run, state)
                started -= sum(r.seconds for r in run.history)
                if resume_lr is not None:
                    change_learning_rate(run, resume_lr)
                    reporter.note(f"learning rate {config.optim.lr:g} → {resume_lr:g} from epoch {run.epoch + 1} on")
                reporter.note(f"resuming {run.run_dir} after epoch {run.epoch} of {config.train.epochs}")
            else:
                start(run, config, reporter)
        except KeyboardInterrupt:
            raise Interrupted(
                "interrupted before the first checkpoint was written, so there is nothing to resume; run the same "
                "command again"
            ) from None
        try:
            run_epochs(run, reporter)
        except KeyboardInterrupt:
            where = " (under torchrun: the same torchrun line)" if place.active else ""
            raise Interrupted(
                f"interrupted; the checkpoint after epoch {run.epoch} is in {run.run_dir}: continue with "
                f"`{option('kdcli.resume', run.run_dir)}`{where}"
            ) from None
        finally:
            reporter.close()
        result = writing(run, lambda: finish(run, time.perf_counter() - started))
    if joined:
        leave()
    return result


def start(run: Run, config: RunConfig, reporter: Reporter) -> None:
    """A fresh run up to its first checkpoint: the configuration, the teacher check, the pre-stages."""
    if run.place.is_main:
        writing(run, lambda: atomic_write_text(run.run_dir / "config.yaml", config_yaml(config)))
    if run.teacher is not None:
        run.teacher_check = check_teacher(run, reporter)
    stages = run.method.pre_stages()
    for stage in stages:
        run_pre_stage(run, stage, reporter)
    if stages:
        run.prepare_training()  # a pre-stage replaced student parameters: the optimizer must hold the new ones
    if run.place.is_main:
        writing(run, lambda: save_checkpoint(run.run_dir, run.state()))  # resumable from the first epoch on


Written = TypeVar("Written")


def writing(run: Run, write: Callable[[], Written]) -> Written:
    """A write of the run's files; a full disk (or any failed write) ends the run with exit 1 and one line, the
    files already there untouched (every write is atomic)."""
    try:
        return write()
    except OSError as exc:
        raise RunFailed(
            f"cannot write into {run.run_dir} ({exc.strerror or exc}); its last good checkpoint is intact: free "
            f"space and continue with {option('kdcli.resume', run.run_dir)}",
            run=run.run_dir,
        ) from None


def restore(run: Run, state: dict[str, Any]) -> None:
    """The run's state from its checkpoint; a checkpoint that does not fit the run its config.yaml builds (edited,
    copied from another run, or tampered with) is refused with one line."""
    try:
        run.restore(state)
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as exc:
        path = run.run_dir / CHECKPOINT_NAME
        raise UsageError(
            f"{path} does not fit the run that {run.run_dir / 'config.yaml'} describes ({one_line(exc, 160)}); "
            f"it was edited or copied from another run: start the run again with a new {option('output.dir')}",
            run=run.run_dir,
        ) from None


def change_learning_rate(run: Run, lr: float) -> None:
    """Rescale every group's base and current rate by ``lr / optim.lr``, keeping each group's ratio to the student's
    and the schedule's position; the configuration (and config.yaml) then says the new rate."""
    factor = lr / run.config.optim.lr
    run.scheduler.base_lrs = [base * factor for base in run.scheduler.base_lrs]
    for group in run.optimizer.param_groups:
        group["initial_lr"] *= factor
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].mul_(factor)
        else:
            group["lr"] *= factor
    run.config = run.config.model_copy(update={"optim": run.config.optim.model_copy(update={"lr": lr})})
    if run.place.is_main:
        writing(run, lambda: atomic_write_text(run.run_dir / "config.yaml", config_yaml(run.config)))


def resume_config(run_dir: Path) -> RunConfig:
    """The configuration a run directory was started with."""
    check_run_path(run_dir, "run_dir")
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise UsageError(f"{run_dir} is not a kdcli run directory (no config.yaml)")
    data = read_yaml(path)
    missing = [section for section in RunConfig.model_fields if section not in data]
    # A run writes every section: an emptied or cut file would resume as some other run. (Without a checkpoint the
    # run stopped before its first one, and load_checkpoint says so.)
    if missing and os.path.lexists(run_dir / CHECKPOINT_NAME):
        raise UsageError(
            f"{path} is not a whole run configuration (no {', '.join(missing)}: it was emptied or "
            f"edited), so {run_dir} cannot resume; start the run again with a new {option('output.dir')}",
            run=run_dir,
        )
    return resolve([(f"config {path}", data)]).config
