"""``kdcli import`` with the checkpoints other code writes: RepDistiller's (its own architecture names, the
DataParallel prefix), timm's ``CheckpointSaver`` (``args`` as an ``argparse.Namespace``, an EMA copy), and state dicts
of ``torch.compile``d and DataParallel-wrapped models.

RepDistiller-layout state dicts come from the zoo models, whose keys and shapes at 100 classes are held against
RepDistiller's own (``tests/models/data/repdistiller_state_dicts.json``, the record tests/models/test_zoo.py uses).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import pytest
import timm
import torch
from timm.utils import CheckpointSaver, ModelEmaV3
from torch import nn

from kdcli.catalog import ZOO, ZOO_ALIASES, ZooModel
from kdcli.conversion.importer import architecture_candidates, choose_architecture, import_checkpoint, read_state_dict
from kdcli.errors import UsageError
from kdcli.interfaces import Reporter
from kdcli.io.model_file import load_model

from ..conftest import run

REFERENCE = json.loads((Path(__file__).parents[1] / "models" / "data" / "repdistiller_state_dicts.json").read_text())[
    "models"
]
REPDISTILLER_NAME = {model.name: model.repdistiller_name for model in ZOO}


class Notes(Reporter):
    def __init__(self) -> None:
        self.notes: list[str] = []

    def note(self, message: str) -> None:
        self.notes.append(message)


def repdistiller_model(zoo_name: str) -> nn.Module:
    """A 100-class zoo model whose state dict has exactly RepDistiller's keys and shapes (checked here)."""
    torch.manual_seed(0)
    model = timm.create_model(zoo_name, num_classes=100)
    entries = sorted([key, list(tensor.shape)] for key, tensor in model.state_dict().items())
    digest = hashlib.sha256(json.dumps(entries, separators=(",", ":")).encode()).hexdigest()
    assert digest == REFERENCE[zoo_name]["sha256"], f"{zoo_name} no longer has RepDistiller's layout"
    return model


def save_repdistiller(model: nn.Module, path: Path) -> Path:
    """As RepDistiller's train_teacher.py saves a teacher trained with DataParallel."""
    state = {f"module.{key}": tensor for key, tensor in model.state_dict().items()}
    torch.save({"epoch": 240, "model": state, "best_acc": torch.tensor(75.6), "optimizer": {"state": {}}}, path)
    return path


def assert_same_weights(path: Path, model: nn.Module) -> None:
    loaded, _ = load_model(path)
    expected = model.state_dict()
    assert loaded.state_dict().keys() == expected.keys()
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, expected[name]), name


# --- 1: RepDistiller's names -------------------------------------------------------------------------------------


@pytest.mark.parametrize("zoo", ZOO, ids=[model.repdistiller_name for model in ZOO])
def test_every_repdistiller_name_means_the_zoo_model_first(zoo: ZooModel) -> None:
    name, repdistiller_name = zoo.name, zoo.repdistiller_name
    found = architecture_candidates(repdistiller_name)
    assert found[0] == name
    # Only RepDistiller's names that timm has for a model of its own (its ImageNet VGGs) have a second candidate.
    shadowed = repdistiller_name != name and timm.is_model(repdistiller_name)
    assert found[1:] == ([repdistiller_name] if shadowed else [])
    assert architecture_candidates(name) == [name]


def test_the_ambiguous_names_are_timms_imagenet_vggs() -> None:
    ambiguous = {model.repdistiller_name for model in ZOO if len(architecture_candidates(model.repdistiller_name)) > 1}
    assert ambiguous == {"vgg11", "vgg13", "vgg16", "vgg19"}
    assert "vgg8" in ZOO_ALIASES and architecture_candidates("vgg8") == ["vgg8_cifar"]
    assert architecture_candidates("mobilenetv2") == ["mobilenetv2_cifar"]  # RepDistiller's MobileNetV2, any case


def test_repdistiller_vgg13_imports_as_the_zoo_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The issue: `--arch vgg13` took timm's ImageNet VGG-13 and failed on the class count."""
    model = repdistiller_model("vgg13_cifar")
    source = save_repdistiller(model, tmp_path / "vgg13_cifar100.pth")
    out = tmp_path / "vgg13.safetensors"
    code, stdout, err = run(capsys, "import", str(source), "--arch", "vgg13", "--data", "cifar100", "--out", str(out))
    assert code == 0, err
    assert f"wrote {out}: vgg13_cifar, 100 classes, 3 input channels" in stdout
    assert_same_weights(out, model)
    notes = Notes()
    card = import_checkpoint(source, "vgg13", out, data="cifar100", reporter=notes)
    assert card.arch == "vgg13_cifar"
    assert notes.notes == [
        "note: 'vgg13': vgg13_cifar100.pth has RepDistiller's layout; imported as the CIFAR zoo's 'vgg13_cifar' "
        "(RepDistiller's vgg13), not timm's ImageNet 'vgg13'"
    ]


@pytest.mark.parametrize("name", ["MobileNetV2", "ShuffleV1", "ShuffleV2", "vgg8"])
def test_repdistiller_only_names_import(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    zoo_name = ZOO_ALIASES[name]
    model = repdistiller_model(zoo_name)
    source = save_repdistiller(model, tmp_path / f"{name}.pth")
    out = tmp_path / f"{name}.safetensors"
    code, stdout, err = run(
        capsys, "import", str(source), "--default-normalization", "--arch", name, "--out", str(out), "--json"
    )
    assert code == 0, err
    assert json.loads(stdout)["arch"] == zoo_name
    assert_same_weights(out, model)


def test_timm_layout_vgg13_chooses_timms_model(tmp_path: Path) -> None:
    """A state dict of timm's ImageNet VGG-13 under the same name picks timm's model. Its 129 M parameters are
    stored as zero tensors expanded to their shapes (a few kB on disk), since only keys and shapes decide."""
    with torch.device("meta"):
        shapes = timm.create_model("vgg13", num_classes=10).state_dict()
    source = tmp_path / "model_best.pth.tar"
    zeros = {key: torch.zeros((), dtype=t.dtype).expand(t.shape) for key, t in shapes.items()}
    torch.save({"epoch": 90, "arch": "vgg13", "state_dict": zeros, "args": argparse.Namespace(model="vgg13")}, source)
    tensors = read_state_dict(source)
    assert "features.0.weight" in tensors and "head.fc.weight" in tensors
    choice = choose_architecture("vgg13", tensors, source)
    assert (choice.fit.arch, choice.fit.num_classes, choice.fit.in_chans) == ("vgg13", 10, 3)
    assert choice.note == (
        "'vgg13': model_best.pth.tar has timm's layout; imported as timm's ImageNet 'vgg13', not the CIFAR zoo's "
        "'vgg13_cifar' (RepDistiller's vgg13)"
    )


def test_ambiguous_name_that_fits_neither_names_both(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "resnet8.pth"
    torch.save(timm.create_model("resnet8", num_classes=10).state_dict(), source)
    out = tmp_path / "x.safetensors"
    code, stdout, err = run(
        capsys, "import", str(source), "--default-normalization", "--arch", "vgg13", "--out", str(out)
    )
    assert code == 2 and stdout == "" and err.count("\n") == 1 and "Traceback" not in err
    assert f"{source} fits neither the CIFAR zoo's 'vgg13_cifar' (RepDistiller's vgg13; missing block0.0.weight" in err
    assert "nor timm's ImageNet 'vgg13'" in err and "missing features.0.weight" in err
    assert "its keys begin conv1.weight" in err and "--arch" in err
    assert not out.exists()


def test_zoo_vgg_with_a_different_class_count_still_picks_the_zoo(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = timm.create_model("vgg11_cifar", num_classes=10, in_chans=1)
    source = tmp_path / "vgg11.pth"
    torch.save(model.state_dict(), source)
    card = import_checkpoint(source, "vgg11", tmp_path / "vgg11.safetensors", data="fashion-mnist")
    assert (card.arch, card.num_classes, card.in_chans) == ("vgg11_cifar", 10, 1)
    said = r"classifier\.weight has 10 classes, not the 100 of num_classes; pass num_classes=10"
    with pytest.raises(UsageError, match=said):
        import_checkpoint(source, "vgg11", tmp_path / "x.safetensors", num_classes=100, default_normalization=True)


# --- 2: wrapper prefixes, through timm's clean_state_dict --------------------------------------------------------


def _compiled(model: nn.Module) -> nn.Module:
    return torch.compile(model)  # type: ignore[return-value]  (compiles lazily: state_dict() needs no compiler)


WRAPPERS = {
    "plain": lambda m: m,
    "compiled": _compiled,
    "data-parallel": nn.DataParallel,
    "compiled-data-parallel": lambda m: _compiled(nn.DataParallel(m)),
    "data-parallel-compiled": lambda m: nn.DataParallel(_compiled(m)),
}
PREFIXES = {
    "plain": "",
    "compiled": "_orig_mod.",
    "data-parallel": "module.",
    "compiled-data-parallel": "_orig_mod.module.",
    "data-parallel-compiled": "module._orig_mod.",
}


@pytest.mark.parametrize("container", ["plain", "repdistiller", "timm"])
@pytest.mark.parametrize("wrapper", list(WRAPPERS))
def test_wrapped_models_import(
    wrapper: str, container: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.manual_seed(0)
    model = timm.create_model("resnet8", num_classes=10, in_chans=1)
    state = WRAPPERS[wrapper](model).state_dict()
    assert next(iter(state)) == f"{PREFIXES[wrapper]}conv1.weight"  # the premise: what each wrapper saves
    payload = {"plain": state, "repdistiller": {"epoch": 1, "model": state}, "timm": {"epoch": 1, "state_dict": state}}
    source = tmp_path / "ckpt.pth"
    torch.save(payload[container], source)
    out = tmp_path / "r8.safetensors"
    code, _, err = run(capsys, "import", str(source), "--arch", "resnet8", "--data", "fashion-mnist", "--out", str(out))
    assert code == 0, err
    assert_same_weights(out, model)


# --- timm's own training checkpoints -----------------------------------------------------------------------------


def test_timm_checkpoint_saver_output_imports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """timm's train.py writes {'epoch', 'arch', 'args': Namespace, 'state_dict', 'state_dict_ema', 'optimizer',
    'saver', 'metric'}; the model's own weights are imported, not the EMA copy."""
    torch.manual_seed(0)
    model = timm.create_model("resnet8", num_classes=10, in_chans=1)
    ema = ModelEmaV3(model)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)  # the EMA copy now differs
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    args = argparse.Namespace(model="resnet8", lr=0.1, epochs=1, data_dir=str(tmp_path))
    saver = CheckpointSaver(model, optimizer, args=args, model_ema=ema, checkpoint_dir=str(tmp_path), max_history=1)
    saver.save_checkpoint(epoch=0, metric=81.5)
    source = tmp_path / "model_best.pth.tar"
    assert source.is_file()
    out = tmp_path / "r8.safetensors"
    code, _, err = run(capsys, "import", str(source), "--default-normalization", "--arch", "resnet8", "--out", str(out))
    assert code == 0, err
    assert_same_weights(out, model)
    with pytest.raises(UsageError, match="the checkpoint says it is a 'resnet8'"):
        import_checkpoint(source, "resnet14", tmp_path / "x.safetensors", default_normalization=True)


def test_legacy_format_checkpoint_imports(tmp_path: Path) -> None:
    """RepDistiller's published teachers predate torch's zip format."""
    model = repdistiller_model("resnet20")
    source = tmp_path / "ckpt_epoch_240.pth"
    state = {"epoch": 240, "model": model.state_dict(), "best_acc": torch.tensor(69.1)}
    torch.save(state, source, _use_new_zipfile_serialization=False)
    card = import_checkpoint(source, "resnet20", tmp_path / "resnet20.safetensors", data="cifar100")
    assert (card.arch, card.num_classes, card.mean) == ("resnet20", 100, (0.5071, 0.4867, 0.4408))
    assert_same_weights(tmp_path / "resnet20.safetensors", model)
