from pathlib import Path

import pytest
import timm
import torch

from kdcli.cli import main
from kdcli.errors import UsageError
from kdcli.io.importer import import_checkpoint
from kdcli.io.model_file import load_model


def test_repdistiller_checkpoint_imports_bit_exact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """RepDistiller saves {'epoch', 'model', 'accuracy', 'optimizer'}; DataParallel prefixes are dropped too."""
    torch.manual_seed(0)
    model = timm.create_model("resnet8", num_classes=10, in_chans=1)
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    source = tmp_path / "ckpt_epoch_240.pth"
    torch.save({"epoch": 240, "model": state, "accuracy": torch.tensor(90.0), "optimizer": {"state": {}}}, source)
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "import",
                str(source),
                "--arch",
                "resnet8",
                "--data",
                "fashion-mnist",
                "--out",
                str(tmp_path / "t.safetensors"),
            ]
        )
    assert exit_info.value.code == 0
    loaded, card = load_model(tmp_path / "t.safetensors")
    assert card is not None and (card.num_classes, card.in_chans, card.dataset) == (10, 1, "fashion-mnist")
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_wrong_architecture_is_a_usage_error(tmp_path: Path) -> None:
    source = tmp_path / "plain.pt"
    torch.save(timm.create_model("resnet8", num_classes=10).state_dict(), source)
    with pytest.raises(UsageError, match="does not fit"):
        import_checkpoint(source, "resnet14", tmp_path / "x.safetensors")


def test_pickled_code_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "code.pt"
    torch.save({"model": timm.create_model("resnet8", num_classes=10)}, source)  # a whole pickled module
    with pytest.raises(UsageError, match="weights_only=True"):
        import_checkpoint(source, "resnet8", tmp_path / "x.safetensors")
