"""Shuffled Parameter Sharing: shared tensors, swapped pairs, exact parameter accounting, round trips."""

from pathlib import Path

import pytest
import timm
import torch
from torch import nn

import kdcli.models  # noqa: F401  (registers the zoo in timm)
from kdcli.errors import UsageError
from kdcli.io.model_file import ModelCard, load_model, save_model
from kdcli.models.sps import SwappedQKV, apply_sps
from kdcli.runtime.metrics import count_parameters


def conv_and_linear_parameters(model: nn.Module) -> int:
    return sum(p.numel() for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear) for p in m.parameters())


@pytest.mark.parametrize("share_norm", [False, True])
def test_sps_adds_no_conv_or_linear_parameters_only_norms(share_norm: bool) -> None:
    """resnet8's only shape-preserving block is layer1.0 (16→16 channels): its second pass adds two BatchNorms of 16
    channels, 2 × (16 weights + 16 biases) = 64 parameters, or none when the norms are shared."""
    model = timm.create_model("resnet8", num_classes=10)
    before, convs_before = count_parameters(model), conv_and_linear_parameters(model)
    apply_sps(model, share_norm=share_norm)
    assert conv_and_linear_parameters(model) == convs_before
    assert count_parameters(model) - before == (0 if share_norm else 64)


def test_vit_sps_adds_no_parameters() -> None:
    model = timm.create_model("test_vit", num_classes=10, img_size=32)
    before = count_parameters(model)
    apply_sps(model)
    assert count_parameters(model) == before and len(model.blocks) == 2 * len(timm.create_model("test_vit").blocks)


def test_resnet_second_pass_uses_conv2_weights_where_conv1_was() -> None:
    """Record which weight tensors the convolutions of layer1 use, in call order."""
    model = apply_sps(timm.create_model("resnet20", num_classes=10)).eval()
    stage = model.layer1
    used: list[int] = []
    for module in stage.modules():
        if isinstance(module, nn.Conv2d):
            module.register_forward_pre_hook(lambda m, _: used.append(m.weight.data_ptr()))
    stage(torch.randn(1, 16, 8, 8))
    blocks = [stage._modules[str(i)] for i in range(3)]
    first = [p for b in blocks for p in (b.conv1.weight.data_ptr(), b.conv2.weight.data_ptr())]
    swapped = [p for b in blocks for p in (b.conv2.weight.data_ptr(), b.conv1.weight.data_ptr())]
    assert used == first + swapped


def test_vit_swapped_pass_gives_transposed_attention_scores() -> None:
    torch.manual_seed(0)
    qkv = nn.Linear(8, 24)
    x = torch.randn(1, 5, 8)
    q, k, _ = qkv(x).chunk(3, dim=-1)
    q_swapped, k_swapped, v_swapped = SwappedQKV(qkv)(x).chunk(3, dim=-1)
    scores = q @ k.transpose(-1, -2)
    assert torch.allclose(q_swapped @ k_swapped.transpose(-1, -2), scores.transpose(-1, -2), atol=1e-6)
    assert torch.equal(v_swapped, qkv(x).chunk(3, dim=-1)[2])


@pytest.mark.parametrize("arch", ["vgg8_cifar", "test_convnext"])
def test_unsupported_family_says_what_is_supported(arch: str) -> None:
    with pytest.raises(UsageError, match=r"ResNets with basic blocks.*ViTs.*method\.sps=false"):
        apply_sps(timm.create_model(arch, num_classes=10))


@pytest.mark.parametrize(("arch", "kwargs", "channels"), [("resnet8", {}, 1), ("test_vit", {"img_size": 32}, 3)])
def test_sps_student_round_trips_with_identical_outputs(tmp_path: Path, arch: str, kwargs: dict, channels: int) -> None:
    torch.manual_seed(0)
    model = apply_sps(timm.create_model(arch, num_classes=10, in_chans=channels, **kwargs)).eval()
    with torch.no_grad():
        for module in model.modules():  # non-trivial second-pass norms
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
    card = ModelCard(arch=arch, num_classes=10, in_chans=channels, input_size=(channels, 32, 32), mean=(0.5,),
                     std=(0.5,), model_kwargs=kwargs,
                     student_transform={"name": "sps", "options": {"shuffle": True, "share_norm": False}})  # fmt: skip
    path = tmp_path / "sps.safetensors"
    save_model(path, model, card)
    loaded, _ = load_model(path)
    x = torch.randn(2, channels, 32, 32)
    assert torch.equal(loaded.eval()(x), model(x))
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:  # shared weights stored once
        assert len(list(handle.keys())) == len({t.data_ptr() for t in model.state_dict().values()})


def test_file_written_before_0_2_with_sps_metadata_still_loads(tmp_path: Path) -> None:
    """kdcli 0.1 recorded SPS as its own metadata key, ``sps``; such files load as the ``sps`` transform."""
    from safetensors.torch import load_file, save_file

    model = apply_sps(timm.create_model("resnet8", num_classes=10, in_chans=1)).eval()
    card = ModelCard(arch="resnet8", num_classes=10, in_chans=1, input_size=(1, 32, 32), mean=(0.5,), std=(0.5,),
                     student_transform={"name": "sps", "options": {"shuffle": True}})  # fmt: skip
    path = tmp_path / "new.safetensors"
    save_model(path, model, card)
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        metadata = dict(handle.metadata())
    metadata.pop("student_transform")
    metadata["sps"] = '{"shuffle": true, "share_norm": false, "tied": true}'
    old = tmp_path / "old.safetensors"
    save_file(load_file(str(path)), str(old), metadata=metadata)
    loaded, loaded_card = load_model(old)
    assert loaded_card is not None and loaded_card.student_transform is not None
    assert loaded_card.student_transform.name == "sps"
    x = torch.randn(2, 1, 32, 32)
    assert torch.equal(loaded.eval()(x), model(x))


def test_resnet_without_shape_preserving_blocks_is_refused() -> None:
    with pytest.raises(UsageError, match="no shape-preserving block"):
        apply_sps(timm.create_model("resnet8x4", num_classes=10))


def test_untied_second_pass_has_the_macs_of_sps_and_its_own_weights() -> None:
    """resnet8 untied: layer1's second pass gets two 16→16 3×3 convolutions of its own, 2 × 16·16·9 = 4,608 weights."""
    tied = apply_sps(timm.create_model("resnet8", num_classes=10))
    untied = apply_sps(timm.create_model("resnet8", num_classes=10), tied=False)
    assert count_parameters(untied) - count_parameters(tied) == 4608
    from kdcli.runtime.metrics import count_macs

    assert count_macs(untied, (3, 32, 32)) == count_macs(tied, (3, 32, 32))
