"""Every ```python block of README.md runs as written: in a fresh interpreter, in an empty folder, on the CPU."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def snippets() -> list[tuple[int, str]]:
    """Each python block of the README with the line its code starts on."""
    text = README.read_text(encoding="utf-8")
    return [(text.count("\n", 0, block.start(1)) + 1, block.group(1)) for block in BLOCK.finditer(text)]


def test_the_readme_has_python_snippets() -> None:
    assert snippets(), "no ```python block found in README.md: the pattern or the README changed"


@pytest.mark.slow  # the API snippet trains a student for two epochs on the embedded images (seconds)
@pytest.mark.parametrize(("line", "code"), snippets(), ids=[f"README.md:{line}" for line, _ in snippets()])
def test_readme_snippet_runs(tmp_path: Path, line: int, code: str) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "CUDA_VISIBLE_DEVICES": "",  # as a CI runner: the snippets say device "cpu", and must not need a GPU
        "HF_HUB_OFFLINE": "1",  # nor the network
    }
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
    except subprocess.TimeoutExpired as timeout:
        pytest.fail(f"README.md:{line}: the snippet ran past {timeout.timeout} s:\n{code}\n{timeout.stderr or ''}")
    assert done.returncode == 0, (
        f"README.md:{line}: the snippet exited {done.returncode}:\n{code}\n"
        f"--- stdout ---\n{done.stdout}\n--- stderr ---\n{done.stderr}"
    )
