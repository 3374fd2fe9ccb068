"""Method discovery through the `kdcli.methods` entry-point group, with real (temporary) distributions."""

import json
from pathlib import Path

import pytest

from kdcli.catalog import SUPERVISED, VANILLA, BrokenPlugin, catalog, method_spec
from kdcli.cli import main
from kdcli.errors import UsageError
from kdcli.methods.vanilla import Vanilla

PLUGIN = """
from kdcli.methods.base import Method


class HalfKD(Method):
    name = "halfkd"
    summary = "a third-party test method"

    def forward(self, student, teacher, labels, progress):
        return {"kd": 0.5 * (student.logits - teacher.logits).pow(2).mean()}
"""


def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, module: str, entry: str,
            group: str = "kdcli.methods") -> None:  # fmt: skip
    """A distribution on sys.path with one module and one entry point, as pip would install it."""
    (tmp_path / f"{module}.py").write_text(PLUGIN if entry.endswith("HalfKD") else "NOT_A_METHOD = 3\n")
    info = tmp_path / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{name} = {entry}\n")
    monkeypatch.syspath_prepend(str(tmp_path))


def test_builtin_methods_come_from_entry_points() -> None:
    assert catalog()["vanilla"] == VANILLA
    assert method_spec("vanilla").load() is Vanilla
    assert method_spec("none") is SUPERVISED
    assert "none" not in catalog()
    assert {"vanilla", "pesf", "skd", "pea", "dkd", "fitnet"} <= set(catalog())


def test_third_party_method_is_discovered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    install(tmp_path, monkeypatch, "halfkd", "kdcli_halfkd", "kdcli_halfkd:HalfKD")
    assert method_spec("halfkd").summary == "a third-party test method"
    with pytest.raises(SystemExit) as exit_info:
        main(["methods", "--json"])
    assert exit_info.value.code == 0
    assert set(json.loads(capsys.readouterr().out)) >= {"vanilla", "halfkd"}


def test_old_entry_point_group_is_still_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install(tmp_path, monkeypatch, "halfkd", "kdcli_halfkd_old", "kdcli_halfkd_old:HalfKD", group="kdcli.strategies")
    assert method_spec("halfkd").name == "halfkd"


def test_broken_plugin_is_listed_with_its_reason_and_breaks_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    install(tmp_path, monkeypatch, "bad", "kdcli_bad", "kdcli_bad:NOT_A_METHOD")
    found = catalog()
    assert isinstance(found["bad"], BrokenPlugin) and "neither a kdcli MethodSpec" in found["bad"].reason
    assert found["vanilla"] == VANILLA
    with pytest.raises(UsageError, match=r"plugin 'bad'.*is broken"):
        method_spec("bad")
    for command in (["methods"], ["config", "show", "--method", "vanilla"]):
        with pytest.raises(SystemExit) as exit_info:
            main(command)
        assert exit_info.value.code == 0, command
    assert "BROKEN" in capsys.readouterr().out
