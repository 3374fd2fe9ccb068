"""A teacher that takes one input size only (a ViT built for another resolution) still teaches a student at the data's
size: each batch is resized for the teacher, and the run says so."""

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from kdcli.models.wrappers import FrozenTeacher, fixed_input_size

from ..conftest import run


def vit(img_size: int, **kwargs: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", num_classes=10, in_chans=1, img_size=img_size, **kwargs)


def test_fixed_input_size_is_read_from_patch_models_only() -> None:
    assert fixed_input_size(vit(64)) == (64, 64)
    assert fixed_input_size(vit(64, dynamic_img_size=True)) is None
    assert fixed_input_size(timm.create_model("resnet18", num_classes=10)) is None


def test_the_teacher_gets_its_own_size_and_the_same_logits_as_a_resized_batch() -> None:
    model = vit(64)
    seen: list[tuple[int, ...]] = []
    model.register_forward_pre_hook(lambda _, args: seen.append(tuple(args[0].shape)))
    teacher = FrozenTeacher(model, [0.5], [0.25], in_chans=1)
    small = torch.rand(2, 1, 32, 32)
    logits = teacher.predict(small).logits
    assert seen == [(2, 1, 64, 64)]
    resized = torch.nn.functional.interpolate(small, size=(64, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(logits, model((resized - 0.5) / 0.25))
    big = torch.rand(2, 1, 128, 128)  # shrinking is antialiased
    expected = torch.nn.functional.interpolate(big, size=(64, 64), mode="bilinear", antialias=True)
    torch.testing.assert_close(teacher.predict(big).logits, model((expected - 0.5) / 0.25))


@pytest.mark.slow
def test_a_plain_vit_file_at_another_resolution_distills(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A plain timm state dict of a ViT made for 224 px (no kdcli metadata) teaches a student on 32-px images."""
    path = tmp_path / "vit224.safetensors"
    save_file({k: v.contiguous() for k, v in vit(224).state_dict().items()}, str(path))
    code, _, err = run(capsys, "distill", "--teacher", "vit_tiny_patch16_224", "--teacher-ckpt", str(path),
                       "--student", "resnet8", "--set", "data.image_size=32", "--train-subset", "100",
                       "--epochs", "1", "--device", "cpu", "--out", str(tmp_path / "run"))  # fmt: skip
    assert code == 0, err
    assert "takes 224×224 images only: each batch is resized for it from the data's 32×32" in err
    assert "--set data.image_size=224 feeds it its own size" in err
