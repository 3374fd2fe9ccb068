import json
import statistics
from pathlib import Path

import pytest

import kdcli
from kdcli.cli import main

from ..conftest import tiny_config


@pytest.mark.slow
def test_compare_groups_seeds_and_reports_mean_and_std(
    tmp_path: Path, teacher_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    finals = []
    for seed in (0, 1):
        config = tiny_config(tmp_path / f"kd{seed}", teacher={"checkpoint": str(teacher_file)},
                             train={"epochs": 1, "seed": seed})  # fmt: skip
        finals.append(kdcli.distill(config).report.final.last_top1)
    alone = tiny_config(tmp_path / "alone", train={"epochs": 1})
    del alone["teacher"]
    kdcli.train(alone)
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", str(tmp_path / "kd0"), str(tmp_path / "kd1"), str(tmp_path / "alone"), "--json"])
    assert exit_info.value.code == 0
    rows = {row["method"]: row for row in json.loads(capsys.readouterr().out)["rows"]}
    assert set(rows) == {"vanilla", "no teacher (kdcli train)"}
    assert rows["vanilla"]["seeds"] == [0, 1]
    assert rows["vanilla"]["top1_last"]["mean"] == pytest.approx(statistics.fmean(finals))
    assert rows["vanilla"]["top1_last"]["std"] == pytest.approx(statistics.stdev(finals))
    with pytest.raises(SystemExit):
        main(["compare", str(tmp_path / "kd0"), str(tmp_path / "alone")])
    table = capsys.readouterr().out
    assert table.startswith("| method |") and "| vanilla | resnet8 → resnet8 | 1 |" in table


def test_compare_refuses_a_folder_without_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", str(tmp_path)])
    assert exit_info.value.code == 2 and "no report.json" in capsys.readouterr().err


GPU_RUNS = Path(__file__).resolve().parents[2] / "bench" / "results" / "gpu-2026-11-30" / "fmnist5k"


def test_rows_that_differ_outside_the_method_say_how(capsys: pytest.CaptureFixture[str]) -> None:
    """The protocol's vanilla on the eager loop and on the fast path (real reports, kept under bench/results) are two
    rows; the one unlike the rest names its engine settings instead of reading exactly like the other."""
    runs = [GPU_RUNS / name for name in ("vanilla-eager-s0", "vanilla-eager-s1", "vanilla-s0", "student-eager-s0")]
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", *map(str, runs), "--json"])
    assert exit_info.value.code == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [(row["method"], row["seeds"]) for row in rows] == [
        ("vanilla", [0, 1]), ("vanilla", [0]), ("no teacher (kdcli train)", [0])
    ]  # fmt: skip
    assert [row["settings"] for row in rows] == [
        "",
        "channels_last=None, compile=None, cuda_graphs=None, precision=auto",
        "",
    ]
    assert rows[0]["top1_last"]["mean"] == pytest.approx((88.36 + 88.35) / 2)


def test_a_run_given_twice_is_one_seed(tmp_path: Path) -> None:
    """The Python API counts a run given again (another spelling, a symbolic link) once, as the CLI does; the CLI
    also says so (tests/cli/test_faults_outputs.py)."""
    from kdcli.interfaces import Reporter
    from kdcli.reporting.compare import compare_runs, unique_runs

    run = GPU_RUNS / "vanilla-eager-s0"
    link = tmp_path / "link"
    link.symlink_to(run)
    kept, dropped = unique_runs([run, f"{run}/.", link, GPU_RUNS / "vanilla-eager-s1"])
    assert kept == [run, GPU_RUNS / "vanilla-eager-s1"] and dropped == [(Path(f"{run}/."), run), (link, run)]
    rows = compare_runs([run, link, GPU_RUNS / "vanilla-eager-s1"], Reporter())["rows"]
    assert [row["seeds"] for row in rows] == [[0, 1]]
