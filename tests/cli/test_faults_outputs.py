"""Nothing lost, no traceback (docs/reliability.md): damaged model metadata, damaged or hostile reports for compare,
a stdout that cannot take the results, analyze's inputs and --out, numbers JSON has no word for, and eval's advice.
Each ends in exit 2 (bad input) or 1 (a failure at run time) with one line on stderr that names the path and the way
out, and the user's files are byte for byte what they were."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from kdcli.reporting.report import read_report

from ..conftest import run

ROOT = Path(__file__).resolve().parents[2]
ASSET = ROOT / "kdcli" / "assets" / "fmnist-mini-resnet20.safetensors"
RUNS = ROOT / "bench" / "results" / "gpu-2026-11-30" / "fmnist5k"
ANALYZE = ["--train-subset", "100", "--device", "cpu", "--quiet"]


def one_line(code: int, got: int, err: str) -> str:
    """The exit code expected, exactly one line on stderr, kdcli's own, and no traceback."""
    assert got == code, err
    assert err.count("\n") == 1 and err.startswith("kdcli: error: "), err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    return err


def refused(capsys: pytest.CaptureFixture[str], code: int, *args: str) -> str:
    got, _, err = run(capsys, *args)
    return one_line(code, got, err)


def kdcli(*args: str, **popen: Any) -> subprocess.CompletedProcess[str]:
    """``python -m kdcli ARGS`` in a process of its own (its stdout is what the test gives it)."""
    return subprocess.run([sys.executable, "-m", "kdcli", *args], stderr=subprocess.PIPE, text=True, timeout=600,
                          check=False, **popen)  # fmt: skip


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def model_copy(path: Path, tensors: dict[str, Any] | None = None, **metadata: str) -> Path:
    """The shipped model with some metadata replaced (and, given, other tensors)."""
    with safe_open(str(ASSET), "pt") as handle:
        card = dict(handle.metadata())
    save_file(tensors if tensors is not None else load_file(str(ASSET)), str(path), metadata={**card, **metadata})
    return path


# --- 1. a model file whose normalization or input size is malformed ------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("mean", "[0.2, 0.3]", "mean has 2 values for 1-channel input"),
        ("mean", '["a"]', "mean.0"),
        ("mean", "[NaN]", "mean: must be finite"),
        ("mean", "[]", "mean: is empty"),
        ("std", "[-0.3]", "std: must be positive"),
        ("std", "[0]", "std: must be positive"),
        ("std", "[Infinity]", "std: must be finite"),
        ("input_size", "[0, 0]", "input_size: must be [channels, height, width]"),
        ("input_size", "[1, 32, 32, 1]", "input_size: must be [channels, height, width]"),
        ("input_size", "[1, 0, 0]", "input_size must be [in_chans, height, width]"),
        ("input_size", "[3, 32, 32]", "input_size must be [in_chans, height, width] = [1, H, W]"),
        ("in_chans", "0", "in_chans: must be 1 or more"),
    ],
)
def test_eval_of_malformed_normalization_metadata(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, key: str, value: str, says: str
) -> None:
    """Before, a mean of the wrong length or an input_size of [1, 0, 0] ended in torch's traceback, and a std of 0
    or below evaluated to NaN or nonsense with exit 0."""
    path = model_copy(tmp_path / "model.safetensors", **{key: value})
    before = snapshot(tmp_path)
    err = refused(capsys, 2, "eval", str(path), "--device", "cpu")
    assert f"{path}: kdcli metadata is damaged" in err and says in err and "re-export" in err
    assert snapshot(tmp_path) == before


# --- 2. compare: damaged reports, NaN, a full device, one run given twice ------------------------------------------


def run_copy(tmp_path: Path, name: str = "vanilla-s0") -> Path:
    return Path(shutil.copytree(RUNS / name, tmp_path / name))


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        ("truncated", "Invalid JSON: EOF while parsing"),
        ("not JSON", "Invalid JSON: expected value"),
        ("binary", "not text"),
        ("a list", "Input should be an object"),
        ("config of another shape", "config lacks method.name"),
        ("schema 1 without its sections", "Field required"),
    ],
)
def test_compare_of_a_damaged_report(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, damage: str, says: str
) -> None:
    run_dir = run_copy(tmp_path)
    report = run_dir / "report.json"
    text = report.read_text()
    document = json.loads(text)
    damaged = {
        "truncated": text.encode()[:300],
        "not JSON": b"hello\n",
        "binary": bytes(range(256)),
        "a list": b"[]\n",
        "config of another shape": json.dumps({**document, "config": {"x": 1}}).encode(),
        "schema 1 without its sections": b'{"schema": "kdcli.report/1"}',
    }[damage]
    report.write_bytes(damaged)
    err = refused(capsys, 2, "compare", str(run_dir), str(RUNS / "vanilla-s1"))
    assert f"{report} is not a kdcli report" in err and says in err and f"leave {run_dir} out" in err
    assert report.read_bytes() == damaged


@pytest.mark.parametrize("field", ["last_top1", "best_top1", "max_test_top1"])
def test_compare_of_a_report_whose_top1_is_nan(capsys: pytest.CaptureFixture[str], tmp_path: Path, field: str) -> None:
    """Before, the NaN became the group's mean: "nan ± 0.00" in the table, the token NaN in --json."""
    run_dir = run_copy(tmp_path)
    document = json.loads((run_dir / "report.json").read_text())
    document["final"][field] = math.nan
    (run_dir / "report.json").write_text(json.dumps(document))
    before = snapshot(tmp_path)
    err = refused(capsys, 2, "compare", str(run_dir), "--json")
    assert f"final.{field} = nan, not a top-1 in percent" in err and f"leave {run_dir} out" in err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("as_json", [False, True], ids=["markdown", "json"])
def test_compare_into_a_full_device(as_json: bool) -> None:
    """`kdcli compare RUN > /dev/full`: before, OSError's traceback."""
    with open("/dev/full", "w") as full:
        done = kdcli("compare", str(RUNS / "vanilla-s0"), *(["--json"] if as_json else []), stdout=full)
    err = one_line(1, done.returncode, done.stderr)
    assert "cannot write the results to stdout (No space left on device)" in err


def test_compare_counts_a_run_given_twice_once(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The same run again (the same path, another spelling of it, a symbolic link to it) is one seed, not three:
    counted once, with one warning line. Before, seeds [0, 0, 0, 1] and a standard deviation over copies."""
    first, second = run_copy(tmp_path, "vanilla-s0"), run_copy(tmp_path, "vanilla-s1")
    link = tmp_path / "link"
    link.symlink_to(first)
    code, out, err = run(capsys, "compare", str(first), str(second), str(first), f"{tmp_path}/./vanilla-s0/",
                         str(link), "--json")  # fmt: skip
    assert code == 0, err
    (row,) = json.loads(out)["rows"]
    assert row["seeds"] == [0, 1]
    warning = f"a run given more than once is counted once, not as more seeds: {first} 4 times (also as {link})"
    assert err == f"kdcli: warning: {warning}\n"


# --- 3. a stdout that cannot take the results ----------------------------------------------------------------------


def test_eval_json_into_a_closed_stdout() -> None:
    """`kdcli eval --json >&-`: before, exit 1 with an AttributeError traceback ('NoneType' has no 'flush')."""
    done = kdcli("eval", str(ASSET), "--device", "cpu", "--json", "--quiet", preexec_fn=lambda: os.close(1))
    err = one_line(1, done.returncode, done.stderr)
    assert "cannot write the results to stdout (it is closed)" in err and "> FILE" in err


def test_eval_json_into_a_pipe_whose_reader_has_exited() -> None:
    """`kdcli eval --json | head -c1`, with head gone before the results come: EPIPE, one line, no "Exception
    ignored" from Python's last flush."""
    reader, writer = os.pipe()
    os.close(reader)
    try:
        done = kdcli("eval", str(ASSET), "--device", "cpu", "--json", "--quiet", stdout=writer)
    finally:
        os.close(writer)
    err = one_line(1, done.returncode, done.stderr)
    assert "cannot write the results to stdout (Broken pipe" in err


# --- 4. analyze: weights that do not fit, an --out that is someone's, a temperature of 0 or NaN ---------------------


@pytest.mark.parametrize("role", ["teacher", "student"])
def test_analyze_with_weights_that_do_not_fit(capsys: pytest.CaptureFixture[str], tmp_path: Path, role: str) -> None:
    """A teacher whose tensors are not the architecture its metadata names; a student of another class count (before,
    an IndexError traceback after the teacher's whole pass)."""
    if role == "teacher":
        path = model_copy(tmp_path / "model.safetensors", arch="resnet8")
        says = f"{path} does not fit this architecture"
    else:
        tensors = load_file(str(ASSET))
        tensors = {**tensors, "fc.weight": tensors["fc.weight"][:5].contiguous(), "fc.bias": tensors["fc.bias"][:5]}
        path = model_copy(tmp_path / "model.safetensors", tensors, num_classes="5", classes='["a","b","c","d","e"]')
        says = f"the student {path} predicts 5 classes but the teacher"
    args = ["--teacher", str(path)] if role == "teacher" else ["--teacher", str(ASSET), "--student", str(path)]
    before = snapshot(tmp_path)
    err = refused(capsys, 2, "analyze", *args, *ANALYZE, "--out", str(tmp_path / "analysis"))
    assert says in err
    assert snapshot(tmp_path) == before and not (tmp_path / "analysis").exists()


def test_analyze_out_that_is_not_an_analysis(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A folder of someone's files, a file, a path below a file: refused before the analysis (before, analyze wrote
    its files among them, or ended in FileExistsError's traceback). --force writes beside the files, never over
    them; a previous analysis is replaced, its figures of another temperature removed."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("mine\n")
    (project / "analysis.md").write_text("# my own analysis\n")
    (tmp_path / "file").write_text("a file\n")
    before = snapshot(tmp_path)
    err = refused(capsys, 2, "analyze", "--teacher", str(ASSET), *ANALYZE, "--out", str(project))
    assert "already holds files that are not a kdcli analysis (analysis.md, notes.txt)" in err and "--force" in err
    err = refused(capsys, 2, "analyze", "--teacher", str(ASSET), *ANALYZE, "--out", str(tmp_path / "file"))
    assert "is a file, not a folder" in err
    err = refused(capsys, 2, "analyze", "--teacher", str(ASSET), *ANALYZE, "--out", str(tmp_path / "file" / "below"))
    assert f"{tmp_path / 'file'} is a file, not a folder" in err
    assert snapshot(tmp_path) == before

    code, _, err = run(capsys, "analyze", "--teacher", str(ASSET), *ANALYZE, "--out", str(project), "--force")
    assert code == 0, err
    assert (project / "notes.txt").read_text() == "mine\n" and (project / "analysis.json").is_file()

    fresh = tmp_path / "fresh"
    assert run(capsys, "analyze", "--teacher", str(ASSET), *ANALYZE, "--out", str(fresh))[0] == 0
    code, _, err = run(capsys, "analyze", "--teacher", str(ASSET), *ANALYZE, "--out", str(fresh), "--temperature", "2")
    assert code == 0, err
    assert sorted(p.name for p in fresh.glob("*.png")) == [f"{kind}-t{t}.png" for kind in
                                                          ("confidence", "decomposition", "relationships")
                                                          for t in (1, 2)]  # fmt: skip


@pytest.mark.parametrize("temperature", ["0", "nan", "-1", "inf"])
def test_analyze_temperature_must_be_positive(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, temperature: str
) -> None:
    """Before, T = 0 or NaN gave exit 0 and a document of NaN."""
    err = refused(capsys, 2, "analyze", "--teacher", str(ASSET), *ANALYZE, "--temperature", temperature,
                  "--out", str(tmp_path / "analysis"))  # fmt: skip
    assert f"--temperature must be a positive number (the run's T, 4 say), not {temperature}" in err
    assert not (tmp_path / "analysis").exists()


# --- 5. numbers that are not finite, in JSON ---------------------------------------------------------------------


def strict_json(text: str) -> Any:
    """JSON as parsers other than Python's read it: no NaN, no Infinity."""

    def refuse(token: str) -> None:
        raise ValueError(f"{token} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_eval_json_of_an_infinite_nll_says_so(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A model that gives class 0 a logit of -inf has an infinite NLL on class 0's images. Before, --json printed the
    token Infinity (not JSON); now the string "inf", with a note on stderr naming the field."""
    tensors = load_file(str(ASSET))
    tensors["fc.bias"][0] = -math.inf
    path = model_copy(tmp_path / "model.safetensors", tensors)
    code, out, err = run(capsys, "eval", str(path), "--device", "cpu", "--json")
    assert code == 0, err
    assert strict_json(out)["results"][0]["nll"] == "inf"
    assert err == 'kdcli: note: not finite, so written as a string in the JSON: results[0].nll = "inf"\n'


def test_report_json_writes_non_finite_numbers_as_strings_not_null(tmp_path: Path) -> None:
    """An epoch's figure (a dict of any values) was written as null, which reads as "not measured", and a typed one
    (final.last_nll) as the token Infinity; both are strings now, and read back as the numbers."""
    report = read_report(RUNS / "vanilla-s0")
    test = report.epochs[0].test
    assert test is not None
    test.nll = math.inf
    report.epochs[0].diagnostics["target_entropy"] = math.nan
    report.final.last_nll = -math.inf
    document = strict_json(report.to_json())
    assert document["epochs"][0]["test_nll"] == "inf" and document["epochs"][0]["diag_target_entropy"] == "nan"
    assert document["final"]["last_nll"] == "-inf"
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "report.json").write_text(report.to_json())
    assert read_report(tmp_path / "r").final.last_nll == -math.inf


# --- 6. eval's advice names eval's flags --------------------------------------------------------------------------


def eval_flags(capsys: pytest.CaptureFixture[str]) -> set[str]:
    return set(re.findall(r"--[a-z][a-z0-9-]*", run(capsys, "eval", "-h")[1]))


@pytest.mark.parametrize("where", ["FILE", "--teacher"])
def test_eval_of_weights_without_metadata_advises_what_eval_can_do(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, where: str
) -> None:
    """A plain safetensors file (no kdcli metadata). Before: "name its architecture (--teacher ARCH --teacher-ckpt
    FILE)", flags of distill that eval does not have."""
    plain = tmp_path / "plain.safetensors"
    save_file(load_file(str(ASSET)), str(plain))
    before = snapshot(tmp_path)
    args = [str(plain)] if where == "FILE" else [str(ASSET), "--teacher", str(plain)]
    err = refused(capsys, 2, "eval", *args, "--device", "cpu")
    assert f"{plain} has no kdcli metadata, so kdcli eval cannot tell its architecture" in err
    advice, _, other_command = err.partition("kdcli import")
    assert other_command and set(re.findall(r"--[a-z][a-z0-9-]*", advice)) <= eval_flags(capsys)
    assert snapshot(tmp_path) == before
