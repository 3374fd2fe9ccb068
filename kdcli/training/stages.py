"""Pre-stages a method asks for (``Method.pre_stages``), run once by the engine before the first checkpoint: a pass of
the teacher over the training set (``TeacherPass``), or a relabelling stage trained with the same step as the main
epochs — the run's optimizer (at a constant rate), precision, compile and CUDA-graph settings, and loss scaling."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kdcli.catalog import SupervisedOptions
from kdcli.config import ScheduleConfig
from kdcli.data import TensorLoader
from kdcli.errors import UsageError
from kdcli.interfaces import MethodContext, PreStage, RelabelStage, Reporter, TeacherPass
from kdcli.methods.supervised import Supervised
from kdcli.runtime.distributed import broadcast
from kdcli.runtime.metrics import predict
from kdcli.training.optim import make_optimizer
from kdcli.training.run import Run
from kdcli.training.step import StepParts, make_train_step

VIEW_SEED_OFFSET = 7919
"""Seeds the augmented views the teacher labels and the stage's shuffling apart from the main epochs'."""
VIEW_BATCH = 512
"""The batches the teacher labels the views in. The crops and flips are drawn batch by batch from one stream, so the
views depend on this size: fixed, rather than the evaluation batch (a speed setting that differs by device)."""


def run_pre_stage(run: Run, stage: PreStage, reporter: Reporter) -> None:
    if isinstance(stage, TeacherPass):
        run_teacher_pass(run, stage, reporter)
    else:
        run_relabel_stage(run, stage, reporter)


def in_memory_training_set(run: Run, stage_name: str) -> TensorLoader:
    train = run.data.train
    if not isinstance(train, TensorLoader):
        raise UsageError(
            f"the {stage_name} pre-stage needs an in-memory data set; with imagefolder turn it off "
            "(see `kdcli methods` for the option)"
        )
    return train


def once(run: Run, compute: Callable[[], Any]) -> Any:
    """``compute()`` on rank 0 only, its result shared with every rank (the whole of it, for a single process)."""
    return broadcast(compute() if run.place.is_main else None)


def run_teacher_pass(run: Run, stage: TeacherPass, reporter: Reporter) -> None:
    """The teacher over the clean training images, in order, once; the method keeps what it needs."""
    assert run.teacher is not None
    train = in_memory_training_set(run, stage.name)
    clean = TensorLoader(train.images, train.labels, run.acceleration.eval_batch_size, run.device)
    teacher = run.teacher.module
    teacher_logits, labels = once(run, lambda: predict(teacher.predict, clean, run.autocast))
    summary = stage.use(teacher_logits, labels)
    run.method.record(stage.name, summary)
    found = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in summary.items())
    reporter.note(f"{stage.name}: the teacher over {labels.numel():,} training images: {found}")


def run_relabel_stage(run: Run, stage: RelabelStage, reporter: Reporter) -> None:
    """The teacher labels one augmented view of each training image, in order (so labels stay with their images);
    the method turns that into new labels; the student learns them with a temporary ``num_classes`` head, which is
    then replaced by a fresh classifier of the data's classes."""
    assert run.teacher is not None
    train = in_memory_training_set(run, stage.name)
    seed = train.seed + VIEW_SEED_OFFSET
    views = TensorLoader(
        train.images,
        train.labels,
        VIEW_BATCH,
        run.device,
        crop_padding=train.crop_padding,
        hflip=train.hflip,
        seed=seed,
    )
    views.set_epoch(-1)
    teacher = run.teacher.module
    teacher_logits, _ = once(run, lambda: predict(teacher.predict, views, run.autocast))
    relabeling = stage.relabel(teacher_logits.to(run.device), train.labels)
    for note in relabeling.notes:
        reporter.note(note)
    run.method.record(stage.name, relabeling.summary)

    student: Any = run.student.model
    student.reset_classifier(stage.num_classes)
    run.student.to(run.device)
    run.student.read_features(())
    loader = TensorLoader(
        train.images,
        relabeling.labels,
        train.batch_size,
        run.device,
        shuffle=True,
        crop_padding=train.crop_padding,
        hflip=train.hflip,
        seed=seed,
        shard=(run.place.rank, run.place.world_size),
        drop_last=train.drop_last,
    )
    context = MethodContext(stage.num_classes, run.method.context.student, None, stage.epochs)
    supervised = Supervised(SupervisedOptions(), context)
    optimizer, scheduler = make_optimizer(
        run.config, run.student, [], len(loader), run.acceleration.cuda_graphs, schedule=ScheduleConfig(name="constant")
    )
    local_batch = loader.rank_slice(loader.batch_size)
    parts = StepParts(
        student=run.student,
        teacher=None,
        method=supervised,
        optimizer=optimizer,
        scaler=run.acceleration.grad_scaler(run.device),
        acceleration=run.acceleration,
        device=run.device,
        batch_size=local_batch.stop - local_batch.start,
        place=run.place,
    )
    step = make_train_step(parts)
    run.student.train()
    for epoch in range(stage.epochs):
        loader.set_epoch(epoch)
        step.begin_epoch()
        for index, (images, labels) in enumerate(loader):
            step(images, labels, epoch + index / len(loader), loader.share(index, labels.numel()))
            scheduler.step()
        reporter.note(f"{stage.name} epoch {epoch + 1}/{stage.epochs}  loss {step.means()[0]['loss']:.4f}")
    student.reset_classifier(run.data.num_classes)  # a fresh classifier for the main epochs
    run.student.to(run.device)
    if run.acceleration.channels_last:
        run.student.to_channels_last()
