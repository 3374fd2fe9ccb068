"""Exit codes and messages that said the wrong thing (docs/reliability.md): a model that diverged exported as if
fine, an offline download that printed a page of retries, advice naming a flag that does not exist."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import save_file

from ..conftest import run

ASSET = Path(__file__).resolve().parents[2] / "kdcli" / "assets" / "fmnist-mini-resnet20.safetensors"


def test_export_of_non_finite_weights_is_refused_unless_forced(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    source = tmp_path / "diverged.safetensors"
    with safe_open(str(ASSET), "pt") as handle:
        metadata = handle.metadata()
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 (safe_open has no iter)
    tensors["fc.weight"][0, 0] = float("nan")
    save_file(tensors, str(source), metadata=metadata)
    out = tmp_path / "diverged-timm"
    code, _, err = run(capsys, "export", str(source), "--format", "timm", "--out", str(out))
    assert code == 2 and err.count("\n") == 1 and "non-finite weights (fc.weight)" in err and "--force" in err
    assert not out.exists()
    code, _, err = run(capsys, "export", str(source), "--format", "timm", "--out", str(out), "--force", "--json")
    assert code in (0, 1), err  # forced: written, or refused by the export's own check (NaN logits), never a traceback
    assert "Traceback" not in err


def test_an_offline_download_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torchvision prints every try and mirror (22 lines); kdcli says one line, with the way out."""

    def no_network(*args: object, **kwargs: object) -> None:
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    code, out, err = run(capsys, "train", "--model", "resnet8", "--data", "cifar10", "--data-dir", str(tmp_path / "d"),
                         "--set", "data.download=true", "--epochs", "1", "--device", "cpu", "--quiet",
                         "--out", str(tmp_path / "r"))  # fmt: skip
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert "cannot download cifar10" in err and "check the network" in err


def test_missing_cifar_advises_a_setting_that_exists(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """It advised `--download`, which no command has."""
    code, _, err = run(capsys, "train", "--model", "resnet8", "--data", "cifar10", "--data-dir", str(tmp_path),
                       "--epochs", "1", "--device", "cpu", "--quiet", "--out", str(tmp_path / "r"))  # fmt: skip
    assert code == 2 and "--set data.download=true" in err and "--download " not in err


def test_a_forced_export_still_keeps_its_input(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    model = tmp_path / "m.safetensors"
    shutil.copy(ASSET, model)
    before = model.read_bytes()
    code, _, err = run(capsys, "export", str(model), "--format", "timm", "--out", str(tmp_path), "--force", "--json")
    assert code == 0, err  # the folder holding the model: timm's two files go beside it
    assert model.read_bytes() == before
