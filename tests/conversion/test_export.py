"""kdcli export: ONNX checked against PyTorch in ONNX Runtime (normalization included, SPS students, dynamic batch),
the refusal that keeps nothing, timm's local-dir folder, and the command line's JSON and one-line errors."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

import kdcli.conversion.export as export_module
from kdcli import api
from kdcli.errors import RunFailed, UsageError
from kdcli.io.model_file import ModelCard, save_model
from kdcli.models.sps import apply_sps

from ..conftest import run

MISSING = [name for name in export_module.ONNX_PACKAGES if importlib.util.find_spec(name) is None]
needs_onnx = pytest.mark.skipif(
    bool(MISSING), reason=f"{', '.join(MISSING)} not installed: pip install 'kdcli[onnx]' for the ONNX tests"
)


def onnx_logits(path: Path, images: torch.Tensor) -> torch.Tensor:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"images": images.numpy()})
    return torch.from_numpy(logits)


def by_hand(path: Path, images: torch.Tensor) -> torch.Tensor:
    """The plain timm module of a kdcli file on images normalized here, with the card's statistics: what the
    exported graph must compute from images in [0, 1]."""
    model, card = api.load_model(path)
    if images.shape[1] == 1 and card.in_chans == 3:
        images = images.expand(-1, 3, -1, -1)
    mean = torch.tensor(card.mean).view(1, -1, 1, 1)
    std = torch.tensor(card.std).view(1, -1, 1, 1)
    with torch.no_grad():
        return model((images - mean) / std)


def unique_float_elements(model: nn.Module) -> int:
    tensors = {(t.data_ptr(), tuple(t.shape)): t.numel() for t in model.state_dict().values() if t.is_floating_point()}
    return sum(tensors.values())


@pytest.fixture(scope="module")
def sps_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Pea-KD student: resnet8 with shuffled parameter sharing, non-trivial norms in both passes."""
    torch.manual_seed(0)
    model = apply_sps(timm.create_model("resnet8", num_classes=10, in_chans=1)).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    card = ModelCard(arch="resnet8", num_classes=10, in_chans=1, input_size=(1, 32, 32), mean=(0.286,),
                     std=(0.353,), dataset="embedded", method="pea",
                     student_transform={"name": "sps", "options": {"shuffle": True, "share_norm": False}})  # fmt: skip
    path = tmp_path_factory.mktemp("sps") / "sps.safetensors"
    save_model(path, model, card)
    return path


# --- ONNX --------------------------------------------------------------------------------------------------------


@needs_onnx
def test_onnx_of_a_trained_zoo_resnet_includes_normalization(teacher_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "resnet8.onnx"
    summary = api.export(teacher_file, out=out).document()
    assert summary["format"] == "onnx" and summary["path"] == str(out) and out.is_file()
    assert summary["input_shape"] == [1, 1, 32, 32] and summary["normalization_included"] is True
    assert 0 <= summary["max_abs_diff"] <= summary["tolerance"] and summary["opset"] >= export_module.MIN_OPSET
    torch.manual_seed(1)
    images = torch.rand(1, 1, 32, 32)  # what kdcli's data pipeline gives a model: [0, 1], not normalized
    assert torch.allclose(onnx_logits(out, images), by_hand(teacher_file, images), rtol=0, atol=summary["tolerance"])
    assert [p.name for p in tmp_path.iterdir()] == ["resnet8.onnx"]  # no temporary file left next to it


@needs_onnx
def test_onnx_of_an_sps_student_matches_and_stores_shared_weights_once(sps_file: Path, tmp_path: Path) -> None:
    import onnx
    from onnx import numpy_helper

    out = tmp_path / "sps.onnx"
    summary = api.export(sps_file, out=out).document()
    assert summary["student_transform"]["name"] == "sps"
    assert summary["max_abs_diff"] <= summary["tolerance"]
    torch.manual_seed(2)
    images = torch.rand(1, 1, 32, 32)
    assert torch.allclose(onnx_logits(out, images), by_hand(sps_file, images), rtol=0, atol=summary["tolerance"])
    # the second passes reuse the first pass's convolutions: the graph holds each shared weight once
    model, _ = api.load_model(sps_file)
    unshared = sum(t.numel() for t in model.state_dict().values() if t.is_floating_point())
    stored = sum(numpy_helper.to_array(t).size for t in onnx.load(str(out)).graph.initializer)
    assert stored <= unique_float_elements(model) < unshared


@needs_onnx
def test_dynamic_batch_takes_3_and_7_and_the_cli_prints_one_json_document(
    capsys: pytest.CaptureFixture[str], teacher_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "dynamic.onnx"
    code, stdout, err = run(capsys, "export", str(teacher_file), "--dynamic-batch", "--out", str(out), "--json")
    assert code == 0, err
    summary = json.loads(stdout)  # exactly one document
    assert summary["schema"] == "kdcli.export/1" and summary["dynamic_batch"] is True
    assert summary["input_shape"] == ["batch", 1, 32, 32] and summary["checked_batches"] == [1, 3, 8]
    for batch in (3, 7):
        images = torch.rand(batch, 1, 32, 32)
        exported = onnx_logits(out, images)
        assert exported.shape == (batch, 10)
        assert torch.allclose(exported, by_hand(teacher_file, images), rtol=0, atol=summary["tolerance"])


@needs_onnx
def test_grey_data_into_a_three_channel_model_takes_grey_images(tmp_path: Path) -> None:
    """A three-channel student trained on grey data (one mean recorded): the export takes one channel and repeats
    it, as kdcli's NormalizedModel does."""
    torch.manual_seed(0)
    model = timm.create_model("resnet8", num_classes=10, in_chans=3).eval()
    card = ModelCard(arch="resnet8", num_classes=10, in_chans=3, input_size=(3, 32, 32), mean=(0.286,), std=(0.353,))
    path = tmp_path / "rgb.safetensors"
    save_model(path, model, card)
    summary = api.export(path).document()
    assert summary["path"] == str(tmp_path / "rgb.onnx") and summary["input_shape"] == [1, 1, 32, 32]
    assert summary["grey_to_rgb"] is True
    images = torch.rand(1, 1, 32, 32)
    assert torch.allclose(onnx_logits(tmp_path / "rgb.onnx", images), by_hand(path, images), rtol=0,
                          atol=summary["tolerance"])  # fmt: skip


@pytest.mark.parametrize("format", [pytest.param("onnx", marks=needs_onnx), "timm"])
def test_a_failed_check_keeps_nothing_and_leaves_the_old_file(
    teacher_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, format: str
) -> None:
    """With a negative tolerance no measured difference passes: the real check refuses, exit 1, nothing kept."""
    monkeypatch.setattr(export_module, "RELATIVE_TOLERANCE", -1.0)
    out = tmp_path / ("student.onnx" if format == "onnx" else "student-timm")
    if format == "onnx":
        out.write_text("old")
    with pytest.raises(RunFailed, match="nothing was written") as refused:
        api.export(teacher_file, format=format, out=out, force=True)  # force: "old" is not a kdcli export
    assert refused.value.exit_code == 1 and "tolerance" in str(refused.value)
    if format == "onnx":
        assert out.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == (["student.onnx"] if format == "onnx" else [])


# --- timm --------------------------------------------------------------------------------------------------------


def test_timm_folder_round_trips_through_timm_create_model(teacher_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "teacher-timm"
    summary = api.export(teacher_file, format="timm", out=out).document()
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert summary["normalization_included"] is False and summary["max_abs_diff"] <= summary["tolerance"]
    config = json.loads((out / "config.json").read_text())
    _, card = api.load_model(teacher_file)
    assert config["architecture"] == "resnet8" and config["num_classes"] == 10
    assert config["pretrained_cfg"]["input_size"] == [1, 32, 32]
    assert config["pretrained_cfg"]["mean"] == list(card.mean) and config["label_names"] == card.classes

    rebuilt = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    assert tuple(rebuilt.pretrained_cfg["mean"]) == card.mean and tuple(rebuilt.pretrained_cfg["std"]) == card.std
    images = torch.rand(4, 1, 32, 32)
    normalized = (images - torch.tensor(card.mean).view(1, -1, 1, 1)) / torch.tensor(card.std).view(1, -1, 1, 1)
    with torch.no_grad():
        assert torch.equal(rebuilt(normalized), by_hand(teacher_file, images))

    # as timm's train.py builds a teacher from --kd-model-name local-dir:DIR (timm.task, timm >= 1.0.20)
    distillation = pytest.importorskip("timm.task.distillation")
    teacher = distillation.DistillationTeacher(f"local-dir:{out}", num_classes=10, in_chans=1)
    assert teacher.mean_kd.flatten().tolist() == pytest.approx(list(card.mean))
    with torch.no_grad():
        assert torch.equal(teacher.model(normalized), by_hand(teacher_file, images))


def test_timm_export_replaces_its_files_in_an_existing_folder(teacher_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "folder"
    out.mkdir()
    (out / "README.md").write_text("mine")
    (out / "config.json").write_text('{"kdcli": {}}')  # a previous kdcli export's (its own kdcli section)
    api.export(teacher_file, format="timm", out=out)
    assert (out / "README.md").read_text() == "mine" and json.loads((out / "config.json").read_text())["num_classes"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]


def test_timm_refuses_an_sps_student_with_exit_2(capsys: pytest.CaptureFixture[str], sps_file: Path,
                                                 tmp_path: Path) -> None:  # fmt: skip
    code, out, err = run(capsys, "export", str(sps_file), "--format", "timm", "--out", str(tmp_path / "t"))
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "'sps'" in err and "--format onnx" in err and "Traceback" not in err
    assert not (tmp_path / "t").exists()


# --- refusals before anything is built ---------------------------------------------------------------------------


def test_missing_file_exits_2_with_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run(capsys, "export", str(tmp_path / "nowhere.safetensors"), "--format", "timm")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "nowhere.safetensors does not exist" in err


def test_bad_requests_say_what_to_do(teacher_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(UsageError, match=r"not a kdcli model file.*kdcli import"):
        api.export(plain, format="timm")
    with pytest.raises(UsageError, match="is a directory; give out a file path"):
        api.export(teacher_file, out=tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="is a file; format=timm writes a folder"):
        api.export(teacher_file, format="timm", out=tmp_path / "file")
    with pytest.raises(UsageError, match="format must be onnx or timm"):
        api.export(teacher_file, format="tflite")
    with pytest.raises(UsageError, match="opset=13 is below 18"):
        api.export(teacher_file, opset=13)
    with pytest.raises(UsageError, match="apply to format=onnx only"):
        api.export(teacher_file, format="timm", dynamic_batch=True)
    # a package the extra brings that is not installed (a name no environment has)
    monkeypatch.setattr(export_module, "ONNX_PACKAGES", ("onnx", "kdcli_no_such_package"))
    with pytest.raises(UsageError, match=r"kdcli_no_such_package.*pip install 'kdcli\[onnx\]'"):
        api.export(teacher_file, out=tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("format", [pytest.param("onnx", marks=needs_onnx), "timm"])
def test_exports_say_how_padded_images_are_prepared(tmp_path: Path, format: str) -> None:
    """The Fashion-MNIST models take 28×28 images zero-padded to 32×32; timm's own eval transform would resize them
    instead (the README's deployment section): the exported config and the ONNX metadata say so."""
    out = tmp_path / ("m.onnx" if format == "onnx" else "m-timm")
    api.export("kdcli:fmnist-mini-resnet20.safetensors", format=format, out=out)
    if format == "timm":
        said = json.loads((out / "config.json").read_text())["kdcli"]["preprocess"]
    else:
        import onnx

        said = {p.key: p.value for p in onnx.load(str(out)).metadata_props}["kdcli.preprocess"]
    assert said == "zero-pad each 28x28 image by 2 pixels on each side to 32x32 (no resize), values in [0, 1]"
