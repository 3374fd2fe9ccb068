"""``kdcli import`` as a user meets it: what it writes, and the one-line exit-2 error for each way it can fail.

Checkpoints are real: state dicts of the zoo's and timm's models written with ``torch.save``. Every error is run
through the command line (``kdcli.cli.main``) and checked for its exit code and a single stderr line.
"""

from __future__ import annotations

import errno
import os
import pickle
import stat
import sys
import warnings
from pathlib import Path

import pytest
import timm
import torch

import kdcli.io.model_file
from kdcli.cli.options import cli_spelling
from kdcli.conversion.importer import import_checkpoint, input_statistics
from kdcli.errors import OptionRef, UsageError, one_line, references, spell
from kdcli.interfaces import Reporter
from kdcli.io.model_file import load_model, read_card
from kdcli.models import CIFAR100_MEAN, CIFAR100_STD
from kdcli.runtime.loading import open_model_file

from ..conftest import run


def fails(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run ``kdcli import ARGS``, expect exit 2 with exactly one plain error line on stderr (after any notes the
    import made before it failed: the architecture or normalization it chose), and return that line."""
    code, out, err = run(capsys, "import", *args)
    assert code == 2, err
    assert out == ""
    lines = err.splitlines(keepends=True)
    assert all(line.startswith("kdcli: note: ") for line in lines[:-1]), err
    err = lines[-1]
    assert err.startswith("kdcli: error: ") and err.endswith("\n"), err
    assert "Traceback" not in err and "\x1b" not in err
    return err


class Notes(Reporter):
    def __init__(self) -> None:
        self.notes: list[str] = []

    def note(self, message: str) -> None:
        self.notes.append(message)


@pytest.fixture
def resnet8_file(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    """A plain state dict of a 10-class, one-channel resnet8 (a Fashion-MNIST model)."""
    torch.manual_seed(0)
    model = timm.create_model("resnet8", num_classes=10, in_chans=1)
    path = tmp_path / "resnet8.pth"
    torch.save(model.state_dict(), path)
    return path, model


def test_repdistiller_checkpoint_imports_bit_exact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """RepDistiller saves {'epoch', 'model', 'accuracy', 'optimizer'}; DataParallel prefixes are dropped too."""
    torch.manual_seed(0)
    model = timm.create_model("resnet8", num_classes=10, in_chans=1)
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    source = tmp_path / "ckpt_epoch_240.pth"
    torch.save({"epoch": 240, "model": state, "accuracy": torch.tensor(90.0), "optimizer": {"state": {}}}, source)
    out = tmp_path / "t.safetensors"
    code, stdout, _ = run(
        capsys, "import", str(source), "--arch", "resnet8", "--data", "fashion-mnist", "--out", str(out)
    )
    assert code == 0 and "resnet8, 10 classes, 1 input channels" in stdout
    loaded, card = load_model(out)
    assert card is not None and (card.num_classes, card.in_chans, card.dataset) == (10, 1, "fashion-mnist")
    assert (card.mean, card.std) == ((0.2860,), (0.3530,))
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_wrong_architecture_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "plain.pt"
    torch.save(timm.create_model("resnet8", num_classes=10).state_dict(), source)
    with pytest.raises(UsageError, match="does not fit"):
        import_checkpoint(source, "resnet14", tmp_path / "x.safetensors", default_normalization=True)
    err = fails(
        capsys, str(source), "--default-normalization", "--arch", "resnet14", "--out", str(tmp_path / "x.safetensors")
    )
    assert "does not fit the CIFAR zoo's 'resnet14'" in err and "missing layer1.1.conv1.weight" in err
    assert "--arch" in err and not (tmp_path / "x.safetensors").exists()


def test_unknown_architecture_suggests_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = fails(
        capsys,
        str(tmp_path / "none.pth"),
        "--default-normalization",
        "--arch",
        "resnet2O",
        "--out",
        str(tmp_path / "x.safetensors"),
    )
    assert "unknown architecture 'resnet2O'" in err and "resnet20" in err


def test_missing_checkpoint_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = fails(
        capsys,
        str(tmp_path / "none.pth"),
        "--default-normalization",
        "--arch",
        "resnet8",
        "--out",
        str(tmp_path / "x.safetensors"),
    )
    assert f"{tmp_path / 'none.pth'} does not exist" in err


# --- 3 and 7: refused pickles ----------------------------------------------------------------------------------


def test_pickled_module_is_refused_in_one_plain_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """torch's own refusal is a paragraph with ANSI escape codes; kdcli's is one plain line that says what to do."""
    source = tmp_path / "code.pt"
    torch.save({"model": timm.create_model("resnet8", num_classes=10)}, source)  # a whole pickled module
    with pytest.raises(UsageError, match="weights_only=True"):
        import_checkpoint(source, "resnet8", tmp_path / "x.safetensors", default_normalization=True)
    with pytest.raises(pickle.UnpicklingError) as raw:  # the premise: torch's message carries escape codes
        torch.load(source, weights_only=True)
    assert "\x1b[" in str(raw.value)
    err = fails(
        capsys, str(source), "--default-normalization", "--arch", "resnet8", "--out", str(tmp_path / "x.safetensors")
    )
    assert f"{source} pickles Python objects (kdcli.models." in err
    assert "re-save its weights as a plain state dict" in err and "torch.save(model.state_dict()" in err
    assert not (tmp_path / "x.safetensors").exists()


def test_one_line_strips_escape_codes() -> None:
    text = "Weights only load failed, \x1b[1mdo those steps only if you trust it\x1b[0m. \n\t(1) more\n"
    assert one_line(text) == "Weights only load failed, do those steps only if you trust it."
    assert len(one_line("x" * 500)) == 200


class _OpensAFile:
    """Unpickling this creates ``path``: what a malicious checkpoint does, harmlessly."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.path), "w"))


class _RunsAShellCommand:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.path}",))


def _save_zip(payload: object, path: Path) -> None:
    torch.save(payload, path)


def _save_legacy(payload: object, path: Path) -> None:
    torch.save(payload, path, _use_new_zipfile_serialization=False)


def _save_pickle(payload: object, path: Path) -> None:
    path.write_bytes(pickle.dumps(payload))


@pytest.mark.parametrize("attack", [_OpensAFile, _RunsAShellCommand])
@pytest.mark.parametrize("writer", [_save_zip, _save_legacy, _save_pickle])
def test_malicious_pickle_is_refused_and_never_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], attack: type, writer: object
) -> None:
    marker = tmp_path / "pwned"
    weights = timm.create_model("resnet8", num_classes=10).state_dict()
    source = tmp_path / "ckpt_epoch_240.pth"
    writer({"epoch": 240, "model": weights, "payload": attack(marker)}, source)  # type: ignore[operator]
    assert not marker.exists()
    with warnings.catch_warnings(record=True) as caught:  # a warning would be more lines on stderr
        warnings.simplefilter("always")
        err = fails(
            capsys,
            str(source),
            "--default-normalization",
            "--arch",
            "resnet8",
            "--out",
            str(tmp_path / "x.safetensors"),
        )
    assert not marker.exists(), "the pickle's payload ran"
    assert [str(w.message) for w in caught] == []
    assert str(source) in err and "weights_only=True" in err
    assert not (tmp_path / "x.safetensors").exists()


def test_damaged_file_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "cut.pth"
    torch.save(timm.create_model("resnet8", num_classes=10).state_dict(), source)
    source.write_bytes(source.read_bytes()[:2000])
    err = fails(
        capsys, str(source), "--default-normalization", "--arch", "resnet8", "--out", str(tmp_path / "x.safetensors")
    )
    assert f"cannot read {source} as a PyTorch checkpoint" in err


def test_file_without_state_dict_names_its_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "meta.pth"
    torch.save({"epoch": 3, "optimizer": {"state": {}}}, source)
    err = fails(
        capsys, str(source), "--default-normalization", "--arch", "resnet8", "--out", str(tmp_path / "x.safetensors")
    )
    assert "holds no state dict (a dict of epoch, optimizer" in err


# --- 4: the class count ------------------------------------------------------------------------------------------


def test_wrong_num_classes_names_the_real_count(
    resnet8_file: tuple[Path, torch.nn.Module], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, _ = resnet8_file
    out = tmp_path / "x.safetensors"
    err = fails(
        capsys, str(source), "--default-normalization", "--arch", "resnet8", "--num-classes", "100", "--out", str(out)
    )
    assert "its classifier fc.weight has 10 classes, not the 100 of --num-classes" in err
    assert "--num-classes 10" in err and not out.exists()
    code, stdout, _ = run(
        capsys,
        "import",
        str(source),
        "--default-normalization",
        "--arch",
        "resnet8",
        "--num-classes",
        "10",
        "--out",
        str(out),
    )
    assert code == 0 and "10 classes" in stdout


# --- 5: normalization that matches the input channels ------------------------------------------------------------


def test_one_channel_model_without_data_records_grey_statistics(
    resnet8_file: tuple[Path, torch.nn.Module], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, model = resnet8_file
    out = tmp_path / "r8.safetensors"
    code, _, _ = run(capsys, "import", str(source), "--default-normalization", "--arch", "resnet8", "--out", str(out))
    assert code == 0
    card = read_card(out)
    assert card is not None and card.in_chans == 1 and card.dataset is None
    assert card.mean == (round(sum(CIFAR100_MEAN) / 3, 4),) and card.std == (round(sum(CIFAR100_STD) / 3, 4),)
    # The file is usable as it is: kdcli wraps it with its recorded normalization and runs one-channel images.
    wrapped, _ = open_model_file(out, torch.device("cpu"))
    images = torch.rand(2, 1, 32, 32)
    expected = model.eval()((images - card.mean[0]) / card.std[0])
    assert torch.allclose(wrapped(images), expected, atol=1e-6)


def test_statistics_note_goes_to_the_reporter(resnet8_file: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    notes = Notes()
    import_checkpoint(
        resnet8_file[0], "resnet8", tmp_path / "r8.safetensors", reporter=notes, default_normalization=True
    )
    said = spell(notes.notes[0], cli_spelling)
    assert len(notes.notes) == 1 and "no --data" in said and "pass --data" in said
    assert references(notes.notes[0])[0] == OptionRef("data")
    notes = Notes()
    import_checkpoint(resnet8_file[0], "resnet8", tmp_path / "r8.safetensors", data="fashion-mnist", reporter=notes)
    assert notes.notes == []


def test_rgb_data_for_a_one_channel_model_is_refused(
    resnet8_file: tuple[Path, torch.nn.Module], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x.safetensors"
    err = fails(capsys, str(resnet8_file[0]), "--arch", "resnet8", "--data", "cifar100", "--out", str(out))
    assert "--data cifar100 has 3-channel images but the model takes 1" in err and "fashion-mnist" in err
    assert not out.exists()


def test_grey_data_for_an_rgb_model_is_repeated_per_channel(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "rgb.pth"
    torch.save(timm.create_model("resnet8", num_classes=10).state_dict(), source)
    out = tmp_path / "rgb.safetensors"
    code, _, _ = run(capsys, "import", str(source), "--arch", "resnet8", "--data", "fashion-mnist", "--out", str(out))
    card = read_card(out)
    assert code == 0 and card is not None and card.in_chans == 3
    assert card.mean == (0.2860,) * 3 and card.std == (0.3530,) * 3


@pytest.mark.parametrize("in_chans", [1, 2, 3, 4])
@pytest.mark.parametrize("data", [None, "cifar10", "embedded"])
def test_recorded_statistics_have_one_value_per_channel(in_chans: int, data: str | None) -> None:
    if data == "cifar10" and in_chans != 3:
        with pytest.raises(UsageError, match="3-channel images"):
            input_statistics(in_chans, data, CIFAR100_MEAN, CIFAR100_STD)
        return
    mean, std, _ = input_statistics(in_chans, data, CIFAR100_MEAN, CIFAR100_STD)
    assert len(mean) == len(std) == in_chans
    if data is None and in_chans == 4:  # timm's adapt_input_conv repeats the RGB filters in turn
        assert mean == (*CIFAR100_MEAN, CIFAR100_MEAN[0])
    mean, std, _ = input_statistics(in_chans, None, None, None)
    assert (mean, std) == ((0.5,) * in_chans, (0.5,) * in_chans)


# --- 6: --data and --out, checked before any work ----------------------------------------------------------------


def test_unknown_data_is_refused_before_the_file_is_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.safetensors"
    err = fails(capsys, str(tmp_path / "none.pth"), "--arch", "resnet8", "--data", "cifar", "--out", str(out))
    assert "--data must be one of" in err and "not 'cifar'" in err and "did you mean cifar10?" in err
    assert not out.exists()


def test_unknown_data_writes_nothing(
    resnet8_file: tuple[Path, torch.nn.Module], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "new" / "x.safetensors"
    fails(capsys, str(resnet8_file[0]), "--arch", "resnet8", "--data", "imagenet", "--out", str(out))
    assert not out.parent.exists()


def test_out_naming_a_folder(
    resnet8_file: tuple[Path, torch.nn.Module], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    err = fails(capsys, str(resnet8_file[0]), "--default-normalization", "--arch", "resnet8", "--out", str(folder))
    assert f"--out {folder} is a folder" in err and f"--out {folder / 'resnet8'}.safetensors" in err
    assert list(folder.iterdir()) == []


def test_out_below_a_regular_file(
    resnet8_file: tuple[Path, torch.nn.Module], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a folder")
    err = fails(
        capsys,
        str(resnet8_file[0]),
        "--default-normalization",
        "--arch",
        "resnet8",
        "--out",
        str(blocker / "sub" / "x.safetensors"),
    )
    assert f"{blocker} is a file, not a folder" in err
    assert blocker.read_text() == "a file, not a folder"


def test_out_that_is_not_a_regular_file(
    resnet8_file: tuple[Path, torch.nn.Module], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A special file (here a FIFO; /dev/null alike) would be replaced by the rename of an atomic write."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    err = fails(capsys, str(resnet8_file[0]), "--default-normalization", "--arch", "resnet8", "--out", str(fifo))
    assert "is not a regular file" in err and stat.S_ISFIFO(fifo.stat().st_mode)


def test_out_that_is_the_checkpoint(
    resnet8_file: tuple[Path, torch.nn.Module], capsys: pytest.CaptureFixture[str]
) -> None:
    source = resnet8_file[0]
    before = source.read_bytes()
    err = fails(capsys, str(source), "--default-normalization", "--arch", "resnet8", "--out", str(source))
    assert "is an input of this command" in err and source.read_bytes() == before


@pytest.mark.skipif(sys.platform != "linux" or os.geteuid() == 0, reason="root writes in read-only folders")
def test_out_in_a_read_only_folder(
    resnet8_file: tuple[Path, torch.nn.Module], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        err = fails(
            capsys,
            str(resnet8_file[0]),
            "--default-normalization",
            "--arch",
            "resnet8",
            "--out",
            str(folder / "x.safetensors"),
        )
    finally:
        folder.chmod(0o755)
    assert f"cannot write in {folder}" in err and "choose a writable location" in err
    assert list(folder.iterdir()) == []


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs Linux's sysfs")
def test_out_where_even_root_cannot_write(
    resnet8_file: tuple[Path, torch.nn.Module], capsys: pytest.CaptureFixture[str]
) -> None:
    """sysfs refuses new files to every user (root included, where chmod would not), so this runs anywhere."""
    out = Path("/sys/kdcli-import-test.safetensors")
    err = fails(capsys, str(resnet8_file[0]), "--default-normalization", "--arch", "resnet8", "--out", str(out))
    assert "cannot write in /sys" in err and not out.exists()


def test_failed_write_leaves_no_file(
    resnet8_file: tuple[Path, torch.nn.Module],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The disk fills up halfway through the file: exit 2, no partial file, an older file at --out left as it was."""

    def half_then_full(tensors: object, filename: str, metadata: object = None) -> None:
        Path(filename).write_bytes(b"\0" * 1000)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    out = tmp_path / "x.safetensors"
    monkeypatch.setattr(kdcli.io.model_file, "save_file", half_then_full)
    err = fails(capsys, str(resnet8_file[0]), "--default-normalization", "--arch", "resnet8", "--out", str(out))
    assert f"cannot write {out}" in err and "No space left on device" in err and "nothing was written" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resnet8.pth"]
    out.write_bytes(b"the previous model")
    fails(capsys, str(resnet8_file[0]), "--default-normalization", "--arch", "resnet8", "--out", str(out))
    assert out.read_bytes() == b"the previous model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resnet8.pth", "x.safetensors"]
