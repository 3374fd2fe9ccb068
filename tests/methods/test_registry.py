"""Method discovery through the `kdcli.methods` entry-point group, with real (temporary) distributions."""

import json
from pathlib import Path

import pytest

from kdcli.catalog import SUPERVISED, VANILLA, BrokenPlugin, MethodSpec, catalog, method_spec
from kdcli.cli import main
from kdcli.errors import UsageError
from kdcli.methods.base import Method
from kdcli.methods.vanilla import Vanilla

from ..conftest import build_method

PLUGIN = """
from kdcli.catalog import MethodOptions, MethodSpec
from kdcli.methods.base import Method

HALFKD = MethodSpec("halfkd", "a third-party test method", MethodOptions, f"{__name__}:HalfKD")


class HalfKD(Method):
    spec = HALFKD

    def forward(self, student, teacher, labels, progress):
        return {"kd": 0.5 * (student.logits - teacher.logits).pow(2).mean()}
"""

OLD_STYLE = """
from kdcli.methods.base import Method


class HalfKD(Method):
    name = "halfkd"
    summary = "a third-party test method, described by its class attributes"
"""

INHERITED = """
from kdcli.methods.vanilla import Vanilla


class LouderVanilla(Vanilla):
    pass
"""

ANOTHER_CLASS = """
from kdcli.catalog import VANILLA, MethodSpec
from kdcli.methods.base import Method

COPIED = MethodSpec("copied", "a spec copied from vanilla's", VANILLA.options, VANILLA.implementation)


class Copied(Method):
    spec = COPIED


class Reused(Method):
    spec = VANILLA
"""


def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, module: str, entry: str,
            group: str = "kdcli.methods", source: str = PLUGIN) -> None:  # fmt: skip
    """A distribution on sys.path with one module and one entry point, as pip would install it."""
    (tmp_path / f"{module}.py").write_text(source)
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


def test_each_builtin_class_reads_its_spec_and_restates_nothing() -> None:
    specs = [SUPERVISED, *(spec for spec in catalog().values() if isinstance(spec, MethodSpec))]
    for spec in specs:
        implementation = spec.load()
        assert implementation.spec is spec
        assert (implementation.name, implementation.summary) == (spec.name, spec.summary)
        assert implementation.Options is spec.options and implementation.needs_teacher is spec.needs_teacher
        assert not {"name", "summary", "Options", "needs_teacher"} & set(vars(implementation)), spec.name
    assert SUPERVISED.load().needs_teacher is False


def test_facts_read_from_the_spec_cannot_be_set() -> None:
    method = build_method("vanilla", 10)
    assert method.name == "vanilla" and method.parameter_groups() == []
    with pytest.raises(AttributeError, match="read from its spec"):
        method.name = "other"


def test_a_class_restating_its_spec_is_refused_with_the_migration_step() -> None:
    with pytest.raises(TypeError, match=r"sets name, Options.*replace them with spec = MethodSpec\(") as raised:

        class Restated(Method):
            name = "restated"
            Options = VANILLA.options

    assert "\n" not in str(raised.value)
    with pytest.raises(TypeError, match=r"is not a kdcli\.catalog\.MethodSpec"):

        class NotASpec(Method):
            spec = "vanilla"  # type: ignore[assignment]


def test_third_party_spec_is_listed_and_built_like_a_builtin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    install(tmp_path, monkeypatch, "halfkd", "kdcli_halfkd_spec", "kdcli_halfkd_spec:HALFKD")
    spec = method_spec("halfkd")
    assert spec.summary == "a third-party test method" and spec.implementation == "kdcli_halfkd_spec:HalfKD"
    method = build_method("halfkd", 10)
    assert type(method).spec is spec and method.name == "halfkd" and method.needs_teacher
    with pytest.raises(SystemExit) as exit_info:
        main(["methods", "--json"])
    assert exit_info.value.code == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["halfkd"] == {"summary": "a third-party test method", "options": {}}
    assert set(listed["vanilla"]) == set(listed["halfkd"])


def test_third_party_method_class_is_read_through_its_spec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    install(tmp_path, monkeypatch, "halfkd", "kdcli_halfkd", "kdcli_halfkd:HalfKD")
    spec = method_spec("halfkd")
    assert spec is spec.load().spec and spec.summary == "a third-party test method"
    with pytest.raises(SystemExit) as exit_info:
        main(["methods", "--json"])
    assert exit_info.value.code == 0
    assert set(json.loads(capsys.readouterr().out)) >= {"vanilla", "halfkd"}


def test_old_entry_point_group_is_still_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install(tmp_path, monkeypatch, "halfkd", "kdcli_halfkd_old", "kdcli_halfkd_old:HALFKD", group="kdcli.strategies")
    assert method_spec("halfkd").name == "halfkd"


def test_broken_plugin_is_listed_with_its_reason_and_breaks_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    install(tmp_path, monkeypatch, "bad", "kdcli_bad", "kdcli_bad:NOT_A_METHOD", source="NOT_A_METHOD = 3\n")
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


def test_an_old_style_plugin_is_broken_and_its_reason_is_the_migration_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(tmp_path, monkeypatch, "halfkd", "kdcli_halfkd_v1", "kdcli_halfkd_v1:HalfKD", source=OLD_STYLE)
    broken = catalog()["halfkd"]
    assert isinstance(broken, BrokenPlugin) and "\n" not in broken.reason
    assert 'replace them with spec = MethodSpec(name, summary, Options, "kdcli_halfkd_v1:HalfKD")' in broken.reason
    with pytest.raises(UsageError, match=r"plugin 'halfkd'.*is broken: TypeError: HalfKD sets name, summary"):
        method_spec("halfkd")


@pytest.mark.parametrize(
    ("name", "module", "attribute", "source", "reason"),
    [
        ("louder", "kdcli_louder", "LouderVanilla", INHERITED, "nor a Method subclass that declares its spec"),
        ("vanilla2", "kdcli_reused", "Reused", ANOTHER_CLASS, "names the spec of 'vanilla'"),
        ("copied", "kdcli_copied", "Copied", ANOTHER_CLASS, "names another class as its implementation"),
        ("halfkd2", "kdcli_halfkd_renamed", "HALFKD", PLUGIN, "names the spec of 'halfkd'"),
    ],
)
def test_an_entry_point_must_name_a_spec_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, module: str, attribute: str, source: str, reason: str
) -> None:
    install(tmp_path, monkeypatch, name, module, f"{module}:{attribute}", source=source)
    broken = catalog()[name]
    assert isinstance(broken, BrokenPlugin) and reason in broken.reason
    with pytest.raises(UsageError, match="is broken"):
        method_spec(name)
