"""``kdcli sweep`` (issue 22): real tiny sweeps on the embedded data — the layout, the verdict against a hand
computation from the runs' report.json, a sweep killed mid-way and started again, a failing arm, the gate."""

from __future__ import annotations

import json
import math
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from kdcli import sweeps
from kdcli.reporting.verdict import difference, t_quantile
from kdcli.sweeps import core_shares
from tests.conftest import refused, run

TINY = [
    "--student",
    "resnet8",
    "--data",
    "embedded",
    "--train-subset",
    "200",
    "--epochs",
    "1",
    "--batch-size",
    "50",
    "--device",
    "cpu",
    "--set",
    "train.eval_batch_size=1000",
]


def sweep_args(teacher: Path, out: Path, *more: str) -> list[str]:
    return ["sweep", "--teacher", str(teacher), *TINY, "--out", str(out), *more]


def last_top1(folder: Path) -> float:
    return float(json.loads((folder / "report.json").read_text())["final"]["last_top1"])


# --- the verdict's arithmetic --------------------------------------------------------------------------------------


def test_a_paired_difference_is_a_t_interval_over_the_per_seed_differences() -> None:
    """Differences 1, 2, 3 points: mean 2, sample sd 1, t(2) = 4.303, half-width 4.303 / √3 = 2.4843."""
    result = difference({0: 91.0, 1: 92.0, 2: 93.0}, {0: 90.0, 1: 90.0, 2: 90.0})
    assert result["paired"] and result["seeds"] == 3 and result["difference"] == pytest.approx(2.0)
    assert result["ci95"] == pytest.approx([2 - 4.303 / math.sqrt(3), 2 + 4.303 / math.sqrt(3)])


def test_unmatched_seeds_take_welchs_interval() -> None:
    """a = (1, 3): mean 2, var 2; b = (0, 0, 3): mean 1, var 3. se² = 2/2 + 3/3 = 2; Welch's df =
    4 / (1/1 + 1/2) = 2.67, rounded down to 2: t = 4.303; half-width 4.303 · √2."""
    result = difference({0: 1.0, 1: 3.0}, {0: 0.0, 1: 0.0, 2: 3.0})
    assert not result["paired"] and result["difference"] == pytest.approx(1.0)
    assert result["ci95"] == pytest.approx([1 - 4.303 * math.sqrt(2), 1 + 4.303 * math.sqrt(2)])
    assert difference({0: 1.0}, {0: 0.0})["ci95"] is None  # one seed: no interval
    assert t_quantile(2.67) == 4.303 and t_quantile(200) == 1.96


# --- refused before any run ------------------------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="pinning to cores is Linux's")
def test_runs_at_a_time_share_the_cores_without_overlap() -> None:
    cores = os.sched_getaffinity(0)
    for jobs in range(1, len(cores) + 1):
        shares = core_shares(jobs, 1)
        assert shares is not None and len(shares) == jobs
        assert set().union(*shares) == cores and sum(map(len, shares)) == len(cores)  # a partition of the cores
        assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert core_shares(len(cores), 2) is None  # more threads asked than the cores hold: not pinned
    assert core_shares(len(cores) + 1, 1) is None


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
def test_a_worker_started_from_a_thread_dies_with_its_parent() -> None:
    """A parent that starts a worker from a thread pool, as the sweep and bench/parity.py do, is SIGKILLed: the worker
    gets SIGTERM instead of training on as an orphan."""
    parent_code = (
        "import subprocess, sys, time\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "from kdcli.sweeps import die_with_parent\n"
        "def work():\n"
        "    sleeper = [sys.executable, '-c', 'import time; time.sleep(60)']\n"
        "    child = subprocess.Popen(sleeper, preexec_fn=die_with_parent())\n"
        "    print(child.pid, flush=True)\n"
        "    child.wait()\n"
        "ThreadPoolExecutor(1).submit(work)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())

    def running() -> bool:  # a zombie waiting for its reaper has ended
        status = Path(f"/proc/{child}/status")
        return status.is_file() and "\nState:\tZ" not in status.read_text()

    assert running()
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while running() and time.monotonic() < deadline:
        time.sleep(0.1)
    if running():
        os.kill(child, signal.SIGKILL)
        pytest.fail("the worker outlived its parent")


@pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2, reason="needs two cores to pin to"
)
def test_runs_in_flight_never_share_a_core(
    capsys: pytest.CaptureFixture[str], teacher_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scheduling alone (each run's process replaced by a short wait): four runs two at a time, each given a
    slot's cores when it starts and the slot back when it ends; no two runs in flight hold the same core."""
    in_flight: list[frozenset[int]] = []
    given, overlaps = [], []
    lock = threading.Lock()

    def wait_instead_of_training(self: object, run: object, out: Path, how: str, threads: int, cores: Any) -> Any:
        with lock:
            overlaps.extend(cores & other for other in in_flight if cores & other)
            in_flight.append(cores)
            given.append(cores)
        time.sleep(0.3)
        with lock:
            in_flight.remove(cores)
        return 1, 0.3

    monkeypatch.setattr(sweeps._Workers, "run", wait_instead_of_training)
    code, _, err = run(
        capsys, *sweep_args(teacher_file, tmp_path / "sw", "--methods", "vanilla", "--seeds", "0,1,2,3", "--jobs", "2")
    )
    assert code == 1, err  # no run wrote a report: each counts as failed
    assert len(given) == 4 and all(given) and not overlaps, (given, overlaps)


def test_bad_input_fails_the_sweep_before_any_run(
    capsys: pytest.CaptureFixture[str], teacher_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "sw"
    assert "unknown method 'vanila'" in refused(capsys, 2, *sweep_args(teacher_file, out, "--methods", "vanila"))
    assert "--seeds takes" in refused(capsys, 2, *sweep_args(teacher_file, out, "--methods", "vanilla", "--seeds", "a"))
    said = refused(capsys, 2, *sweep_args(teacher_file, out, "--methods", "vanilla", "--grid", "method.tmp=2,4"))
    assert "unknown configuration key 'method.tmp'" in said
    said = refused(capsys, 2, *sweep_args(tmp_path / "none.safetensors", out, "--methods", "vanilla"))
    assert "does not exist" in said
    assert not out.exists() or not any((out / ".sweep").glob("*.log"))  # no run started
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    said = refused(capsys, 2, *sweep_args(teacher_file, tmp_path / "mine", "--methods", "vanilla"))
    assert "not a kdcli sweep's" in said and (tmp_path / "mine" / "notes.txt").read_text() == "mine"
    for flag in ("--jobs", "--threads"):
        said = refused(capsys, 2, *sweep_args(teacher_file, out, "--methods", "vanilla", flag, "0"))
        assert f"{flag} is a number" in said and "1 or more" in said
    no_student = ["sweep", "--teacher", str(teacher_file), "--data", "embedded", "--out", str(out), "--methods"]
    assert "name the student architecture: --student ARCH" in refused(capsys, 2, *no_student, "vanilla")
    untrained = ["sweep", "--teacher", "resnet8", *TINY, "--out", str(out), "--methods", "vanilla"]
    assert "the teacher has no trained weights" in refused(capsys, 2, *untrained)
    said = refused(capsys, 2, *sweep_args(teacher_file, out, "--methods", "fmnist5k"))
    assert "the preset 'fmnist5k' sets no method.name, so it is no arm" in said
    assert not out.exists() or not any((out / ".sweep").glob("*.log"))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert "torchrun" in refused(capsys, 2, *sweep_args(teacher_file, out, "--methods", "vanilla"))


def test_a_recipe_preset_is_an_arm_with_its_own_keys_over_the_sweeps(tmp_path: Path) -> None:
    """fmnist5k-consistent sets the method and data.mixup itself: those ride over the sweep's settings, the grid over
    them, and the sweep's --epochs (which the preset's base also sets) stays."""
    from kdcli.config import resolve
    from kdcli.errors import UsageError
    from kdcli.sweeps import plan

    base = resolve([("flags", {"student": {"arch": "resnet8"}, "train": {"epochs": 3}})]).config
    runs = plan(base, ["vanilla", "fmnist5k-consistent"], [0], {"method.temperature": [2.0]}, tmp_path)
    by_name = {run.name: run.config for run in runs}
    assert sorted(by_name) == ["fmnist5k-consistent-temperature2.0-s0", "vanilla-temperature2.0-s0"]
    recipe, vanilla = by_name["fmnist5k-consistent-temperature2.0-s0"], by_name["vanilla-temperature2.0-s0"]
    assert (recipe.data.mixup, recipe.method.ce_weight, recipe.method.kd_weight) == (1.0, 0.0, 1.0)  # type: ignore[attr-defined]
    assert (vanilla.data.mixup, vanilla.method.ce_weight) == (0.0, 0.1)  # type: ignore[attr-defined]
    assert recipe.method.temperature == vanilla.method.temperature == 2.0  # type: ignore[attr-defined]
    assert recipe.train.epochs == vanilla.train.epochs == 3 and recipe.data.train_subset is None
    file = tmp_path / "my-recipe.yaml"
    file.write_text("method:\n  name: dist\n  beta: 1.0\n")
    (run,) = plan(base, [str(file)], [1], {}, tmp_path)
    assert run.name == "my-recipe-s1" and run.config.method.name == "dist" and run.config.method.beta == 1.0  # type: ignore[attr-defined]
    with pytest.raises(UsageError, match=r"the recipe file .*gone\.yaml does not exist"):
        plan(base, [str(tmp_path / "gone.yaml")], [0], {}, tmp_path)
    with pytest.raises(UsageError, match="names two arms alike"):
        plan(base, [str(file), str(tmp_path / "x" / "my-recipe.yaml")], [0], {}, tmp_path)


# --- real sweeps -----------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_sweep_lays_out_its_runs_and_its_verdict_is_the_hand_computation(
    capsys: pytest.CaptureFixture[str], teacher_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "sw"
    code, stdout, err = run(
        capsys,
        *sweep_args(
            teacher_file,
            out,
            "--methods",
            "student,vanilla",
            "--seeds",
            "0,1",
            "--grid",
            "method.temperature=2,4",
            "--jobs",
            "2",
            "--json",
        ),
    )
    assert code == 0, err
    names = {
        "student-s0",
        "student-s1",
        "vanilla-temperature2-s0",
        "vanilla-temperature2-s1",
        "vanilla-temperature4-s0",
        "vanilla-temperature4-s1",
    }
    assert {p.name for p in out.iterdir() if not p.name.startswith(".")} == names | {"sweep.json"}
    document = json.loads(stdout)
    assert document["schema"] == "kdcli.sweep/1" and document["passed"] is True
    assert all(r["status"] == "finished" for r in document["runs"]) and len(document["runs"]) == 6
    assert len([line for line in err.splitlines() if "top-1" in line and "/6 " in line]) == 6  # a line a run
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2:  # two at a time: each on its half
        cores = {json.loads((out / name / "report.json").read_text())["environment"]["cpu_cores"] for name in names}
        assert cores <= {len(os.sched_getaffinity(0)) // 2, (len(os.sched_getaffinity(0)) + 1) // 2}, cores
    # the verdict against vanilla at its defaults (T = 4), by hand from the report files
    judged = {(a["method"], a["settings"]): a for a in document["verdict"]["arms"]}
    assert set(judged) == {("vanilla (temperature=2.0)", ""), ("no teacher (kdcli train)", "")}  # not the baseline
    for arm, folder in (("vanilla (temperature=2.0)", "vanilla-temperature2"), ("no teacher (kdcli train)", "student")):
        diffs = [last_top1(out / f"{folder}-s{s}") - last_top1(out / f"vanilla-temperature4-s{s}") for s in (0, 1)]
        entry = judged[(arm, "")]
        assert entry["paired"] and entry["difference"] == pytest.approx(statistics.fmean(diffs))
        half = 12.706 * statistics.stdev(diffs) / math.sqrt(2)
        assert entry["ci95"] == pytest.approx([statistics.fmean(diffs) - half, statistics.fmean(diffs) + half])
    # `kdcli compare DIR` gives the same verdict from the folder; the gate's exit codes
    code, stdout, _ = run(capsys, "compare", str(out), "--json")
    assert code == 0 and json.loads(stdout)["verdict"]["arms"] == document["verdict"]["arms"]
    best_gain = max(a["difference"] for a in document["verdict"]["arms"])
    assert run(capsys, "compare", str(out), "--min-gain", str(best_gain - 0.01))[0] == 0
    assert run(capsys, "compare", str(out), "--min-gain", str(best_gain + 0.01))[0] == 1


@pytest.mark.slow
def test_a_failing_arm_is_recorded_and_the_others_finish(
    capsys: pytest.CaptureFixture[str], teacher_file: Path, tmp_path: Path
) -> None:
    """A learning rate of 1e12 diverges: that run fails with its one-line reason, the other finishes, exit 1."""
    out = tmp_path / "sw"
    code, stdout, _ = run(
        capsys,
        *sweep_args(
            teacher_file,
            out,
            "--methods",
            "vanilla",
            "--seeds",
            "0",
            "--grid",
            "optim.lr=0.05,1e12",
            "--jobs",
            "2",
            "--json",
        ),
    )
    assert code == 1
    runs = {r["name"]: r for r in json.loads(stdout)["runs"]}
    assert runs["vanilla-lr0.05-s0"]["status"] == "finished"
    failed = runs["vanilla-lr1e12-s0"]
    assert failed["status"] == "failed" and "non-finite" in failed["reason"] and "\n" not in failed["reason"]


@pytest.mark.slow
def test_a_sweep_killed_midway_finishes_only_what_is_missing(teacher_file: Path, tmp_path: Path) -> None:
    """SIGKILL to the sweep after its first run finished: the workers die with it (at their checkpoints); the same
    command again keeps the finished run, and every run ends present exactly once."""
    out = tmp_path / "sw"
    command = [
        sys.executable,
        "-m",
        "kdcli",
        *sweep_args(teacher_file, out, "--methods", "student,vanilla", "--seeds", "0,1", "--jobs", "1", "--quiet"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sweep = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not any(out.glob("*/report.json")):
        time.sleep(0.5)
    first = sorted(p.parent.name for p in out.glob("*/report.json"))
    assert first, "no run finished in time"
    sweep.send_signal(signal.SIGKILL)
    sweep.wait()
    time.sleep(2)  # the worker's parent-death SIGTERM
    finished_before = {name: (out / name / "report.json").stat().st_mtime_ns for name in first}
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    runs = json.loads((out / "sweep.json").read_text())["runs"]
    assert sorted(r["name"] for r in runs) == ["student-s0", "student-s1", "vanilla-s0", "vanilla-s1"]
    assert all(r["status"] == "finished" for r in runs)
    for name, stamp in finished_before.items():  # kept, not run again
        assert (out / name / "report.json").stat().st_mtime_ns == stamp


def test_the_api_names_are_functions_not_modules() -> None:
    """``kdcli.sweep`` once was shadowed by a module of the same name once the engine had imported it."""
    import types

    import kdcli
    import kdcli.api  # imports every feature module

    for name in kdcli.__all__:
        if name not in ("models", "__version__", "RunConfig"):
            assert not isinstance(getattr(kdcli, name), types.ModuleType), name


def test_a_sweep_folder_run_with_other_settings_is_refused(
    capsys: pytest.CaptureFixture[str], teacher_file: Path, tmp_path: Path
) -> None:
    """A run of the folder that finished (or checkpointed) under other settings is not mixed into this sweep."""
    out = tmp_path / "sw"
    (out / ".sweep").mkdir(parents=True)
    (out / "vanilla-s0").mkdir()
    (out / "vanilla-s0" / "report.json").write_text("{}")
    (out / ".sweep" / "vanilla-s0.yaml").write_text("# kdcli sweep: run vanilla-s0\ntrain: {epochs: 9}\n")
    said = refused(capsys, 2, *sweep_args(teacher_file, out, "--methods", "vanilla", "--seeds", "0"))
    assert "was run with other settings" in said and "--out" in said
    assert (out / ".sweep" / "vanilla-s0.yaml").read_text().endswith("{epochs: 9}\n")  # left as it was
