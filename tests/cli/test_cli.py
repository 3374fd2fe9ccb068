"""The command line as users meet it: exit codes, one-line errors, JSON on stdout."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ..conftest import run


def test_unknown_architecture_exits_2_with_suggestions(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run(
        capsys,
        "distill",
        "--teacher",
        "resnet8",
        "--allow-untrained-teacher",
        "--student",
        "resnet2O",
        "--data",
        "embedded",
        "--out",
        str(tmp_path / "r"),
    )
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "unknown architecture 'resnet2O'" in err and "resnet20" in err
    assert "Traceback" not in err


def test_missing_data_folder_exits_2_and_says_where_it_looked(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(
        capsys,
        "train",
        "--model",
        "resnet8",
        "--data",
        "fashion-mnist",
        "--data-dir",
        str(tmp_path / "nowhere"),
        "--out",
        str(tmp_path / "r"),
    )
    assert code == 2
    assert "looked in" in err and str(tmp_path / "nowhere") in err and "--data-dir" in err


def test_bad_set_key_exits_2_naming_valid_keys(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "config", "show", "--set", "optim.learning_rate=0.1")
    assert code == 2
    assert "unknown configuration key 'optim.learning_rate'" in err and "lr" in err and "weight_decay" in err


def test_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "config", "show", "--set", "optim.nope=1", "--debug")
    assert code == 2 and "Traceback" in err


def test_teacher_without_weights_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "distill", "--teacher", "resnet8", "--student", "resnet8", "--out", str(tmp_path / "r"))
    assert code == 2 and "no trained weights" in err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["train", "--epochz", "3"],
            "kdcli: error: No such option: --epochz (Possible options: --epochs) (see 'kdcli train -h')\n",
        ),
        (["eval"], "kdcli: error: Missing argument 'FILE' (see 'kdcli eval -h')\n"),
        (["distil"], "kdcli: error: No such command 'distil'. Did you mean 'distill'? (see 'kdcli -h')\n"),
    ],
)
def test_click_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str], args: list[str], expected: str) -> None:
    """click's own refusals (unknown flag or command, missing argument) read like kdcli's: one line, exit 2."""
    code, out, err = run(capsys, *args)
    assert (code, out, err) == (2, "", expected)


def test_bare_kdcli_shows_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys)
    assert code == 2 and "Usage: kdcli [OPTIONS] COMMAND" in err and "distill" in err


def test_config_show_names_sources(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "config", "show", "--preset", "quickstart", "--epochs", "3", "--set", "optim.lr=0.2", "--json"
    )
    shown = json.loads(out)
    assert code == 0
    assert shown["train.epochs"] == {"value": 3, "source": "--epochs"}
    assert shown["optim.lr"] == {"value": 0.2, "source": "--set optim.lr=0.2"}
    assert shown["student.arch"] == {"value": "resnet8", "source": "preset quickstart"}
    assert shown["optim.nesterov"]["source"] == "default"


def test_listing_commands(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "methods", "--json")
    assert code == 0 and "vanilla" in json.loads(out)
    code, out, _ = run(capsys, "presets", "--json")
    assert code == 0 and "quickstart" in json.loads(out)
    code, out, _ = run(capsys, "models", "--json")
    zoo = {m["name"]: m["parameters_100_classes"] for m in json.loads(out)["zoo"]}
    assert code == 0 and zoo["resnet20"] == 278_324


@pytest.mark.slow
def test_distill_then_eval_end_to_end(capsys: pytest.CaptureFixture[str], tmp_path: Path, teacher_file: Path) -> None:
    out_dir = tmp_path / "run"
    code, out, err = run(
        capsys,
        "distill",
        "--teacher",
        str(teacher_file),
        "--student",
        "resnet8",
        "--data",
        "embedded",
        "--train-subset",
        "300",
        "--epochs",
        "1",
        "--batch-size",
        "50",
        "--device",
        "cpu",
        "--out",
        str(out_dir),
        "--json",
    )
    assert code == 0, err
    result = json.loads(out)  # exactly one JSON document
    assert result["run_dir"] == str(out_dir) and result["method"] == "vanilla"
    assert result["teacher"]["sha256"] and 0 <= result["final"]["last_top1"] <= 100
    for name in ("student.safetensors", "report.json", "report.md", "metrics.jsonl", "config.yaml", "checkpoint.pt"):
        assert (out_dir / name).is_file(), name
    assert json.loads((out_dir / "report.json").read_text())["schema"] == "kdcli.report/2"

    student = str(out_dir / "student.safetensors")
    code, out, _ = run(capsys, "eval", student, "--teacher", str(teacher_file), "--json", "--device", "cpu")
    evaluated = json.loads(out)["results"][0]
    assert code == 0 and evaluated["dataset"] == "embedded" and evaluated["samples"] == 1000
    assert evaluated["top1"] == pytest.approx(result["final"]["last_top1"])
    assert 0 <= evaluated["teacher_agreement"] <= 100 and evaluated["parameters"] == 77_754

    code, _, err = run(capsys, "eval", student, "--min-top1", "99.99", "--quiet", "--device", "cpu")
    assert code == 1 and err == ""
    code, _, _ = run(capsys, "eval", student, "--min-top1", "0", "--device", "cpu")
    assert code == 0


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from kdcli import __version__

    code, out, _ = run(capsys, "--version")
    assert code == 0 and out == f"kdcli {__version__}\n"


def test_python_dash_m_works() -> None:
    done = subprocess.run([sys.executable, "-m", "kdcli", "distill", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "Examples" in done.stdout and "--teacher" in done.stdout


def test_resume_refuses_configuration_options(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "distill", "--resume", str(tmp_path), "--epochs", "5", "--set", "optim.lr=1")
    assert code == 2 and "--resume continues" in err and "--epochs" in err and "--set" in err


@pytest.mark.slow
def test_teacher_file_without_the_usual_suffix_is_a_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, teacher_file: Path
) -> None:
    renamed = tmp_path / "teacher.weights"
    renamed.write_bytes(teacher_file.read_bytes())
    code, out, err = run(capsys, "distill", "--teacher", str(renamed), "--student", "resnet8", "--train-subset", "100",
                         "--epochs", "1", "--device", "cpu", "--out", str(tmp_path / "r"), "--json")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["teacher"]["arch"] == "resnet8"


def test_the_summary_line_counts_epochs_in_words(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, teacher_file: Path
) -> None:
    code, out, err = run(capsys, "distill", "--teacher", str(teacher_file), "--student", "resnet8", "--train-subset",
                         "100", "--epochs", "1", "--device", "cpu", "--out", str(tmp_path / "r"))  # fmt: skip
    assert code == 0, err
    assert re.search(r"^1 epoch, [0-9.]+ s/epoch \([0-9]+ % waiting for data\), [0-9]+ images/s on cpu", out, re.M), out


ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}  # bit-for-bit repeatable across processes


def _interruptible() -> None:
    """In the child: SIGINT as in a terminal. A test runner started in the background by a non-interactive shell
    inherits SIGINT ignored, and Python (like kdcli, by POSIX convention) keeps an inherited ignore."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def distill_process(teacher_file: Path, out_dir: Path, epochs: int, *extra: str) -> subprocess.Popen[str]:
    """`kdcli distill` in its own process, one thread, progress lines on stderr, Ctrl-C not ignored."""
    return subprocess.Popen(
        [sys.executable, "-m", "kdcli", "distill", "--teacher", str(teacher_file), "--student", "resnet8",
         "--train-subset", "200", "--epochs", str(epochs), "--device", "cpu", "--out", str(out_dir), *extra],
        stderr=subprocess.PIPE, text=True, env=ONE_THREAD, preexec_fn=_interruptible,
    )  # fmt: skip


def wait_for_epoch(process: subprocess.Popen[str], epoch: int, epochs: int) -> None:
    """Read stderr up to the line that reports ``epoch`` finished (its checkpoint is written by then)."""
    assert process.stderr is not None
    for line in process.stderr:
        if line.startswith(f"epoch {epoch:>3}/{epochs}"):
            return
    raise AssertionError(f"the run ended before epoch {epoch}")


@pytest.mark.slow
@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_a_signal_stops_with_130_after_a_resumable_checkpoint(
    tmp_path: Path, teacher_file: Path, signal_name: str
) -> None:
    out_dir = tmp_path / "run"
    process = distill_process(teacher_file, out_dir, 50)
    wait_for_epoch(process, 1, 50)
    process.send_signal(getattr(signal, signal_name))
    assert process.stderr is not None
    rest = process.stderr.read()
    assert process.wait(timeout=120) == 130
    assert "--resume" in rest and (out_dir / "checkpoint.pt").is_file()


@pytest.mark.slow
def test_ctrl_c_before_the_first_checkpoint_says_to_run_again(tmp_path: Path, teacher_file: Path) -> None:
    """A real SIGINT right after the teacher check, inside the first epoch: exit 130, one line saying there is nothing
    to resume, no traceback."""
    process = distill_process(teacher_file, tmp_path / "run", 50)
    assert process.stderr is not None
    for line in process.stderr:
        if line.startswith("teacher "):  # the teacher check is done; the first epoch is starting
            break
    process.send_signal(signal.SIGINT)
    rest = process.stderr.read()
    assert process.wait(timeout=120) == 130
    assert "nothing to resume" in rest and "Traceback" not in rest, rest


@pytest.mark.slow
def test_a_second_process_on_a_running_out_is_refused(tmp_path: Path, teacher_file: Path) -> None:
    """Two commands on the same --out while the first runs: a fresh start and a --resume both exit 2 at once (the
    resume, which would otherwise race the first for the same files, on the folder's lock); the first goes on."""
    first = distill_process(teacher_file, tmp_path / "run", 50)
    wait_for_epoch(first, 1, 50)
    fresh, resume = (
        subprocess.run([sys.executable, "-m", "kdcli", *args], capture_output=True, text=True, timeout=120)
        for args in (["train", "--model", "resnet8", "--data", "embedded", "--out", str(tmp_path / "run")],
                     ["distill", "--resume", str(tmp_path / "run")])
    )  # fmt: skip
    wait_for_epoch(first, 2, 50)
    first.kill()
    first.wait(timeout=60)
    assert fresh.returncode == 2 and "already holds a run" in fresh.stderr, fresh.stderr
    assert resume.returncode == 2 and "in use by another kdcli run" in resume.stderr, resume.stderr
    assert "teacher" in (tmp_path / "run" / "config.yaml").read_text()  # still the first (distill) run's


@pytest.mark.slow
def test_killed_mid_epoch_resumes_to_the_same_student(tmp_path: Path, teacher_file: Path) -> None:
    """SIGKILL (no handler runs) in the second epoch: `--resume` starts again from the first epoch's checkpoint and
    ends at the very weights of a run that was never stopped."""
    from safetensors.torch import load_file

    straight = distill_process(teacher_file, tmp_path / "straight", 3)
    assert straight.communicate(timeout=300)[1] is not None and straight.returncode == 0
    killed = distill_process(teacher_file, tmp_path / "killed", 3)
    wait_for_epoch(killed, 1, 3)
    killed.kill()
    assert killed.wait(timeout=60) == -9
    assert not (tmp_path / "killed" / "student.safetensors").exists()
    resumed = subprocess.run([sys.executable, "-m", "kdcli", "distill", "--resume", str(tmp_path / "killed")],
                             capture_output=True, text=True, timeout=300, env=ONE_THREAD)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    expected = load_file(str(tmp_path / "straight" / "student.safetensors"))
    for name, tensor in load_file(str(tmp_path / "killed" / "student.safetensors")).items():
        assert torch.equal(tensor, expected[name]), name


def test_config_show_takes_every_distill_flag(capsys: pytest.CaptureFixture[str]) -> None:
    """The flags come from one table: config show accepts what distill accepts and names each as the source."""
    code, out, err = run(capsys, "config", "show", "--precision", "bf16", "--no-compile", "--cuda-graphs",
                         "--channels-last", "--teacher-pretrained", "--allow-untrained-teacher",
                         "--student-ckpt", "s.safetensors", "--teacher", "resnet56", "--json")  # fmt: skip
    assert code == 0, err
    rows = json.loads(out)
    assert rows["train.precision"] == {"value": "bf16", "source": "--precision"}
    assert rows["train.compile"] == {"value": False, "source": "--compile"}
    assert rows["train.cuda_graphs"]["value"] is True and rows["train.channels_last"]["value"] is True
    assert rows["teacher.pretrained"]["value"] is True and rows["train.allow_untrained_teacher"]["value"] is True
    assert rows["teacher.arch"]["value"] == "resnet56" and rows["student.checkpoint"]["source"] == "--student-ckpt"


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["methods"], ["models"], ["presets"], ["distill", "-h"]])
def test_quick_commands_import_neither_torch_nor_timm(args: list[str]) -> None:
    """What a shell pipeline asks often answers without the engine (measured: docs/results.md, "CLI start-up")."""
    probe = (
        "import sys\nfrom kdcli.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
        "    heavy = sorted(m for m in ('torch', 'timm', 'numpy') if m in sys.modules)\n"
        "    print('HEAVY', heavy, 'CODE', e.code, file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True)
    assert "HEAVY [] CODE 0" in done.stderr, done.stderr[-500:]


@pytest.mark.parametrize("command", [[], ["distill"], ["train"], ["eval"], ["analyze"], ["models"], ["methods"],
                                     ["presets"], ["compare"], ["import"], ["export"], ["config", "show"]])  # fmt: skip
def test_help_fits_80_columns(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    """Plain help (no boxes, no colour) that a terminal of 80 columns shows without wrapping."""
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run(capsys, *command, "--help")
    assert code == 0 and "Usage: kdcli" in out
    too_long = [line for line in out.splitlines() if len(line) > 80]
    assert not too_long, too_long
    # no click/typer type placeholders, no "{FILE}" usage, no word (an option name, a path) cut at its hyphen
    placeholders = re.compile(
        r"\b(TEXT|PATH|INTEGER|FLOAT|BOOLEAN)\b|<(list|tuple|str|int|float|bool|Path)\b|\{[A-Z]+\}|\w-$"
    )
    flawed = [line for line in out.splitlines() if placeholders.search(line)]
    assert not flawed, flawed
