"""Faults found by an outside hunt over ``train``, ``distill`` (and ``--resume``) and ``config show``: each ends with
the documented exit code and one line on stderr, no traceback, and no user file lost."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kdcli.cli import main

ASSET = Path(__file__).resolve().parents[2] / "kdcli" / "assets" / "fmnist-mini-resnet20.safetensors"
QUICK = ["--train-subset", "20", "--epochs", "1", "--device", "cpu", "--quiet"]


def kdcli(*args: str, cwd: Path, env: dict[str, str] | None = None, **kwargs: object) -> tuple[int, str, str]:
    done = subprocess.run([sys.executable, "-m", "kdcli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})}, **kwargs)  # type: ignore[call-overload]  # fmt: skip
    return done.returncode, done.stdout, done.stderr


def one_line(code: int, err: str, expected: int) -> str:
    assert code == expected, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def run_in_process(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    return int(exit_info.value.code or 0), capsys.readouterr().err


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-epoch training run (config.yaml and checkpoint.pt), copied by the tests that spoil it."""
    root = tmp_path_factory.mktemp("run")
    code, _, err = kdcli("train", "--model", "resnet8", *QUICK, "--out", "r", cwd=root)
    assert code == 0, err
    return root / "r"


def spoiled(finished_run: Path, tmp_path: Path) -> Path:
    run_dir = tmp_path / "r"
    shutil.copytree(finished_run, run_dir)
    return run_dir


# --- paths -------------------------------------------------------------------------------------------------------


def test_out_name_too_long(tmp_path: Path) -> None:
    code, _, err = kdcli("distill", "--teacher", str(ASSET), "--student", "resnet8", *QUICK, "--out", "a" * 300,
                         cwd=tmp_path)  # fmt: skip
    assert "File name too long" in one_line(code, err, 2)


def test_out_empty_is_refused_not_the_default_folder(tmp_path: Path) -> None:
    code, _, err = kdcli("distill", "--teacher", str(ASSET), "--student", "resnet8", *QUICK, "--out", "", cwd=tmp_path)
    assert "empty path names no folder" in one_line(code, err, 2)
    assert not (tmp_path / "runs").exists()


def test_out_tilde_is_the_home_folder(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    code, _, err = kdcli("train", "--model", "resnet8", *QUICK, "--out", "~/r", cwd=tmp_path, env={"HOME": str(home)})
    assert code == 0, err
    assert (home / "r" / "student.safetensors").is_file()
    assert not (tmp_path / "~").exists()


@pytest.mark.parametrize("target", ["nowhere", "loop"])
def test_out_symbolic_link_to_nothing(tmp_path: Path, target: str) -> None:
    (tmp_path / "out").symlink_to(target)
    if target == "loop":
        (tmp_path / "loop").symlink_to("out")
    code, _, err = kdcli("distill", "--teacher", str(ASSET), "--student", "resnet8", *QUICK, "--out", "out",
                         cwd=tmp_path)  # fmt: skip
    line = one_line(code, err, 2)
    assert "File exists" not in line
    assert ("symbolic link to nothing" if target == "nowhere" else "symbolic links") in line


def test_preset_empty_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_in_process(capsys, "config", "show", "--preset", "")
    assert "--preset is empty" in one_line(code, err, 2)


def test_preset_name_too_long(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_in_process(capsys, "config", "show", "--preset", "p" * 5000)
    assert "unknown preset" in one_line(code, err, 2)


def test_teacher_name_too_long(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_in_process(capsys, "config", "show", "--teacher", "t" * 5000, "--json")
    assert code == 0 and "Traceback" not in err


def test_set_key_nested_too_deep(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_in_process(capsys, "config", "show", "--set", "a." * 3000 + "b=1")
    assert "nests deeper than 32 levels" in one_line(code, err, 2)


# --- the teacher file --------------------------------------------------------------------------------------------


def test_teacher_with_nan_weights_is_refused_as_damaged(tmp_path: Path) -> None:
    raw = ASSET.read_bytes()
    size = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + size])
    body = bytearray(raw[8 + size :])
    start, end = header["conv1.weight"]["data_offsets"]
    body[start:end] = np.full((end - start) // 4, np.nan, dtype=np.float32).tobytes()
    (tmp_path / "t.safetensors").write_bytes(raw[: 8 + size] + bytes(body))
    code, _, err = kdcli("distill", "--teacher", "t.safetensors", "--student", "resnet8", *QUICK, "--out", "o",
                         cwd=tmp_path)  # fmt: skip
    line = one_line(code, err, 2)
    assert "non-finite outputs" in line and "--lr" not in line


@pytest.mark.parametrize("kind", ["folder", "fifo", "devnull", "loop", "long"])
def test_teacher_path_that_is_no_model_file(tmp_path: Path, kind: str) -> None:
    teacher = {"folder": str(tmp_path), "fifo": "fifo", "devnull": os.devnull, "loop": "loop",
               "long": "t" * 300 + ".safetensors"}[kind]  # fmt: skip
    if kind == "fifo":
        os.mkfifo(tmp_path / "fifo")
    if kind == "loop":
        (tmp_path / "loop").symlink_to("loop2")
        (tmp_path / "loop2").symlink_to("loop")
    code, _, err = kdcli("distill", "--teacher", teacher, "--student", "resnet8", *QUICK, "--out", "o", cwd=tmp_path)
    line = one_line(code, err, 2)
    assert "no trained weights" not in line
    assert {"folder": "is a folder", "fifo": "not a regular file", "devnull": "not a regular file",
            "loop": "symbolic links", "long": "File name too long"}[kind] in line  # fmt: skip


# --- --resume of a spoiled run -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_resume_checkpoint_not_a_file(finished_run: Path, tmp_path: Path, kind: str) -> None:
    run_dir = spoiled(finished_run, tmp_path)
    (run_dir / "checkpoint.pt").unlink()
    (run_dir / "checkpoint.pt").mkdir() if kind == "folder" else os.mkfifo(run_dir / "checkpoint.pt")
    code, _, err = kdcli("train", "--resume", "r", "-q", cwd=tmp_path)
    line = one_line(code, err, 2)
    assert "not a regular file" in line and "before its first checkpoint" not in line


def test_resume_config_emptied(finished_run: Path, tmp_path: Path) -> None:
    run_dir = spoiled(finished_run, tmp_path)
    (run_dir / "config.yaml").write_text("")
    code, _, err = kdcli("train", "--resume", "r", "-q", cwd=tmp_path)
    assert "not a whole run configuration" in one_line(code, err, 2)


def test_resume_checkpoint_a_plain_pickle(finished_run: Path, tmp_path: Path) -> None:
    run_dir = spoiled(finished_run, tmp_path)
    import pickle

    (run_dir / "checkpoint.pt").write_bytes(pickle.dumps({"a": 1}, protocol=4))
    code, _, err = kdcli("train", "--resume", "r", "-q", cwd=tmp_path)
    assert "cannot be read" in one_line(code, err, 2)


def test_resume_checkpoint_without_the_training_state(finished_run: Path, tmp_path: Path) -> None:
    run_dir = spoiled(finished_run, tmp_path)
    torch.save({"epoch": "x", "student": {}}, run_dir / "checkpoint.pt")
    code, _, err = kdcli("train", "--resume", "r", "-q", cwd=tmp_path)
    assert "not a kdcli run's checkpoint" in one_line(code, err, 2)


def test_resume_config_edited_to_another_architecture(finished_run: Path, tmp_path: Path) -> None:
    run_dir = spoiled(finished_run, tmp_path)
    config = run_dir / "config.yaml"
    config.write_text(config.read_text().replace("arch: resnet8", "arch: resnet14"))
    code, _, err = kdcli("train", "--resume", "r", "-q", cwd=tmp_path)
    assert "does not fit the run" in one_line(code, err, 2)


# --- streams and signals -----------------------------------------------------------------------------------------


def test_stderr_left_open_read_only_by_a_launcher(tmp_path: Path) -> None:
    """pyenv's shims (shell scripts) leave their script open as fd 2 when the caller closed stderr (`2>&-`)."""
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    with script.open("r") as read_only:
        done = subprocess.run([sys.executable, "-m", "kdcli", "presets", "--bogus"], stderr=read_only,
                              stdout=subprocess.DEVNULL, timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert script.read_text() == "#!/bin/sh\n"


def test_interrupt_inside_a_command_says_so(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """typer turns a KeyboardInterrupt inside a command (Ctrl-C while torch is imported) into a silent exit 130."""

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("kdcli.cli.app.resolve", interrupted)
    code, err = run_in_process(capsys, "config", "show")
    assert "interrupted" in one_line(code, err, 130)


def test_error_after_an_interrupt_is_the_interrupt(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A library import cut short by Ctrl-C fails later with an AttributeError: the interruption's doing."""

    def half_imported(*args: object, **kwargs: object) -> None:
        monkeypatch.setattr("kdcli.cli._signalled", True)
        raise AttributeError("module 'numpy' has no attribute 'iterable'")

    monkeypatch.setattr("kdcli.cli.app.resolve", half_imported)
    code, err = run_in_process(capsys, "config", "show")
    assert "interrupted" in one_line(code, err, 130)


def test_interrupted_process_exits_130_however_python_exits(tmp_path: Path) -> None:
    """An interruption of the process itself ends with exit status 130 and one line (never death by SIGINT)."""
    code = (
        "import sys, kdcli.cli.app as app\n"
        "def stop(*a, **k):\n    raise KeyboardInterrupt\n"
        "app.resolve = stop\nsys.argv = ['kdcli', 'config', 'show']\n"
        "from kdcli.cli import main\nmain()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert "interrupted" in one_line(done.returncode, done.stderr, 130)


# --- data and inputs ---------------------------------------------------------------------------------------------


def test_train_subset_larger_than_the_data_set_is_said() -> None:
    from kdcli.config import RunConfig
    from kdcli.training.run import setup

    config = RunConfig.model_validate({"student": {"arch": "resnet8"}, "method": {"name": "none"},
                                       "data": {"train_subset": 999_999}, "train": {"device": "cpu"}})  # fmt: skip
    notes = setup(config, Path("unused")).data.notes
    from kdcli.cli.options import cli_spelling
    from kdcli.errors import spell

    said = [spell(note, cli_spelling) for note in notes]  # what the command line shows
    assert any("--train-subset 999999 is more than the 5,000" in note for note in said), said


@pytest.mark.parametrize("flag", ["--config", "--preset"])
def test_forced_run_never_replaces_its_configuration_file(tmp_path: Path, flag: str) -> None:
    (tmp_path / "out").mkdir()
    mine = tmp_path / "out" / "config.yaml"
    mine.write_text("# my settings\ntrain: {epochs: 1}\n")
    code, _, err = kdcli("train", flag, "out/config.yaml", "--model", "resnet8", *QUICK, "--out", "out", "--force",
                         cwd=tmp_path)  # fmt: skip
    assert "is an input of this command" in one_line(code, err, 2)
    assert mine.read_text() == "# my settings\ntrain: {epochs: 1}\n"
