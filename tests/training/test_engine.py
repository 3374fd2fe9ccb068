import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import kdcli
from kdcli.config import DataConfig, TrainConfig, resolve
from kdcli.errors import Interrupted, RunFailed, UsageError
from kdcli.interfaces import Reporter
from kdcli.io.checkpoint import load_checkpoint, save_checkpoint
from kdcli.records import EpochRecord
from kdcli.runtime.acceleration import resolve_acceleration
from kdcli.training.engine import run_epochs, train_epoch
from kdcli.training.optim import lr_factor, make_optimizer
from kdcli.training.run import setup

from ..conftest import tiny_config


@pytest.mark.parametrize("method", ["vanilla", "pesf", "skd"])
def test_distillation_step_leaves_the_teacher_untouched(tmp_path: Path, teacher_file: Path, method: str) -> None:
    """Gradients reach exactly the trainable parts: the student and the method's own modules, never the teacher."""
    config = tiny_config(tmp_path, teacher={"checkpoint": str(teacher_file)}, method={"name": method},
                         train={"epochs": 1})  # fmt: skip
    run = setup(resolve([("test", config)]).config, tmp_path)
    assert run.teacher is not None
    teacher = run.teacher.module
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    student_before = {k: v.clone() for k, v in run.student.model.named_parameters()}
    method_before = {k: v.clone() for k, v in run.method.named_parameters()}
    train_epoch(run, Reporter())
    assert not teacher.training
    for name, tensor in teacher.model.state_dict().items():  # BatchNorm running statistics included
        assert torch.equal(tensor, before[name]), name
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    changed = [n for n, p in run.student.model.named_parameters() if not torch.equal(p, student_before[n])]
    assert len(changed) == len(student_before)
    assert all(p.grad is not None for p in run.student.model.parameters())
    assert (len(method_before) > 0) == (method != "vanilla")
    for name, parameter in run.method.named_parameters():  # zero-started outputs make some gradients tiny at first
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert method == "vanilla" or any(not torch.equal(p, method_before[n]) for n, p in run.method.named_parameters())


class InterruptAfter(Reporter):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def end_epoch(self, record: EpochRecord) -> None:
        if record.epoch == self.epoch:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_resume_ends_at_the_same_weights(tmp_path: Path, teacher_file: Path) -> None:
    straight = kdcli.distill(
        tiny_config(tmp_path / "straight", teacher={"checkpoint": str(teacher_file)}, data={"val_split": 0.2})
    )
    config = tiny_config(tmp_path / "stopped", teacher={"checkpoint": str(teacher_file)}, data={"val_split": 0.2})
    with pytest.raises(Interrupted, match=r"kdcli\.resume\("):
        kdcli.distill(config, reporter=InterruptAfter(1))
    assert load_checkpoint(tmp_path / "stopped")["epoch"] == 1
    resumed = kdcli.resume(tmp_path / "stopped")
    expected = load_file(str(straight.student_path))
    for name, tensor in load_file(str(resumed.student_path)).items():
        assert torch.equal(tensor, expected[name]), name
    assert [r.test for r in resumed.report.epochs] == [r.test for r in straight.report.epochs]
    assert (tmp_path / "stopped" / "student-best.safetensors").is_file()
    data = DataConfig(train_subset=300, val_split=0.2)  # the data set: the file's (name not set)
    validation = kdcli.evaluate([resumed.student_path], data, split="val", device="cpu")
    assert validation.results[0].samples == 60
    last_val = resumed.report.epochs[-1].val
    assert last_val is not None and validation.results[0].top1 == pytest.approx(last_val.top1)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path, teacher_file: Path) -> None:
    config = resolve([("test", tiny_config(tmp_path, teacher={"checkpoint": str(teacher_file)}))]).config
    run = setup(config, tmp_path)
    run.config = run.config.model_copy(update={"train": run.config.train.model_copy(update={"epochs": 1})})
    run_epochs(run, Reporter())
    good = {k: v.clone() for k, v in run.student.model.state_dict().items()}
    run.config = config
    with torch.no_grad():  # a diverged student: every later loss is NaN
        next(run.student.model.parameters()).fill_(float("nan"))
    with pytest.raises(RunFailed, match=r"non-finite in epoch 2.*epoch 1"):
        run_epochs(run, Reporter())
    kept = load_checkpoint(tmp_path)
    assert kept["epoch"] == 1
    assert all(torch.equal(kept["student"][k], v) for k, v in good.items())
    assert not (tmp_path / "student.safetensors").exists()


def test_starting_over_an_existing_run_is_refused(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, {"epoch": 0})
    config = tiny_config(tmp_path)
    del config["teacher"]
    with pytest.raises(UsageError, match="already holds a run"):
        kdcli.train(config)


def test_teacher_without_weights_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"no trained weights.*teacher\.checkpoint=FILE"):
        kdcli.distill(tiny_config(tmp_path))


def test_step_schedule_drops_at_milestones() -> None:
    schedule = resolve([("t", {"schedule": {"name": "step", "milestones": [2, 4], "gamma": 0.1}})]).config.schedule
    steps = [round(e * 100) for e in (0.0, 1.99, 2.0, 3.5, 4.0)]
    assert [lr_factor(schedule, s, 100, 6) for s in steps] == pytest.approx([1, 1, 0.1, 0.1, 0.01])


def test_grey_data_feeds_three_channel_models(tmp_path: Path, teacher_file: Path) -> None:
    """The teacher was trained on 1 channel; a 3-channel student gets the grey image repeated."""
    result = kdcli.distill(tiny_config(tmp_path, teacher={"checkpoint": str(teacher_file)},
                                       student={"in_chans": 3}, train={"epochs": 1}))  # fmt: skip
    tensors = load_file(str(result.student_path))
    assert tensors["conv1.weight"].shape[1] == 3
    evaluated = kdcli.evaluate([result.student_path], device="cpu").results[0]
    assert evaluated.top1 == pytest.approx(result.report.final.last_top1)


@pytest.mark.parametrize(("arch", "kwargs"), [("test_resnet", {}), ("test_vit", {"img_size": 32})])
def test_any_timm_architecture_trains_and_exports(tmp_path: Path, arch: str, kwargs: dict[str, Any]) -> None:
    """Models outside the zoo go through timm.create_model with the data's classes and channels, and the exported
    file rebuilds them (timm kwargs included) for `kdcli eval`."""
    config = tiny_config(tmp_path, student={"arch": arch, "kwargs": kwargs}, optim={"name": "adamw", "lr": 1e-3},
                         train={"epochs": 1})  # fmt: skip
    del config["teacher"]
    result = kdcli.train(config)
    assert result.report.student.arch == arch
    evaluated = kdcli.evaluate([result.student_path], device="cpu").results[0]
    assert evaluated.top1 == pytest.approx(result.report.final.last_top1)


def test_cosine_shape() -> None:
    cosine = resolve([("t", {"schedule": {"name": "cosine", "warmup_epochs": 1, "final_factor": 0.1}})]).config.schedule
    steps = [round(e * 10) for e in (0.0, 0.5, 1.0, 6.0, 11.0)]
    assert [lr_factor(cosine, s, 10, 11) for s in steps] == pytest.approx([0.01, 0.5, 1, 0.55, 0.1])


@pytest.mark.parametrize("schedule", [{}, {"warmup_fraction": 0.15, "cycle_momentum": True},
                                      {"warmup_epochs": 2, "cycle_momentum": True, "base_momentum": 0.8}])  # fmt: skip
def test_onecycle_is_torchs_onecycle_step_for_step(schedule: dict[str, Any]) -> None:
    """Every step's rate and momentum equal torch's OneCycleLR (two phases, cosine, div 25, final div 1e4) with the
    same pct_start, over a 7-epoch run of 39 steps an epoch, as the optimizer sees them."""
    epochs, steps_per_epoch, lr = 7, 39, 0.1
    config = resolve([("t", {"optim": {"lr": lr, "nesterov": True}, "train": {"epochs": epochs},
                             "schedule": {"name": "onecycle", **schedule}})]).config  # fmt: skip
    parameter = torch.nn.Parameter(torch.zeros(1))
    ours, scheduler = make_optimizer(config, torch.nn.Linear(1, 1), [], steps_per_epoch)
    reference = torch.optim.SGD([parameter], lr=lr, momentum=0.9, nesterov=True)
    torch_schedule = torch.optim.lr_scheduler.OneCycleLR(
        reference, lr, total_steps=epochs * steps_per_epoch, pct_start=config.schedule.warmup(epochs) / epochs,
        cycle_momentum=config.schedule.cycle_momentum, base_momentum=config.schedule.base_momentum,
        max_momentum=config.schedule.max_momentum)  # fmt: skip
    for _ in range(epochs * steps_per_epoch):
        assert ours.param_groups[0]["lr"] == pytest.approx(reference.param_groups[0]["lr"], rel=1e-9, abs=1e-15)
        assert ours.param_groups[0]["momentum"] == pytest.approx(reference.param_groups[0]["momentum"], rel=1e-12)
        ours.step()
        reference.step()
        scheduler.step()
        torch_schedule.step()


def test_cycled_momentum_resumes_on_its_curve() -> None:
    """The schedule's checkpoint holds the step, not the momentum function; a fresh scheduler loaded from it sets the
    momentum of the step it resumes at."""
    config = resolve([("t", {"schedule": {"name": "onecycle", "cycle_momentum": True}, "train": {"epochs": 4}})]).config
    optimizer, scheduler = make_optimizer(config, torch.nn.Linear(1, 1), [], 10)
    for _ in range(13):
        optimizer.step()
        scheduler.step()
    saved, momentum = torch.load(_round_trip(scheduler.state_dict())), optimizer.param_groups[0]["momentum"]
    assert "momentum" not in saved
    fresh_optimizer, fresh = make_optimizer(config, torch.nn.Linear(1, 1), [], 10)
    fresh.load_state_dict(saved)
    fresh_optimizer.step()
    fresh.step()
    optimizer.step()
    scheduler.step()
    assert fresh_optimizer.param_groups[0]["momentum"] == optimizer.param_groups[0]["momentum"] != momentum


def _round_trip(state: dict[str, Any]) -> io.BytesIO:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize(
    ("schedule", "optim", "message"),
    [({"name": "onecycle", "warmup_epochs": 3, "warmup_fraction": 0.2}, {}, "not both"),
     ({"name": "cosine", "cycle_momentum": True}, {}, "belongs to the onecycle"),
     ({"name": "onecycle", "cycle_momentum": True}, {"name": "adamw"}, "cycles SGD's momentum"),
     ({"name": "onecycle", "cycle_momentum": True, "base_momentum": 0.97}, {}, "above schedule.max_momentum")],
)  # fmt: skip
def test_schedule_settings_that_contradict_are_refused(
    schedule: dict[str, Any], optim: dict[str, Any], message: str
) -> None:
    with pytest.raises(UsageError, match=message) as refused:
        resolve([("t", {"schedule": schedule, "optim": optim})])
    assert re.match(r"invalid value for 'schedule\.[a-z_]+' \(from t\)", str(refused.value)), str(refused.value)


@pytest.mark.parametrize(
    ("preset", "given", "blamed"),
    [({"name": "onecycle", "warmup_fraction": 0.2}, {"warmup_epochs": 3}, "'schedule.warmup_epochs' (from --set): "),
     ({"name": "onecycle", "warmup_epochs": 3}, {"warmup_fraction": 0.2}, "'schedule.warmup_fraction' (from --set): "),
     ({"name": "onecycle", "cycle_momentum": True}, {"name": "cosine"}, "'schedule.name' (from --set): ")],
)  # fmt: skip
def test_of_two_settings_that_contradict_the_one_just_given_is_named(
    preset: dict[str, Any], given: dict[str, Any], blamed: str
) -> None:
    with pytest.raises(UsageError) as refused:
        resolve([("preset p", {"schedule": preset}), ("--set", {"schedule": given})])
    assert blamed in str(refused.value), str(refused.value)


def test_cycled_momentum_keeps_cuda_graphs_off() -> None:
    """A captured fused SGD kernel keeps the momentum it was captured with: automatic graphs stay off, asked-for
    graphs are refused."""
    train = TrainConfig()
    assert not resolve_acceleration(train, torch.device("cuda"), cycled_momentum=True).cuda_graphs
    assert resolve_acceleration(train, torch.device("cuda")).cuda_graphs
    with pytest.raises(UsageError, match="cycle_momentum"):
        resolve_acceleration(TrainConfig(cuda_graphs=True), torch.device("cuda"), cycled_momentum=True)


@pytest.mark.parametrize(("lr_batch_size", "expected"), [(None, [0.05, 0.01]), (25, [0.1, 0.02])])
def test_learning_rates_scale_linearly_with_the_batch_size(
    tmp_path: Path, teacher_file: Path, lr_batch_size: int | None, expected: list[float]
) -> None:
    """optim.lr_batch_size=25 at batch 50 doubles every group's rate: the student's and the strategy's own."""
    config = tiny_config(tmp_path, teacher={"checkpoint": str(teacher_file)},
                         method={"name": "skd", "transform_lr_ratio": 0.2}, schedule={"name": "constant"},
                         optim={"lr": 0.05, "lr_batch_size": lr_batch_size})  # fmt: skip
    run = setup(resolve([("test", config)]).config, tmp_path)
    assert [group["lr"] for group in run.optimizer.param_groups] == pytest.approx(expected)


def test_resume_keeps_this_machines_optimizer_implementation(tmp_path: Path, teacher_file: Path) -> None:
    """A checkpoint whose AdamW was fused and capturable (a CUDA-graph run) resumes on the CPU with the CPU's
    optimizer; torch alone would restore the saved flags, and a capturable AdamW cannot step on the CPU."""
    config = resolve([("test", tiny_config(tmp_path, teacher={"checkpoint": str(teacher_file)},
                                           optim={"name": "adamw", "lr": 1e-3}))]).config  # fmt: skip
    run = setup(config, tmp_path / "saved")
    train_epoch(run, Reporter())
    state = run.state()
    for group in state["optimizer"]["param_groups"]:
        group.update(fused=True, capturable=True)
    resumed = setup(config, tmp_path / "resumed")
    resumed.restore(state)
    assert [(g["fused"], g["capturable"]) for g in resumed.optimizer.param_groups] == [(None, False)]
    resumed.epoch = 1
    assert train_epoch(resumed, Reporter())[0]["loss"] > 0


def test_time_waiting_for_data_is_told_apart_from_the_steps(tmp_path: Path, teacher_file: Path) -> None:
    """A loader that takes 0.1 s a batch: the epoch's loader_seconds holds those waits, the report its share."""
    import time

    config = tiny_config(tmp_path, teacher={"checkpoint": str(teacher_file)}, train={"epochs": 1})
    run = setup(resolve([("test", config)]).config, tmp_path)
    batches = run.data.train.training_batches

    def slow():  # type: ignore[no-untyped-def]
        for batch in batches():
            time.sleep(0.1)
            yield batch

    run.data.train.training_batches = slow  # type: ignore[method-assign]
    trained = train_epoch(run, Reporter())
    assert len(run.data.train) == 6 and 0.6 <= trained.loader_seconds < 0.6 + 0.5
    run_epochs(run, Reporter())  # the one epoch, recorded
    record = run.history[-1]
    assert record.loader_seconds is not None and 0.6 <= record.loader_seconds <= record.seconds
    assert EpochRecord.model_validate(record.flat()).loader_seconds == record.loader_seconds  # metrics.jsonl round trip


def test_a_flat_target_from_a_plain_method_blames_the_teacher_not_a_transform(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A random teacher's softened logits are near uniform: vanilla has no transform to blame, so the warning names
    the teacher and the temperature."""
    from ..conftest import run as cli

    code, _, err = cli(capsys, "distill", "--teacher", "resnet8", "--student", "resnet8", "--allow-untrained-teacher",
                       "--train-subset", "100", "--epochs", "1", "--device", "cpu",
                       "--out", str(tmp_path / "r"))  # fmt: skip
    assert code == 0, err
    warning = next(line for line in err.splitlines() if "has gone bad" in line)
    assert (
        "near uniform" in warning and "the teacher is near chance on this data or --set method.temperature" in warning
    )
    assert "transform" not in warning


def test_report_records_the_switches_the_run_resolved(tmp_path: Path, teacher_file: Path) -> None:
    """``auto`` is settled in report.json (fp32 and channels-last on the CPU), and an explicit choice is recorded
    as run, so a figure's precision is read from its run, not from the command that asked for it."""
    auto = json.loads((teacher_file.parent / "report.json").read_text())["environment"]
    switches = (auto["precision"], auto["channels_last"], auto["compile"], auto["cuda_graphs"])
    assert switches == ("fp32", True, False, False)
    config = tiny_config(tmp_path / "bf16", train={"epochs": 1, "precision": "bf16", "channels_last": False})
    del config["teacher"]
    report = kdcli.train(config).report
    assert (report.environment.precision, report.environment.channels_last) == ("bf16", False)
    assert "device cpu (bf16), data `embedded`, 1 epoch, seed 0." in (tmp_path / "bf16" / "report.md").read_text()
