from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file

import kdcli.models  # noqa: F401  (registers the zoo in timm)
from kdcli.io.files import atomic_write
from kdcli.io.model_file import ModelCard, load_model, read_card, save_model


def card(**overrides: object) -> ModelCard:
    values = {
        "arch": "resnet8",
        "num_classes": 10,
        "in_chans": 1,
        "input_size": (1, 32, 32),
        "mean": (0.286,),
        "std": (0.353,),
        "dataset": "embedded",
        "method": "vanilla",
        "teacher_sha256": "ab" * 32,
        "metrics": {"last_top1": 81.25},
        "classes": [str(i) for i in range(10)],
    }
    return ModelCard.model_validate({**values, **overrides})


def test_round_trip_is_bit_exact_with_metadata(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = timm.create_model("resnet8", num_classes=10, in_chans=1)
    with torch.no_grad():  # non-trivial running statistics must survive too
        model(torch.randn(4, 1, 32, 32))
    path = tmp_path / "m.safetensors"
    save_model(path, model, card())
    loaded, loaded_card = load_model(path)
    original = model.state_dict()
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, original[name]), name
        assert tensor.dtype == original[name].dtype
    assert loaded_card == card()
    assert read_card(path) == card()


def test_student_file_loads_in_plain_timm(tmp_path: Path) -> None:
    model = timm.create_model("resnet8", num_classes=10, in_chans=1)
    path = tmp_path / "m.safetensors"
    save_model(path, model, card())
    plain = timm.create_model("resnet8", num_classes=10, in_chans=1)
    plain.load_state_dict(load_file(str(path)))  # strict: every key matches
    x = torch.randn(2, 1, 32, 32)
    assert torch.equal(plain.eval()(x), model.eval()(x))


def test_atomic_write_leaves_nothing_behind_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_text("old")

    def failing(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(target, failing)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
