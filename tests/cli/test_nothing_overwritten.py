"""No command writes over a file it did not create (docs/reliability.md, "Nothing overwritten"): a run into a folder
that is not a kdcli run, an export or import over its own input (by path, symbolic or hard link), over something
that is not a regular file, or over someone's model folder is refused with exit 2 and one line, and the user's
files are byte for byte what they were. ``--force`` says to write anyway, but never over an input."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

from ..conftest import run

ASSET = Path(__file__).resolve().parents[2] / "kdcli" / "assets" / "fmnist-mini-resnet20.safetensors"
QUICK = ["--epochs", "1", "--train-subset", "100", "--device", "cpu", "--quiet"]
TRAIN = ["train", "--model", "resnet8", "--data", "embedded", *QUICK]
NEEDS_ONNX = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="the kdcli[onnx] extra")


def refused(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Exit 2 with exactly one line on stderr and no traceback; returns that line."""
    code, _, err = run(capsys, *args)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("kdcli: error: ") and "Traceback" not in err, err
    return err


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def a_project_folder(tmp_path: Path) -> Path:
    """Someone's folder that happens to hold files with the names a run writes."""
    folder = tmp_path / "project"
    folder.mkdir()
    for name, text in (("config.yaml", "lr: 3\n"), ("report.md", "# my notes\n"), ("student.safetensors", "x"),
                       ("data.csv", "a,b\n")):  # fmt: skip
        (folder / name).write_text(text)
    return folder


# --- runs ---------------------------------------------------------------------------------------------------------


def test_a_run_into_a_folder_that_is_not_a_run_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    folder = a_project_folder(tmp_path)
    before = snapshot(folder)
    err = refused(capsys, *TRAIN, "--out", str(folder))
    assert "already holds files that are not a kdcli run's (config.yaml, data.csv, report.md and 1 more)" in err
    assert "--force" in err
    assert snapshot(folder) == before


def test_a_folder_holding_only_files_named_as_a_runs_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A report.md of one's own is not kdcli's because of its name: without kdcli's config.yaml nothing there is."""
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "report.md").write_text("# my notes\n")
    assert "(report.md)" in refused(capsys, *TRAIN, "--out", str(folder))
    assert (folder / "report.md").read_text() == "# my notes\n"


def test_force_writes_a_run_beside_other_files(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "data.csv").write_text("a,b\n")
    code, _, err = run(capsys, *TRAIN, "--out", str(folder), "--force")
    assert code == 0, err
    assert (folder / "data.csv").read_text() == "a,b\n" and (folder / "student.safetensors").is_file()


def test_a_folder_left_before_the_first_checkpoint_takes_the_same_command_again(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """What "run the same command again" (after an early Ctrl-C) finds: kdcli's own config.yaml and lock file."""
    folder = tmp_path / "run"
    assert run(capsys, *TRAIN, "--out", str(folder))[0] == 0
    for name in os.listdir(folder):
        if name not in ("config.yaml", ".kdcli.lock"):
            (folder / name).unlink()
    code, _, err = run(capsys, *TRAIN, "--out", str(folder))
    assert code == 0, err


@pytest.mark.parametrize("link", ["path", "symlink", "hardlink"])
def test_a_run_never_writes_over_its_teacher(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, teacher_file: Path, link: str
) -> None:
    """--out is the folder that holds the teacher file (named as a run's student, reached by path or link): even
    --force cannot make the new student replace it."""
    folder = tmp_path / "models"
    folder.mkdir()
    teacher = folder / "student.safetensors"
    shutil.copy(teacher_file, teacher)
    given = teacher
    if link == "symlink":
        given = tmp_path / "teacher-link.safetensors"
        given.symlink_to(teacher)
    elif link == "hardlink":
        given = tmp_path / "teacher-hard.safetensors"
        os.link(teacher, given)
    before = teacher.read_bytes()
    err = refused(capsys, "distill", "--teacher", str(given), "--student", "resnet8", "--data", "embedded", *QUICK,
                  "--out", str(folder), "--force")  # fmt: skip
    assert "is an input of this command" in err and "student.safetensors" in err
    assert teacher.read_bytes() == before


def test_force_with_resume_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert "drop --force" in refused(capsys, "train", "--resume", str(tmp_path), "--force")


# --- export -------------------------------------------------------------------------------------------------------


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "student.safetensors"
    shutil.copy(ASSET, path)
    return path


@pytest.mark.parametrize("form", ["path", "symlink", "hardlink"])
@pytest.mark.parametrize("force", [[], ["--force"]])
def test_export_never_writes_over_its_input(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, model_file: Path, form: str, force: list[str]
) -> None:
    out = model_file
    if form == "symlink":
        out = tmp_path / "link.onnx"
        out.symlink_to(model_file)
    elif form == "hardlink":
        out = tmp_path / "hard.onnx"
        os.link(model_file, out)
    before = model_file.read_bytes()
    err = refused(capsys, "export", str(model_file), "--out", str(out), *force)
    assert "is an input of this command" in err
    assert model_file.read_bytes() == before


def test_export_onto_a_named_pipe_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    err = refused(capsys, "export", str(ASSET), "--out", str(pipe))
    assert "is not a regular file" in err and "--force" in err
    assert pipe.is_fifo()


@NEEDS_ONNX
def test_export_replaces_its_own_onnx_but_not_someone_elses_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    theirs = tmp_path / "model.onnx"
    theirs.write_bytes(b"their model")
    err = refused(capsys, "export", str(ASSET), "--out", str(theirs))
    assert "already exists and was not written by kdcli" in err
    assert theirs.read_bytes() == b"their model"
    ours = tmp_path / "ours.onnx"
    for _ in range(2):  # the second export replaces the first, which kdcli wrote
        code, _, err = run(capsys, "export", str(ASSET), "--out", str(ours), "--json")
        assert code == 0, err
    code, _, err = run(capsys, "export", str(ASSET), "--out", str(theirs), "--force", "--json")
    assert code == 0 and theirs.read_bytes() != b"their model"


def test_export_timm_into_someone_elses_model_folder_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = tmp_path / "their-model"
    folder.mkdir()
    (folder / "config.json").write_text('{"architecture": "resnet50"}')
    (folder / "model.safetensors").write_bytes(b"weights")
    before = snapshot(folder)
    err = refused(capsys, "export", str(ASSET), "--format", "timm", "--out", str(folder))
    assert "config.json" in err or "model.safetensors" in err
    assert "was not written by kdcli" in err
    assert snapshot(folder) == before
    again = tmp_path / "ours"
    for _ in range(2):  # a folder kdcli exported takes the next export
        code, _, err = run(capsys, "export", str(ASSET), "--format", "timm", "--out", str(again), "--json")
        assert code == 0, err


# --- import -------------------------------------------------------------------------------------------------------


def test_import_over_a_file_that_is_not_a_model_file_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import torch
    from safetensors.torch import load_file

    source = tmp_path / "resnet20.pth"
    torch.save(load_file(str(ASSET)), source)
    theirs = tmp_path / "notes.safetensors"
    theirs.write_text("not weights")
    err = refused(capsys, "import", str(source), "--arch", "resnet20", "--data", "embedded", "--out", str(theirs))
    assert "was not written by kdcli" in err and theirs.read_text() == "not weights"


def test_import_without_the_data_or_the_default_normalization_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "x.safetensors"
    err = refused(capsys, "import", str(ASSET), "--arch", "resnet20", "--out", str(out))
    assert "--data NAME" in err and "--default-normalization" in err and not out.exists()
