"""The CIFAR model zoo: registration, RepDistiller compatibility and the timm model interface.

``data/repdistiller_state_dicts.json`` was produced by instantiating each architecture from RepDistiller's own
definitions (github.com/HobbitLong/RepDistiller, ``models/``, commit b84f547) with ``num_classes=100`` in a scratch
directory outside this repository, and storing for each one the number of state-dict entries and the sha256 of
``json.dumps(sorted [key, list(shape)] pairs, separators=(",", ":"))``. The parameter counts below were measured the
same way. No RepDistiller code is part of this repository or needed to run these tests.

Function-level equivalence was checked once, in the same scratch setup: with RepDistiller's weights loaded, in train
and eval mode, the logits agree to float32 rounding (global average pooling sums in another order than RepDistiller's
fixed-size pools; the feature maps before it are bitwise equal), and with the same seed both initialize
bitwise-identical weights.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.models import model_entrypoint
from torch import nn

from kdcli.models import TIMM_SHADOWED, ZOO_ALIASES, ZOO_MODELS

REFERENCE = json.loads((Path(__file__).parent / "data" / "repdistiller_state_dicts.json").read_text())["models"]

PARAMS_CIFAR100 = {
    "resnet8": 83_892,
    "resnet14": 181_108,
    "resnet20": 278_324,
    "resnet32": 472_756,
    "resnet44": 667_188,
    "resnet56": 861_620,
    "resnet110": 1_736_564,
    "resnet8x4": 1_233_540,
    "resnet32x4": 7_433_860,
    "wrn_16_1": 180_916,
    "wrn_16_2": 703_284,
    "wrn_40_1": 569_780,
    "wrn_40_2": 2_255_156,
    "vgg8_cifar": 3_965_028,
    "vgg11_cifar": 9_277_284,
    "vgg13_cifar": 9_462_180,
    "vgg16_cifar": 14_774_436,
    "vgg19_cifar": 20_086_692,
    "mobilenetv2_cifar": 812_836,
    "shufflenetv1_cifar": 949_258,
    "shufflenetv2_cifar": 1_355_528,
}

RESNETS_AND_WRNS = [name for name in ZOO_MODELS if name.startswith(("resnet", "wrn"))]


@pytest.fixture(autouse=True, scope="module")
def _module_setup() -> Iterator[None]:
    # Two-image batches: intra-op threads only add synchronization, which costs seconds per forward on small CI VMs.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
    _model.cache_clear()  # the shared models hold about 300 MB


def _create(name: str, **kwargs: Any) -> Any:
    """``timm.create_model`` typed as Any: the timm interface under test is not part of ``nn.Module``'s type."""
    return timm.create_model(name, **kwargs)


@functools.cache
def _model(name: str) -> Any:
    """A shared CIFAR-100 instance in eval mode, for the tests that do not modify the model."""
    return _create(name, num_classes=100).eval()


def _entries(model: nn.Module) -> list[list[object]]:
    return [[key, list(value.shape)] for key, value in sorted(model.state_dict().items())]


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def test_zoo_lists_are_consistent() -> None:
    assert len(ZOO_MODELS) == len(set(ZOO_MODELS)) == 21
    assert set(PARAMS_CIFAR100) == set(REFERENCE) == set(ZOO_MODELS)
    assert set(ZOO_ALIASES.values()) <= set(ZOO_MODELS)
    assert set(TIMM_SHADOWED.values()) <= set(ZOO_MODELS)
    assert not any(timm.is_model(alias) for alias in ZOO_ALIASES)


def test_zoo_models_lists_every_registered_zoo_name() -> None:
    # ZOO_MODELS is read off the modules' default_cfgs, so a model registered without a config would be missing.
    prefix = "kdcli.models.cifar_"
    registered = {name for name in timm.list_models() if model_entrypoint(name).__module__.startswith(prefix)}
    assert registered == set(ZOO_MODELS)


def test_zoo_names_overwrite_no_timm_model() -> None:
    # timm's register_model appends every name it registers to the defining module's __all__, so these are the names
    # timm itself defines, whatever the registry holds after kdcli.models was imported.
    timm_names: set[str] = set()
    for module_name, module in list(sys.modules.items()):
        if module_name.startswith("timm.models."):
            timm_names.update(getattr(module, "__all__", ()))
    assert "resnet18" in timm_names
    assert not timm_names & set(ZOO_MODELS)
    for name in ZOO_MODELS:
        assert model_entrypoint(name).__module__.startswith("kdcli.models.cifar_")
    for name in TIMM_SHADOWED:
        assert model_entrypoint(name).__module__ == "timm.models.vgg"


def test_list_models_finds_the_zoo() -> None:
    assert set(timm.list_models("resnet*")) >= {name for name in ZOO_MODELS if name.startswith("resnet")}
    assert set(timm.list_models("wrn*")) >= {name for name in ZOO_MODELS if name.startswith("wrn")}
    assert set(timm.list_models("*_cifar")) >= {name for name in ZOO_MODELS if name.endswith("_cifar")}


@pytest.mark.parametrize("name", ZOO_MODELS)
def test_state_dict_keys_and_shapes_match_repdistiller(name: str) -> None:
    entries = _entries(_model(name))
    digest = hashlib.sha256(json.dumps(entries, separators=(",", ":")).encode()).hexdigest()
    assert len(entries) == REFERENCE[name]["num_keys"]
    assert digest == REFERENCE[name]["sha256"], f"{name} state dict differs from RepDistiller's"


@pytest.mark.parametrize(
    ("name", "key", "shape"),
    [
        ("resnet8x4", "layer1.0.downsample.0.weight", [64, 32, 1, 1]),
        ("resnet20", "layer3.2.bn2.running_var", [64]),
        ("resnet20", "fc.weight", [100, 64]),
        ("wrn_40_2", "block1.layer.0.convShortcut.weight", [32, 16, 1, 1]),
        ("wrn_40_2", "bn1.weight", [128]),
        ("vgg8_cifar", "block4.1.running_mean", [512]),
        ("vgg13_cifar", "block1.3.weight", [128, 128, 3, 3]),
        ("vgg13_cifar", "classifier.weight", [100, 512]),
        ("mobilenetv2_cifar", "blocks.6.0.conv.6.weight", [160, 480, 1, 1]),
        ("mobilenetv2_cifar", "classifier.0.weight", [100, 1280]),
        ("shufflenetv1_cifar", "layer1.0.conv1.weight", [54, 24, 1, 1]),
        ("shufflenetv1_cifar", "linear.weight", [100, 960]),
        ("shufflenetv2_cifar", "layer3.0.conv5.weight", [232, 232, 1, 1]),
        ("shufflenetv2_cifar", "linear.weight", [100, 1024]),
    ],
)
def test_repdistiller_key_examples(name: str, key: str, shape: list[int]) -> None:
    assert list(_model(name).state_dict()[key].shape) == shape


@pytest.mark.parametrize("name", ZOO_MODELS)
def test_parameter_count_matches_repdistiller(name: str) -> None:
    assert sum(p.numel() for p in _model(name).parameters()) == PARAMS_CIFAR100[name]


@pytest.mark.parametrize("name", ZOO_MODELS)
def test_timm_interface(name: str) -> None:
    model = _model(name)
    cfg = model.pretrained_cfg
    assert model.default_cfg is cfg
    assert cfg["input_size"] == (3, 32, 32)
    assert cfg["num_classes"] == 100
    assert cfg["mean"] == (0.5071, 0.4867, 0.4408)
    assert cfg["std"] == (0.2675, 0.2565, 0.2761)
    assert isinstance(model.get_submodule(cfg["first_conv"]), nn.Conv2d)
    assert model.get_submodule(cfg["classifier"]) is model.get_classifier()
    assert model.num_classes == model.get_classifier().out_features == 100

    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feature_map = model.forward_features(x)
        pooled = model.forward_head(feature_map, pre_logits=True)
        logits = model(x)
        assert torch.equal(logits, model.forward_head(feature_map))
        # On 32x32 inputs global pooling is RepDistiller's fixed-size average pool.
        fixed_pool = F.avg_pool2d(feature_map, cfg["pool_size"]).flatten(1)
    assert feature_map.shape[1:] == (model.num_features, *cfg["pool_size"])
    assert pooled.shape == (2, model.num_features)
    assert logits.shape == (2, 100)
    torch.testing.assert_close(pooled, fixed_pool)


@pytest.mark.parametrize("name", ZOO_MODELS)
def test_num_classes_changes_only_the_classifier(name: str) -> None:
    model = _create(name, num_classes=10)
    classifier_keys = {f"{model.pretrained_cfg['classifier']}.{p}" for p in ("weight", "bias")}
    ours, reference = _shapes(model), _shapes(_model(name))
    assert ours.keys() == reference.keys()
    assert {key for key in ours if ours[key] != reference[key]} == classifier_keys
    assert model.num_classes == 10


@pytest.mark.parametrize("name", ZOO_MODELS)
def test_single_channel_input(name: str) -> None:
    model = _create(name, num_classes=10, in_chans=1).eval()
    assert model.get_submodule(model.pretrained_cfg["first_conv"]).in_channels == 1
    with torch.no_grad():
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("name", RESNETS_AND_WRNS)
def test_28x28_input(name: str) -> None:
    with torch.no_grad():
        assert _model(name)(torch.randn(2, 3, 28, 28)).shape == (2, 100)


@pytest.mark.parametrize("name", ["resnet8", "wrn_16_1", "vgg8_cifar", "mobilenetv2_cifar", "shufflenetv2_cifar"])
def test_reset_classifier(name: str) -> None:
    model = _create(name, num_classes=100).eval()
    classifier_name = model.pretrained_cfg["classifier"]
    model.reset_classifier(7)
    assert model.num_classes == model.get_classifier().out_features == 7
    assert model.get_submodule(classifier_name) is model.get_classifier()
    assert f"{classifier_name}.weight" in model.state_dict()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert model(x).shape == (2, 7)
        model.reset_classifier(0)
        assert model(x).shape == (2, model.num_features)


def test_resnet_blocks_keep_repdistiller_attributes_and_allow_conv_swap() -> None:
    model = _create("resnet20").eval()
    for stage in (model.layer1, model.layer2, model.layer3):
        assert isinstance(stage, nn.Sequential)
        for block in stage:
            assert isinstance(block.conv1, nn.Conv2d) and isinstance(block.conv2, nn.Conv2d)
            assert isinstance(block.bn1, nn.BatchNorm2d) and isinstance(block.bn2, nn.BatchNorm2d)
    block = model.layer2[1]  # stride 1, same width: both convolutions map 32 to 32 channels
    keys = set(model.state_dict())
    block.conv1, block.conv2 = block.conv2, block.conv1
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    assert set(model.state_dict()) == keys


def _assert_std(tensor: torch.Tensor, expected: float, what: str) -> None:
    assert abs(tensor.float().std().item() / expected - 1) < 0.1, what


# RepDistiller: Kaiming-normal (fan-out) convolutions except in the ShuffleNets, which keep PyTorch's defaults; the
# classifier keeps PyTorch's default (resnet, shufflenets), gets a zero bias (wrn), or N(0, 0.01) and a zero bias
# (vgg, mobilenetv2).
@pytest.mark.parametrize(
    ("name", "kaiming_convs", "classifier_init"),
    [
        ("resnet32x4", True, "default"),
        ("wrn_40_2", True, "zero_bias"),
        ("vgg13_cifar", True, "normal"),
        ("mobilenetv2_cifar", True, "normal"),
        ("shufflenetv1_cifar", False, "default"),
        ("shufflenetv2_cifar", False, "default"),
    ],
)
def test_weight_init_follows_repdistiller(name: str, kaiming_convs: bool, classifier_init: str) -> None:
    model = _model(name)
    for module_name, module in model.named_modules():
        if isinstance(module, nn.BatchNorm2d):
            assert torch.all(module.weight == 1) and torch.all(module.bias == 0), module_name
        elif isinstance(module, nn.Conv2d):
            if module.bias is not None:
                assert torch.all(module.bias == 0), module_name
            if module.weight.numel() < 4096:
                continue  # too few samples for a meaningful spread
            out_chs, in_chs_per_group, kh, kw = module.weight.shape
            if kaiming_convs:
                _assert_std(module.weight, math.sqrt(2 / (out_chs * kh * kw)), module_name)
            else:
                bound = 1 / math.sqrt(in_chs_per_group * kh * kw)
                assert module.weight.abs().max() <= bound, module_name
                _assert_std(module.weight, bound / math.sqrt(3), module_name)

    fc = model.get_classifier()
    bound = 1 / math.sqrt(fc.in_features)
    if classifier_init == "normal":
        _assert_std(fc.weight, 0.01, "classifier")
    else:
        assert fc.weight.abs().max() <= bound
        _assert_std(fc.weight, bound / math.sqrt(3), "classifier")
    if classifier_init == "default":
        assert fc.bias.abs().max() <= bound and torch.any(fc.bias != 0)
    else:
        assert torch.all(fc.bias == 0)
