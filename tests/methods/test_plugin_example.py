"""The worked example of docs/plugins.md, taken from the page, installed as a distribution and run from the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from kdcli.catalog import MethodSpec, catalog, method_spec
from kdcli.cli import main

DOC = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"


def example_source() -> str:
    """The one Python block of the page that defines the plugin module."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    (module,) = [block for block in blocks if block.startswith('"""kdcli_at')]
    return module


def example_entry_point() -> str:
    """What the page's entry point for ``at`` names (``module:attribute``)."""
    (entry,) = set(re.findall(r'^at = "(kdcli_at:\w+)"$', DOC.read_text(), flags=re.MULTILINE))
    return entry


@pytest.fixture
def at_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "kdcli_at.py").write_text(example_source())
    info = tmp_path / "kdcli_at-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: kdcli-at\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[kdcli.methods]\nat = {example_entry_point()}\n")
    monkeypatch.syspath_prepend(str(tmp_path))


def test_documented_plugin_registers_its_spec_like_a_builtin(at_plugin: None) -> None:
    assert example_entry_point() == "kdcli_at:AT"  # a MethodSpec, as `vanilla = "kdcli.catalog:VANILLA"`
    listed = catalog()["at"]
    assert isinstance(listed, MethodSpec) and listed.implementation == "kdcli_at:AttentionTransfer"
    implementation = listed.load()
    assert implementation.spec is listed and implementation.name == "at" and implementation.Options is listed.options


@pytest.mark.slow
def test_documented_plugin_is_listed_and_distills(
    at_plugin: None, tmp_path: Path, teacher_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert method_spec("at").options().model_dump()["stages"] == [1, 2, 3]
    out = tmp_path / "run"
    args = ["distill", "--teacher", str(teacher_file), "--student", "resnet8", "--method", "at", "--data", "embedded",
            "--train-subset", "200", "--epochs", "2", "--batch-size", "50", "--device", "cpu", "--out", str(out),
            "--set", "method.warmup_epochs=2", "--json", "--quiet"]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["method"] == "at"
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(m["train_at"] > 0 for m in metrics)
