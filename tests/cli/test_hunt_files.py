"""Faults found by a hostile-user hunt over eval, export, import, compare and analyze: each test is one case that
ended in a traceback, a misleading message or silent nonsense before it was fixed. Each ends with the documented exit
code, exactly one line on stderr, and no traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..conftest import refused, run

ASSET = Path(__file__).resolve().parents[2] / "kdcli" / "assets" / "fmnist-mini-resnet20.safetensors"
LONG = "b" * 300  # over NAME_MAX (255)


def process(*args: str, cwd: Path) -> tuple[int, str]:
    """``python -m kdcli ARGS`` as a real process: its exit code and stderr."""
    done = subprocess.run([sys.executable, "-m", "kdcli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip
    return done.returncode, done.stderr


def with_metadata(tmp_path: Path, name: str = "m.safetensors", **changes: str) -> Path:
    with safe_open(str(ASSET), "pt") as handle:
        metadata = dict(handle.metadata())
    metadata.update(changes)
    path = tmp_path / name
    save_file(load_file(str(ASSET)), str(path), metadata=metadata)
    return path


# --- eval: paths that are not model files ---------------------------------------------------------------------------


def test_eval_device_file_is_not_called_missing(capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(capsys, 2, "eval", "/dev/null", "--device", "cpu")
    assert "not a regular file" in err and "does not exist" not in err


def test_eval_fifo_is_not_called_missing(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    err = refused(capsys, 2, "eval", str(tmp_path / "pipe"), "--device", "cpu")
    assert "not a regular file" in err


def test_eval_name_too_long(tmp_path: Path) -> None:
    code, err = process("eval", f"{LONG}.safetensors", "--device", "cpu", cwd=tmp_path)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "File name too long" in err


def test_eval_symlink_loop(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    err = refused(capsys, 2, "eval", str(tmp_path / "a"), "--device", "cpu")
    assert "loop of symbolic links" in err


# --- eval: model files whose metadata or tensors lie ----------------------------------------------------------------


def test_eval_card_with_huge_num_classes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = with_metadata(tmp_path, num_classes="100000000000")
    assert "num_classes: must be at most" in refused(capsys, 2, "eval", str(path), "--device", "cpu")


def test_eval_card_with_huge_input_size(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = with_metadata(tmp_path, input_size="[1, 100000, 100000]")
    assert "input_size" in refused(capsys, 2, "eval", str(path), "--device", "cpu")


def test_eval_card_with_json_nested_too_deep(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = with_metadata(tmp_path, model_kwargs="[" * 100_000 + "]" * 100_000)
    assert "'model_kwargs' is not JSON" in refused(capsys, 2, "eval", str(path), "--device", "cpu")


def test_eval_card_whose_class_names_miscount(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = with_metadata(tmp_path, classes='["only one"]')
    assert "classes names 1 classes but num_classes is 10" in refused(capsys, 2, "eval", str(path), "--device", "cpu")


def test_eval_weights_stored_as_int8(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with safe_open(str(ASSET), "pt") as handle:
        metadata = handle.metadata()
    tensors = {k: v.to(torch.int8) if v.is_floating_point() else v for k, v in load_file(str(ASSET)).items()}
    save_file(tensors, str(tmp_path / "int8.safetensors"), metadata=metadata)
    err = refused(capsys, 2, "eval", str(tmp_path / "int8.safetensors"), "--device", "cpu")
    assert "as int8, not floating point" in err


def test_eval_unknown_data_set_in_the_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = with_metadata(tmp_path, dataset="imagenet-99")
    err = refused(capsys, 2, "eval", str(path), "--device", "cpu")
    assert "records the data set 'imagenet-99'" in err and "(from --data)" not in err


def test_analyze_unknown_data_set_in_the_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = with_metadata(tmp_path, dataset="imagenet-99")
    err = refused(capsys, 2, "analyze", "--teacher", str(path), "--device", "cpu")
    assert "records the data set 'imagenet-99'" in err and "(from --data)" not in err


def test_analyze_out_that_cannot_be_made_is_refused_before_the_work(capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(capsys, 2, "analyze", "--teacher", str(ASSET), "--out", "/proc/kdcli-analysis", "--device", "cpu")
    assert "cannot be made in /proc" in err


# --- import ---------------------------------------------------------------------------------------------------------


def test_import_int8_checkpoint(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    tensors = {k: v.to(torch.int8) if v.is_floating_point() else v for k, v in load_file(str(ASSET)).items()}
    torch.save({"state_dict": tensors}, tmp_path / "i8.pth")
    out = tmp_path / "out.safetensors"
    err = refused(capsys, 2, "import", str(tmp_path / "i8.pth"), "--arch", "resnet20", "--data", "embedded",
                  "--out", str(out))  # fmt: skip
    assert "as int8, not floating point" in err and not out.exists()


def test_import_out_with_a_trailing_slash(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    torch.save(load_file(str(ASSET)), tmp_path / "w.pth")
    err = refused(capsys, 2, "import", str(tmp_path / "w.pth"), "--arch", "resnet20", "--data", "embedded",
                  "--out", f"{tmp_path / 'newdir'}/")  # fmt: skip
    assert "names a folder" in err and not (tmp_path / "newdir").exists()


def test_import_device_file_is_not_called_missing(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    err = refused(capsys, 2, "import", "/dev/null", "--arch", "resnet20", "--data", "embedded",
                  "--out", str(tmp_path / "o.safetensors"))  # fmt: skip
    assert "not a regular file" in err


def test_import_checkpoint_name_too_long(tmp_path: Path) -> None:
    code, err = process("import", f"{LONG}.pth", "--arch", "resnet20", "--data", "embedded", "--out", "o.safetensors",
                        cwd=tmp_path)  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err


def test_import_out_name_too_long(tmp_path: Path) -> None:
    torch.save(load_file(str(ASSET)), tmp_path / "w.pth")
    code, err = process("import", "w.pth", "--arch", "resnet20", "--data", "embedded", "--out",
                        f"{LONG}.safetensors", cwd=tmp_path)  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err


# --- compare --------------------------------------------------------------------------------------------------------


@pytest.fixture
def run_copy(teacher_file: Path, tmp_path: Path) -> Any:
    """A copy of a real run's folder whose report.json ``change`` edits."""

    def copy(name: str, change: Any) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        report = json.loads((teacher_file.parent / "report.json").read_text())
        change(report)
        (folder / "report.json").write_text(json.dumps(report))
        return folder

    return copy


def test_compare_wall_seconds_that_overflow_a_sum(capsys: pytest.CaptureFixture[str], run_copy: Any) -> None:
    def huge(seed: int) -> Any:
        def change(report: dict[str, Any]) -> None:
            report["timing"]["wall_seconds"] = 1.7e308
            report["config"]["train"]["seed"] = seed

        return change

    first, second = run_copy("a", huge(1)), run_copy("b", huge(2))
    assert "timing.wall_seconds" in refused(capsys, 2, "compare", str(first), str(second))


def test_compare_negative_counts(capsys: pytest.CaptureFixture[str], run_copy: Any) -> None:
    folder = run_copy("neg", lambda report: report["student"].update(parameters=-5))
    assert "student.parameters = -5, not a count" in refused(capsys, 2, "compare", str(folder))


def test_compare_parameter_count_of_400_digits(capsys: pytest.CaptureFixture[str], run_copy: Any) -> None:
    folder = run_copy("huge", lambda report: report["student"].update(parameters=10**400))
    assert "(401 digits)" in refused(capsys, 2, "compare", str(folder))


def test_compare_run_of_a_plugin_method_not_installed(capsys: pytest.CaptureFixture[str], run_copy: Any) -> None:
    folder = run_copy("plugin", lambda report: report["config"].update(method={"name": "someplugin", "x": 1}))
    code, out, err = run(capsys, "compare", str(folder))
    assert code == 0 and err == "" and "| someplugin |" in out


def test_compare_seed_that_is_not_an_integer(capsys: pytest.CaptureFixture[str], run_copy: Any) -> None:
    folder = run_copy("seed", lambda report: report["config"]["train"].update(seed={"a": [1]}))
    assert "train.seed" in refused(capsys, 2, "compare", str(folder))


def test_compare_report_that_is_a_fifo(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    os.mkfifo(tmp_path / "run" / "report.json")
    err = refused(capsys, 2, "compare", str(tmp_path / "run"))
    assert "report.json is not a regular file" in err and "has no report.json" not in err


def test_compare_a_file_instead_of_a_run_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    shutil.copy(ASSET, tmp_path / "m.safetensors")
    assert "is a file, not a run folder" in refused(capsys, 2, "compare", str(tmp_path / "m.safetensors"))


# --- export ---------------------------------------------------------------------------------------------------------


def test_export_onnx_out_with_a_trailing_slash(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    err = refused(capsys, 2, "export", str(ASSET), "--out", f"{tmp_path / 'newdir'}/")
    assert "names a folder" in err and not (tmp_path / "newdir").exists()
