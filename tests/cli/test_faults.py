"""The fault table (docs/reliability.md): each bad input or broken environment ends with one line that names what is
wrong and what to do, the documented exit code, and no work lost. Each test is one row of the table."""

from __future__ import annotations

import gzip
import json
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from kdcli.data.sources import EMBEDDED_DIR

from ..conftest import refused, run

ASSET = Path(__file__).resolve().parents[2] / "kdcli" / "assets" / "fmnist-mini-resnet20.safetensors"
QUICK = ["--epochs", "1", "--train-subset", "100", "--device", "cpu", "--quiet"]


# --- input files ---------------------------------------------------------------------------------------------------


def damaged_copy(tmp_path: Path, key: str, value: str) -> Path:
    with safe_open(str(ASSET), "pt") as handle:
        metadata = dict(handle.metadata())
    metadata[key] = value
    path = tmp_path / "damaged.safetensors"
    save_file(load_file(str(ASSET)), str(path), metadata=metadata)
    return path


@pytest.mark.parametrize(("key", "value"), [("num_classes", "ten"), ("mean", "[0.5")])
def test_damaged_metadata(capsys: pytest.CaptureFixture[str], tmp_path: Path, key: str, value: str) -> None:
    err = refused(capsys, 2, "eval", str(damaged_copy(tmp_path, key, value)), "--device", "cpu")
    assert "metadata is damaged" in err and "re-export" in err


def fashion_mnist_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "fm"
    shutil.copytree(EMBEDDED_DIR, folder, ignore=shutil.ignore_patterns("*.md", "COPYRIGHT"))
    return folder


def test_truncated_gz_is_a_usage_error_not_an_interruption(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """gzip's truncation is an EOFError, which click takes for Ctrl-D (exit 130); it is a damaged file (exit 2)."""
    folder = fashion_mnist_copy(tmp_path)
    images = folder / "train-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:5000])
    err = refused(capsys, 2, "train", "--model", "resnet8", "--data", "fashion-mnist", "--data-dir", str(folder),
                  *QUICK, "--out", str(tmp_path / "r"))  # fmt: skip
    assert "truncated or damaged" in err and "download it again" in err


def test_label_file_of_random_bytes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    folder = fashion_mnist_copy(tmp_path)
    with gzip.open(folder / "train-labels-idx1-ubyte.gz", "wb") as handle:
        handle.write(bytes(range(256)) * 20)
    err = refused(capsys, 2, "train", "--model", "resnet8", "--data", "fashion-mnist", "--data-dir", str(folder),
                  *QUICK, "--out", str(tmp_path / "r"))  # fmt: skip
    assert "train-labels-idx1-ubyte.gz" in err


def test_label_file_with_fewer_labels_than_images(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Silently accepted before: 10,000 labels for 60,000 images (here: half the labels)."""
    folder = fashion_mnist_copy(tmp_path)
    path = folder / "train-labels-idx1-ubyte.gz"
    with gzip.open(path) as handle:
        labels = handle.read()[8:]
    with gzip.open(path, "wb") as handle:
        handle.write(struct.pack(">HBBI", 0, 8, 1, len(labels) // 2) + labels[: len(labels) // 2])
    err = refused(capsys, 2, "train", "--model", "resnet8", "--data", "fashion-mnist", "--data-dir", str(folder),
                  *QUICK, "--out", str(tmp_path / "r"))  # fmt: skip
    assert "images but" in err and "labels" in err


def cifar10_folder(tmp_path: Path, str_keys: bool = False) -> Path:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)

    def batch(count: int) -> dict[object, object]:
        data = {
            b"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
            b"labels": list(range(10)) * (count // 10),
        }
        return {k.decode(): v for k, v in data.items()} if str_keys else data

    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps(batch(20)))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}))
    return tmp_path


def test_cifar_folder_missing_a_batch(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    root = cifar10_folder(tmp_path)
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    err = refused(capsys, 2, "train", "--model", "resnet8", "--data", "cifar10", "--data-dir", str(root),
                  "--epochs", "1", "--device", "cpu", "--quiet", "--out", str(tmp_path / "r"))  # fmt: skip
    assert "data_batch_3" in err


def test_cifar_pickle_with_str_keys_is_read(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    root = cifar10_folder(tmp_path, str_keys=True)
    code, _, err = run(capsys, "train", "--model", "resnet8", "--data", "cifar10", "--data-dir", str(root),
                       "--epochs", "1", "--device", "cpu", "--quiet", "--out", str(tmp_path / "r"))  # fmt: skip
    assert code == 0, err


def test_cifar_pickle_that_would_run_code_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    root = cifar10_folder(tmp_path)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[object, tuple[str, str]]:
            return (open, (str(marker), "w"))

    (root / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({b"data": Exploit(), b"labels": []}))
    err = refused(capsys, 2, "train", "--model", "resnet8", "--data", "cifar10", "--data-dir", str(root),
                  "--epochs", "1", "--device", "cpu", "--quiet", "--out", str(tmp_path / "r"))  # fmt: skip
    assert "not a CIFAR python-pickle batch" in err and not marker.exists()


def test_image_folder_with_empty_class_folders(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for split in ("train", "val"):
        for name in ("a", "b"):
            (tmp_path / split / name).mkdir(parents=True)
    err = refused(capsys, 2, "train", "--model", "resnet8", "--data", "imagefolder", "--data-dir", str(tmp_path),
                  "--epochs", "1", "--device", "cpu", "--quiet", "--out", str(tmp_path / "r"))  # fmt: skip
    assert "holds no images" in err


def image_folder(root: Path, splits: dict[str, tuple[str, ...]]) -> Path:
    """Four small random PNGs per class in each split's class folders."""
    from PIL import Image

    generator = np.random.default_rng(0)
    for split, classes in splits.items():
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for i in range(4):
                pixels = generator.integers(0, 256, (16, 16, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    return root


FOLDER_RUN = ["train", "--model", "resnet8", "--data", "imagefolder", "--epochs", "1", "--device", "cpu", "--quiet",
              "--set", "data.image_size=32"]  # fmt: skip


def test_image_folder_with_an_unreadable_image(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """timm would log "Skipped sample" and train on the next image instead; kdcli names the file and stops."""
    root = image_folder(tmp_path / "data", {"train": ("a", "b"), "val": ("a", "b")})
    (root / "train" / "b" / "broken.png").write_bytes(b"\x89PNG not really" * 10)
    err = refused(capsys, 2, *FOLDER_RUN, "--data-dir", str(root), "--out", str(tmp_path / "r"))
    assert "broken.png is not a readable image" in err and "remove or replace it" in err


def test_image_folder_without_a_folder_to_evaluate_on(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Without val/ (or test/) a run would train and report no accuracy at all."""
    root = image_folder(tmp_path / "data", {"train": ("a", "b")})
    err = refused(capsys, 2, *FOLDER_RUN, "--data-dir", str(root), "--out", str(tmp_path / "r"))
    assert "no val/ (or test/) folder" in err


def test_image_folder_whose_evaluation_classes_differ(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    root = image_folder(tmp_path / "data", {"train": ("a", "b"), "test": ("a", "c")})
    err = refused(capsys, 2, *FOLDER_RUN, "--data-dir", str(root), "--out", str(tmp_path / "r"))
    assert "hold different class folders" in err


def test_image_folder_with_a_test_folder_trains_and_evaluates(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    root = image_folder(tmp_path / "data", {"train": ("a", "b"), "test": ("a", "b")})
    code, _, err = run(capsys, *FOLDER_RUN, "--data-dir", str(root), "--out", str(tmp_path / "r"), "--json")
    assert code == 0, err
    assert (tmp_path / "r" / "report.json").is_file() and '"test_top1"' in (
        tmp_path / "r" / "metrics.jsonl"
    ).read_text()


def test_empty_teacher_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "teacher.safetensors").write_bytes(b"")
    err = refused(capsys, 2, "distill", "--teacher", str(tmp_path / "teacher.safetensors"), "--student", "resnet8",
                  "--data", "embedded", *QUICK, "--out", str(tmp_path / "r"))  # fmt: skip
    assert "not a readable safetensors file" in err


def test_device_that_is_a_format_string(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    err = refused(capsys, 2, "train", "--model", "resnet8", "--data", "embedded", "--epochs", "1", "--device", "%s%n",
                  "--quiet", "--out", str(tmp_path / "r"))  # fmt: skip
    assert "%s%n" in err and not (tmp_path / "r").exists()


def test_grey_teacher_on_colour_data(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A 1-channel 10-class teacher on cifar10 (3 channels, 10 classes)."""
    root = cifar10_folder(tmp_path)
    err = refused(capsys, 2, "distill", "--teacher", str(ASSET), "--student", "resnet8", "--data", "cifar10",
                  "--data-dir", str(root), "--epochs", "1", "--device", "cpu", "--quiet",
                  "--out", str(tmp_path / "r"))  # fmt: skip
    assert "takes 1-channel images but cifar10 has 3" in err


def test_student_checkpoint_of_another_class_count(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from kdcli.io.model_file import ModelCard, save_model
    from kdcli.models.factory import create_model

    path = tmp_path / "s100.safetensors"
    card = ModelCard(arch="resnet8", num_classes=100, in_chans=1, input_size=(1, 32, 32), mean=(0.5,), std=(0.5,))
    save_model(path, create_model("resnet8", 100, 1), card)
    for command in (["distill", "--teacher", str(ASSET), "--student", "resnet8", "--student-ckpt", str(path)],
                    ["train", "--model", "resnet8", "--model-ckpt", str(path)]):  # fmt: skip
        err = refused(capsys, 2, *command, "--data", "embedded", *QUICK, "--out", str(tmp_path / command[0]))
        assert "predicts 100 classes" in err


# --- output paths --------------------------------------------------------------------------------------------------


def test_out_below_a_regular_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    err = refused(capsys, 2, "train", "--model", "resnet8", "--data", "embedded", *QUICK, "--out",
                  str(tmp_path / "file" / "run"))  # fmt: skip
    assert "cannot write the run directory" in err and "--out" in err


def test_out_naming_an_existing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    err = refused(
        capsys, 2, "train", "--model", "resnet8", "--data", "embedded", *QUICK, "--out", str(tmp_path / "file")
    )
    assert "is a file, not a folder" in err
    assert (tmp_path / "file").read_text() == "x"


def test_results_into_a_full_device(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """`kdcli eval --json > /dev/full`: stdout refuses the bytes (ENOSPC)."""

    class Full:
        def write(self, text: str) -> int:
            raise OSError(28, "No space left on device")

        def flush(self) -> None:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr("sys.stdout", Full())
    err = refused(capsys, 1, "eval", str(ASSET), "--json", "--device", "cpu")
    assert "cannot write the results to stdout (No space left on device)" in err


def test_disk_filling_mid_run_keeps_the_last_good_checkpoint(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The third write of the checkpoint (after epoch 2) finds the disk full: exit 1, epoch 1's checkpoint intact."""
    from kdcli.io import checkpoint

    real = checkpoint.atomic_write
    writes = {"count": 0}

    def filling(path: Path, write: object) -> None:
        writes["count"] += 1
        if writes["count"] == 3:
            raise OSError(28, "No space left on device")
        real(path, write)  # type: ignore[arg-type]

    monkeypatch.setattr(checkpoint, "atomic_write", filling)
    out = tmp_path / "run"
    err = refused(capsys, 1, "train", "--model", "resnet8", "--data", "embedded", "--epochs", "3", "--train-subset",
                  "100", "--device", "cpu", "--quiet", "--out", str(out))  # fmt: skip
    assert "No space left on device" in err and f"--resume {out}" in err
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 1


# --- configuration -------------------------------------------------------------------------------------------------


def test_preset_whose_base_names_itself(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    preset = tmp_path / "loop.yaml"
    preset.write_text(f"base: {preset}\n")
    err = refused(capsys, 2, "config", "show", "--preset", str(preset))
    assert "base chain loops" in err


def test_binary_config_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = tmp_path / "binary.yaml"
    config.write_bytes(bytes(range(128, 256)) * 3)
    err = refused(capsys, 2, "config", "show", "--config", str(config))
    assert "not a text file" in err


@pytest.mark.parametrize("seed", ["-1", str(2**32), "99999999999"])
def test_seed_out_of_range(capsys: pytest.CaptureFixture[str], seed: str) -> None:
    err = refused(capsys, 2, "config", "show", "--seed", seed)
    assert "train.seed" in err


# --- runs and resume -----------------------------------------------------------------------------------------------


def test_truncated_checkpoint_cannot_resume(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, _, err = run(capsys, "train", "--model", "resnet8", "--data", "embedded", *QUICK, "--out", str(out))
    assert code == 0, err
    (out / "checkpoint.pt").write_bytes((out / "checkpoint.pt").read_bytes()[:1000])
    err = refused(capsys, 2, "train", "--resume", str(out), "--quiet")
    assert "cannot be read" in err and "new --out" in err


def test_validation_split_leaving_no_training_set(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    err = refused(capsys, 2, "train", "--model", "resnet8", "--data", "embedded", "--train-subset", "100",
                  "--val-split", "0.999", "--epochs", "1", "--device", "cpu", "--quiet",
                  "--out", str(tmp_path / "r"))  # fmt: skip
    assert "--val-split 0.999 leaves" in err


def test_vision_transformer_on_small_images_is_built_for_their_size(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """timm's ViTs are made for 224×224; on 32×32 data kdcli builds them for 32 and records it for `kdcli eval`."""
    out = tmp_path / "run"
    code, _, err = run(capsys, "train", "--model", "test_vit", "--data", "embedded", *QUICK, "--out", str(out))
    assert code == 0, err
    code, _, err = run(capsys, "eval", str(out / "student.safetensors"), "--device", "cpu", "--json")
    assert code == 0, err


def test_resume_of_a_run_stopped_before_its_first_checkpoint(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("train:\n  epochs: 1\n")
    err = refused(capsys, 2, "train", "--resume", str(out))
    assert "before its first checkpoint" in err and "run its original command again" in err


def test_a_second_run_on_the_same_out_is_refused(tmp_path: Path) -> None:
    """The first run holds the folder's lock: the second exits 2 instead of mixing its files into the first's."""
    from kdcli.io.files import RunDirectory

    with RunDirectory(tmp_path / "run"), pytest.raises(Exception, match="in use by another kdcli run"):
        RunDirectory(tmp_path / "run").__enter__()
    with RunDirectory(tmp_path / "run"):  # released when the first ends
        pass


# --- evaluation ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "-1", "101"])
def test_min_top1_must_be_a_percentage(capsys: pytest.CaptureFixture[str], value: str) -> None:
    err = refused(capsys, 2, "eval", str(ASSET), "--min-top1", value, "--device", "cpu")
    assert "--min-top1 is a top-1 in percent" in err


def test_eval_device_is_validated(capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(capsys, 2, "eval", str(ASSET), "--device", "gpu7")
    assert "device must be auto, cpu, cuda, cuda:N or mps" in err


def test_eval_teacher_of_another_class_count(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from kdcli.io.model_file import ModelCard, save_model
    from kdcli.models.factory import create_model

    teacher = tmp_path / "t5.safetensors"
    card = ModelCard(arch="resnet8", num_classes=5, in_chans=1, input_size=(1, 32, 32), mean=(0.5,), std=(0.5,))
    save_model(teacher, create_model("resnet8", 5, 1), card)
    err = refused(capsys, 2, "eval", str(ASSET), "--teacher", str(teacher), "--device", "cpu")
    assert "predicts 5 classes" in err


def test_eval_of_a_grey_model_on_colour_data(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    root = cifar10_folder(tmp_path)
    err = refused(capsys, 2, "eval", str(ASSET), "--data", "cifar10", "--data-dir", str(root), "--device", "cpu")
    assert "takes 1-channel images but cifar10 has 3" in err


# --- interruptions and recovery --------------------------------------------------------------------------------------


def test_interrupt_before_the_first_checkpoint_says_to_run_again(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C during the teacher check: exit 130, and the message says there is nothing to resume."""
    from kdcli.training import engine

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "check_teacher", interrupted)
    err = refused(capsys, 130, "distill", "--teacher", str(ASSET), "--student", "resnet8", "--data", "embedded",
                  *QUICK, "--out", str(tmp_path / "run"))  # fmt: skip
    assert "nothing to resume" in err and "run the same command again" in err
    monkeypatch.undo()
    code, _, err = run(capsys, "distill", "--teacher", str(ASSET), "--student", "resnet8", "--data", "embedded",
                       *QUICK, "--out", str(tmp_path / "other"))  # fmt: skip
    assert code == 0, err


def test_after_a_non_finite_loss_a_lower_rate_resumes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """An absurd rate diverges (exit 1, the last good checkpoint kept); `--resume DIR --lr X` continues from it with
    the new rate, which config.yaml then records."""
    out = tmp_path / "run"
    code, _, err = run(capsys, "train", "--model", "resnet8", "--data", "embedded", "--train-subset", "100",
                       "--epochs", "3", "--lr", "1e12", "--device", "cpu", "--quiet", "--out", str(out))  # fmt: skip
    assert code == 1 and "non-finite" in err and f"--resume {out} --lr X" in err, err
    kept = torch.load(out / "checkpoint.pt", weights_only=True)
    assert all(torch.isfinite(t).all() for t in kept["student"].values() if t.is_floating_point())
    code, _, err = run(capsys, "train", "--resume", str(out), "--lr", "0.05", "--quiet")
    assert code == 0, err
    assert "lr: 0.05" in (out / "config.yaml").read_text()


def test_checkpoint_refuses_pickled_code(tmp_path: Path) -> None:
    """A checkpoint.pt whose unpickling would create a file is refused, and the file is not created."""
    from kdcli.errors import UsageError
    from kdcli.io.checkpoint import load_checkpoint

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[object, tuple[str, str]]:
            return (open, (str(marker), "w"))

    torch.save({"epoch": Exploit()}, tmp_path / "checkpoint.pt")
    with pytest.raises(UsageError, match="cannot be read"):
        load_checkpoint(tmp_path)
    assert not marker.exists()


def test_yaml_with_a_python_tag_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = tmp_path / "evil.yaml"
    marker = tmp_path / "pwned"
    config.write_text(f"train: !!python/object/apply:builtins.open ['{marker}', 'w']\n")
    err = refused(capsys, 2, "config", "show", "--config", str(config))
    assert "not valid YAML" in err and not marker.exists()


# --- what kdcli does not do ------------------------------------------------------------------------------------------


def test_models_names_each_zoo_model_as_repdistiller_does(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "models", "--json")
    names = {row["name"]: row["repdistiller_name"] for row in json.loads(out)["zoo"]}
    assert code == 0 and names["mobilenetv2_cifar"] == "MobileNetV2" and names["vgg8_cifar"] == "vgg8"
    assert names["shufflenetv1_cifar"] == "ShuffleV1" and len(names) == 21


def test_no_network_unless_asked(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Distill, evaluate and export with every socket refused: kdcli reaches for the network only when a flag asks
    (--set data.download=true, --teacher-pretrained)."""
    import socket

    def refused_socket(*args: object, **kwargs: object) -> None:
        raise AssertionError("kdcli opened a socket")

    monkeypatch.setattr(socket, "socket", refused_socket)
    monkeypatch.setattr(socket, "create_connection", refused_socket)
    out = tmp_path / "run"
    code, _, err = run(capsys, "distill", "--teacher", str(ASSET), "--student", "resnet8", "--data", "embedded",
                       *QUICK, "--out", str(out))  # fmt: skip
    assert code == 0, err
    code, _, err = run(capsys, "eval", str(out / "student.safetensors"), "--device", "cpu", "--json")
    assert code == 0, err
    code, _, err = run(capsys, "export", str(out / "student.safetensors"), "--format", "timm", "--out",
                       str(tmp_path / "timm"), "--json")  # fmt: skip
    assert code == 0, err
