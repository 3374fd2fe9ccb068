"""Bad configuration inputs (docs/reliability.md, "Nothing lost, no traceback"): every one is refused before any work
with exit 2 and one line that names the key or file, says what is wrong and how to fix it. Configuration reaches
``resolve`` from presets and ``--config`` files (``read_yaml``), flags and ``--set`` (``parse_set``); the tests use
real files and, where the fault is the process's (a file that never ends, a flag), a real ``python -m kdcli``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kdcli.cli.options import parse_set
from kdcli.config import load_preset, nested, read_yaml, resolve
from kdcli.errors import UsageError


def run_kdcli(*args: str, pass_fds: tuple[int, ...] = (), timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kdcli", *args], capture_output=True, text=True, timeout=timeout,
                          pass_fds=pass_fds, stdin=subprocess.DEVNULL)  # fmt: skip


def refused(result: subprocess.CompletedProcess[str]) -> str:
    """Exit 2, exactly one line on stderr, no traceback; returns that line."""
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("kdcli: error: "), result.stderr[-2000:]
    return lines[0]


def config_file(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def resolve_file(path: Path, *sets: str) -> Any:
    return resolve([(f"config {path}", read_yaml(path)), *((f"--set {s}", parse_set(s)) for s in sets)])


# --- 1. size: bytes read and the parser's work are bounded --------------------------------------------------------

BILLION_LAUGHS = "".join(
    f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]\n"
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True)
)  # each level repeats the previous nine times: 9**9 (387 million) values from 9 lines


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a: &a [x, x, x, x, x, x, x, x, x]\n" + BILLION_LAUGHS, "expands to more than 100,000 values"),
        ("teacher:\n  kwargs:\n    x: &x [1, *x]\n", "refers to a value that contains it"),
        ("a: " + "[" * 2000 + "]" * 2000 + "\n", "nests deeper than 32 levels"),
    ],
    ids=["billion-laughs", "alias-cycle", "deep-nesting"],
)
def test_yaml_that_expands_past_a_configuration_is_refused(tmp_path: Path, text: str, fragment: str) -> None:
    path = config_file(tmp_path, text)
    with pytest.raises(UsageError) as error:
        read_yaml(path)
    assert str(error.value).startswith(f"{path}: ") and fragment in str(error.value)


def test_a_set_value_that_expands_is_refused() -> None:
    bomb = "[" + ", ".join(["&a [x, x, x, x, x, x, x, x, x]"] + ["*a"] * 8) + "]"
    assert parse_set(f"teacher.kwargs.x={bomb}")  # nine times nine is fine
    laughs = "{a: &a [x, x, x, x, x, x, x, x, x], " + BILLION_LAUGHS.strip().replace("\n", ", ") + "}"
    with pytest.raises(UsageError, match=r"^--set teacher.kwargs.x: expands to more than 100,000 values"):
        parse_set(f"teacher.kwargs.x={laughs}")


def test_config_from_dev_zero_is_refused_after_one_mib() -> None:
    line = refused(run_kdcli("config", "show", "--config", "/dev/zero"))
    assert "/dev/zero is larger than 1 MiB" in line and "pass a YAML configuration file" in line


def test_config_from_an_endless_pipe_is_refused_after_one_mib() -> None:
    writer = subprocess.Popen(["yes", "# a comment"], stdout=subprocess.PIPE)
    assert writer.stdout is not None
    try:
        fd = writer.stdout.fileno()
        line = refused(run_kdcli("config", "show", "--config", f"/dev/fd/{fd}", pass_fds=(fd,)))
    finally:
        writer.kill()
        writer.wait()
    assert f"/dev/fd/{fd} is larger than 1 MiB" in line


def test_a_preset_file_is_read_the_same_bounded_way(tmp_path: Path) -> None:
    preset = config_file(tmp_path, "train:\n  epochs: 3\n  epochs: 4\n", "mine.yaml")
    with pytest.raises(UsageError, match=r"mine.yaml: key 'train.epochs' is given twice \(lines 2 and 3\)"):
        load_preset(str(preset))


# --- 2. duplicate keys -------------------------------------------------------------------------------------------


def test_duplicate_key_is_refused_with_its_lines(tmp_path: Path) -> None:
    path = config_file(tmp_path, "train:\n  epochs: 3\n  batch_size: 8\n  epochs: 5\n")
    line = refused(run_kdcli("config", "show", "--config", str(path)))
    assert f"{path}: key 'train.epochs' is given twice (lines 2 and 4)" in line and "keep one of them" in line


def test_duplicate_section_and_flow_keys_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"key 'train' is given twice \(lines 1 and 3\)"):
        read_yaml(config_file(tmp_path, "train:\n  epochs: 3\ntrain:\n  batch_size: 8\n"))
    with pytest.raises(UsageError, match=r"--set method: key 'temperature' is given twice \(line 1\)"):
        parse_set("method={temperature: 2, temperature: 3}")


def test_a_merge_key_may_still_be_overridden(tmp_path: Path) -> None:
    """``<<: *base`` then the mapping's own key is YAML's way to override, not a duplicate."""
    path = config_file(tmp_path, "base: &base {epochs: 3, batch_size: 8}\ntrain:\n  <<: *base\n  epochs: 5\n")
    assert read_yaml(path)["train"] == {"epochs": 5, "batch_size": 8}


# --- 3. non-finite numbers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("schedule:\n  warmup_epochs: .inf\n", "schedule.warmup_epochs"),
        ("optim:\n  lr: .nan\n", "optim.lr"),
        ("method:\n  name: vanilla\n  temperature: .inf\n", "method.temperature"),
        ("method:\n  name: dkd\n  warmup_epochs: -.inf\n", "method.warmup_epochs"),
        ("method:\n  name: pea\n  ptp_thresholds: [.nan, 0.5]\n", "method.ptp_thresholds.0"),
        ("student:\n  kwargs:\n    drop_rate: .inf\n", "student.kwargs.drop_rate"),
    ],
)
def test_non_finite_number_in_a_file_is_refused(tmp_path: Path, text: str, key: str) -> None:
    path = config_file(tmp_path, text)
    with pytest.raises(UsageError) as error:
        resolve_file(path)
    message = str(error.value)
    assert f"invalid value for {key!r} (from config {path}): must be a finite number" in message


@pytest.mark.parametrize("assignment", ["optim.lr=inf", "optim.lr=.inf", "optim.lr=NaN", "method.temperature=inf"])
def test_non_finite_number_in_set_is_refused(assignment: str) -> None:
    key = assignment.partition("=")[0]
    with pytest.raises(UsageError, match=rf"'{key}' \(from --set {assignment}\): must be a finite number"):
        resolve([(f"--set {assignment}", parse_set(assignment))])


def test_lr_flag_inf_is_refused_before_any_work(tmp_path: Path) -> None:
    """``--lr inf`` used to train a whole epoch and end in exit 1 with advice to lower a rate that was infinite."""
    out = tmp_path / "run"
    line = refused(run_kdcli("distill", "--preset", "quickstart", "--lr", "inf", "--device", "cpu", "--out", str(out)))
    assert "invalid value for 'optim.lr' (from --lr): must be a finite number: inf and nan are refused" in line
    assert not out.exists()


@pytest.mark.parametrize("value", [float("nan"), float("-inf")])
def test_lr_flag_nan_is_refused(value: float) -> None:
    """typer hands ``--lr nan`` over as a float; the flag is its own layer (kdcli.cli.app._layers)."""
    with pytest.raises(UsageError, match=r"'optim.lr' \(from --lr\): must be a finite number"):
        resolve([("preset quickstart", load_preset("quickstart")), ("--lr", nested("optim.lr", value))])


# --- 4. a boolean is not a number --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("train:\n  epochs: true\n", "train.epochs"),
        ("optim:\n  momentum: false\n", "optim.momentum"),
        ("schedule:\n  milestones: [10, true]\n", "schedule.milestones"),
        ("method:\n  name: fitnet\n  hint_weight: true\n", "method.hint_weight"),
        ("method:\n  name: pea\n  ptp_thresholds: [true, 0.5]\n", "method.ptp_thresholds"),
    ],
)
def test_boolean_for_a_number_is_refused(tmp_path: Path, text: str, key: str) -> None:
    path = config_file(tmp_path, text)
    with pytest.raises(UsageError) as error:
        resolve_file(path)
    assert f"invalid value for {key!r} (from config {path}): expected a number, not a boolean" in str(error.value)


def test_numbers_written_otherwise_are_still_numbers(tmp_path: Path) -> None:
    """PyYAML reads ``1e-3`` as a string and ``3.0`` as a float: both stay accepted, as does ``1`` for a switch."""
    path = config_file(tmp_path, "optim:\n  lr: 1e-3\n  momentum: 0\ntrain:\n  epochs: 3.0\ndata:\n  hflip: 1\n")
    config = resolve_file(path).config
    assert (config.optim.lr, config.optim.momentum, config.train.epochs, config.data.hflip) == (1e-3, 0.0, 3, True)


# --- 5. image size -----------------------------------------------------------------------------------------------


def test_image_size_past_2048_is_refused_with_the_reason(tmp_path: Path) -> None:
    path = config_file(tmp_path, "data:\n  image_size: 30000\n")
    line = refused(run_kdcli("config", "show", "--config", str(path)))
    assert f"invalid value for 'data.image_size' (from config {path}): at most 2048 pixels" in line
    assert "timm's pretrained models (1024)" in line and "10.1 GiB" in line
    assert resolve([("--set", parse_set("data.image_size=2048"))]).config.data.image_size == 2048


# --- 6. fitnet's hint stage --------------------------------------------------------------------------------------


def test_negative_hint_stage_is_refused(tmp_path: Path) -> None:
    path = config_file(tmp_path, "method:\n  name: fitnet\n  hint_stage: -1\n")
    with pytest.raises(UsageError) as error:
        resolve_file(path)
    message = str(error.value)
    assert f"invalid value for 'method.hint_stage' (from config {path}): stages count from 0" in message
    assert "give 0 or more" in message
    assert resolve([("--set", parse_set("method={name: fitnet, hint_stage: 0}"))]).config.method_options == {
        "hint_stage": 0, "ce_weight": 1.0, "hint_weight": 100.0}  # fmt: skip


# --- 7. SPS options ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("assignment", ["method.sps=3", "method.sps=[1]", "method.sps=maybe", "method.sps=1e400",
                                        "method.shuffle={a: 1}", "method.tied=null", "method.sps=.inf"])  # fmt: skip
def test_malformed_sps_option_of_pea_is_refused(assignment: str) -> None:
    key = assignment.partition("=")[0]
    with pytest.raises(UsageError, match=rf"^invalid value for '{key}' \(from --set"):
        resolve([("--method pea", {"method": {"name": "pea"}}), (f"--set {assignment}", parse_set(assignment))])


SPS_DAMAGE = [
    ({"shufle": True}, "option shufle=True, which is not one of its options (shuffle, share_norm, tied)"),
    ({"shuffle": "no"}, "option shuffle='no', which must be true or false"),
    ({"tied": 3}, "option tied=3, which must be true or false"),
]


def test_model_file_with_malformed_sps_options_is_refused(tmp_path: Path) -> None:
    """The SPS options a model file records are handed to the transform as they are: an unknown key was a TypeError
    and a traceback."""
    import timm

    import kdcli.models  # noqa: F401  (the CIFAR zoo in timm's registry)
    from kdcli.io.model_file import ModelCard, save_model
    from kdcli.models.sps import apply_sps

    options, fragment = SPS_DAMAGE[0]
    model = apply_sps(timm.create_model("resnet8", num_classes=10, in_chans=1))
    card = ModelCard(arch="resnet8", num_classes=10, in_chans=1, input_size=(1, 32, 32), mean=(0.5,), std=(0.5,),
                     dataset="embedded", student_transform={"name": "sps", "options": options})  # fmt: skip
    path = tmp_path / "student.safetensors"
    save_model(path, model, card)
    line = refused(run_kdcli("eval", str(path), "--device", "cpu"))
    assert f"the student transform 'sps' got {fragment}" in line and "re-export the model" in line


@pytest.mark.parametrize(("options", "fragment"), SPS_DAMAGE, ids=["unknown-key", "string", "number"])
def test_malformed_sps_options_are_refused_by_the_transform(options: dict[str, Any], fragment: str) -> None:
    """A string "no" or a 3 used to turn the option on silently (any truthy value did)."""
    import timm

    import kdcli.models  # noqa: F401
    from kdcli.models.sps import apply_sps

    with pytest.raises(UsageError, match="^the student transform 'sps' got " + re.escape(fragment)):
        apply_sps(timm.create_model("resnet8", num_classes=10), **options)


def test_sps_options_a_run_writes_still_load(tmp_path: Path) -> None:
    import timm

    import kdcli.models  # noqa: F401
    from kdcli.models.sps import apply_sps

    for options in ({}, {"shuffle": False, "share_norm": True, "tied": True}):
        assert apply_sps(timm.create_model("resnet8", num_classes=10), **options) is not None


def test_run_config_written_by_kdcli_reads_back(tmp_path: Path) -> None:
    """config.yaml as a run writes it (yaml.safe_dump of the resolved configuration) passes the bounded loader."""
    import yaml

    from kdcli.config import dump

    resolved = resolve([("preset", load_preset("quickstart")), ("--method", {"method": {"name": "pea"}})])
    path = config_file(tmp_path, yaml.safe_dump(dump(resolved.config), sort_keys=False))
    assert resolve_file(path).config == resolved.config
    assert os.path.getsize(path) < 1 << 20
