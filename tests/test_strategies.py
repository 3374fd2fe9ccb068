"""Strategy discovery through the `kdcli.strategies` entry-point group, with a real (temporary) distribution."""

import json
from pathlib import Path

import pytest

from kdcli.cli import main
from kdcli.errors import UsageError
from kdcli.strategies import Supervised, available_strategies, get_strategy
from kdcli.strategies.vanilla import Vanilla

PLUGIN = """
from kdcli.strategies import Strategy


class HalfKD(Strategy):
    name = "halfkd"
    summary = "a third-party test strategy"

    def forward(self, student_logits, teacher, labels):
        return {"kd": 0.5 * (student_logits - teacher.logits).pow(2).mean()}
"""


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "kdcli_halfkd.py").write_text(PLUGIN)
    info = tmp_path / "kdcli_halfkd-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: kdcli-halfkd\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[kdcli.strategies]\nhalfkd = kdcli_halfkd:HalfKD\n")
    monkeypatch.syspath_prepend(str(tmp_path))


def test_builtin_strategies_come_from_entry_points() -> None:
    assert available_strategies()["vanilla"] is Vanilla
    assert get_strategy("none") is Supervised
    assert "none" not in available_strategies()


def test_third_party_strategy_is_discovered(plugin: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert get_strategy("halfkd").summary == "a third-party test strategy"
    with pytest.raises(SystemExit) as exit_info:
        main(["methods", "--json"])
    assert exit_info.value.code == 0
    assert set(json.loads(capsys.readouterr().out)) >= {"vanilla", "halfkd"}


def test_entry_point_that_is_not_a_strategy_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "kdcli_bad.py").write_text("NOT_A_STRATEGY = 3\n")
    info = tmp_path / "kdcli_bad-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: kdcli-bad\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[kdcli.strategies]\nbad = kdcli_bad:NOT_A_STRATEGY\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UsageError, match="not a kdcli Strategy"):
        available_strategies()
