"""The CIFAR zoo's timm feature interface: ``feature_info``, ``forward_intermediates``, ``prune_intermediate_layers``
and ``timm.create_model(name, features_only=True)``.

The feature levels are the maps RepDistiller's models return with ``is_feat=True`` (all but its last entry, the
pooled vector, which is ``forward_head(x, pre_logits=True)``). That they are bitwise equal to RepDistiller's, with
the same weights, in train and eval mode (and for the VGGs on 64x64 inputs with ``img_size=64``), was checked once in
a scratch directory outside this repository, as for test_zoo.py; the tests here pin the stage definitions and the
timm semantics.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator
from typing import Any

import pytest
import timm
import torch
import torch.fx
import torch.nn.functional as F
from timm.models._features_fx import create_feature_extractor
from torch import Tensor, nn

from kdcli.models import ZOO_MODELS
from kdcli.models.sps import SharedPassStage, apply_sps

VGGS = [name for name in ZOO_MODELS if name.startswith("vgg")]

# One model per family: module names, channels and strides of its levels on 32x32 inputs.
STAGES = {
    "resnet8": (("relu", "layer1", "layer2", "layer3"), (16, 16, 32, 64), (1, 1, 2, 4)),
    "resnet32x4": (("relu", "layer1", "layer2", "layer3"), (32, 64, 128, 256), (1, 1, 2, 4)),
    "wrn_40_2": (("conv1", "block1", "block2", "block3"), (16, 32, 64, 128), (1, 1, 2, 4)),
    "vgg13_cifar": (
        ("block0", "block1", "block2", "block3", "block4"),
        (64, 128, 256, 512, 512),
        (1, 2, 4, 8, 8),
    ),
    "mobilenetv2_cifar": (
        ("conv1", "blocks.1", "blocks.2", "blocks.4", "blocks.6"),
        (16, 12, 16, 48, 160),
        (2, 2, 4, 8, 16),
    ),
    "shufflenetv1_cifar": (("bn1", "layer1", "layer2", "layer3"), (24, 240, 480, 960), (1, 2, 4, 8)),
    "shufflenetv2_cifar": (("bn1", "layer1", "layer2", "layer3"), (24, 116, 232, 464), (1, 2, 4, 8)),
}


@pytest.fixture(autouse=True, scope="module")
def _module_setup() -> Iterator[None]:
    # Two-image batches: intra-op threads only add synchronization (see test_zoo.py).
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
    _model.cache_clear()
    _reference.cache_clear()


def _create(name: str, **kwargs: Any) -> Any:
    """``timm.create_model`` typed as Any: the timm interface under test is not part of ``nn.Module``'s type."""
    return timm.create_model(name, **kwargs)


@functools.cache
def _model(name: str) -> Any:
    """A shared CIFAR-100 instance in eval mode, for the tests that do not modify the model."""
    torch.manual_seed(0)
    return _create(name, num_classes=100).eval()


def _input(size: int = 32) -> Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))


@functools.cache
def _reference(name: str) -> tuple[Tensor, list[Tensor], Tensor]:
    """``forward_intermediates`` of every level, ``forward_features`` and the logits of the shared model."""
    model = _model(name)
    with torch.no_grad():
        intermediates = model.forward_intermediates(_input(), intermediates_only=True)
        return model.forward_features(_input()), intermediates, model(_input())


def _copy(name: str) -> Any:
    return copy.deepcopy(_model(name))


@pytest.mark.parametrize("name", ZOO_MODELS)
def test_feature_info_is_timms_format(name: str) -> None:
    model = _model(name)
    info = model.feature_info
    assert isinstance(info, list) and len(info) in (4, 5)
    previous = 1
    for entry in info:
        assert set(entry) == {"num_chs", "reduction", "module"}
        assert isinstance(model.get_submodule(entry["module"]), nn.Module)
        assert entry["reduction"] >= previous
        previous = entry["reduction"]


@pytest.mark.parametrize("name", list(STAGES))
def test_stage_definitions(name: str) -> None:
    modules, channels, reductions = STAGES[name]
    info = _model(name).feature_info
    assert tuple(entry["module"] for entry in info) == modules
    assert tuple(entry["num_chs"] for entry in info) == channels
    assert tuple(entry["reduction"] for entry in info) == reductions


@pytest.mark.parametrize("name", ZOO_MODELS)
def test_intermediates_match_feature_info(name: str) -> None:
    model = _model(name)
    _, intermediates, _ = _reference(name)
    assert len(intermediates) == len(model.feature_info)
    for tensor, entry in zip(intermediates, model.feature_info, strict=True):
        assert tensor.shape == (2, entry["num_chs"], 32 // entry["reduction"], 32 // entry["reduction"])


@pytest.mark.parametrize("name", ZOO_MODELS)
def test_forward_intermediates_final_is_forward_features(name: str) -> None:
    model = _model(name)
    features, intermediates, logits = _reference(name)
    with torch.no_grad():
        final, again = model.forward_intermediates(_input())
        assert torch.equal(final, features)
        assert torch.equal(model.forward_head(final), logits)
    assert len(again) == len(intermediates)
    assert all(torch.equal(a, b) for a, b in zip(again, intermediates, strict=True))


@pytest.mark.parametrize("name", ZOO_MODELS)
def test_feature_info_modules_produce_the_levels(name: str) -> None:
    # A forward hook on the named module sees the level's map, or the map before its functional ReLU (VGG blocks,
    # the ShuffleNets' stem BatchNorm).
    model = _model(name)
    _, intermediates, _ = _reference(name)
    captured: dict[str, Tensor] = {}
    hooks = [
        model.get_submodule(entry["module"]).register_forward_hook(
            lambda module, inputs, output, key=entry["module"]: captured.__setitem__(key, output)
        )
        for entry in model.feature_info
    ]
    try:
        with torch.no_grad():
            model(_input())
    finally:
        for hook in hooks:
            hook.remove()
    for entry, level in zip(model.feature_info, intermediates, strict=True):
        hooked = captured[entry["module"]]
        assert torch.equal(hooked, level) or torch.equal(F.relu(hooked), level), entry["module"]


@pytest.mark.parametrize("name", ZOO_MODELS)
def test_features_only(name: str) -> None:
    model = _model(name)
    _, intermediates, _ = _reference(name)
    extractor = _create(name, features_only=True).eval()
    missing, _ = extractor.model.load_state_dict(model.state_dict(), strict=False)
    assert not missing
    assert extractor.feature_info.channels() == [entry["num_chs"] for entry in model.feature_info]
    assert extractor.feature_info.reduction() == [entry["reduction"] for entry in model.feature_info]
    with torch.no_grad():
        features = extractor(_input())
    assert len(features) == len(intermediates)
    for feature, level, channels, reduction in zip(
        features, intermediates, extractor.feature_info.channels(), extractor.feature_info.reduction(), strict=True
    ):
        assert torch.equal(feature, level)
        assert feature.shape[1:] == (channels, 32 // reduction, 32 // reduction)


@pytest.mark.parametrize("name", ZOO_MODELS)
def test_features_only_out_indices(name: str) -> None:
    model = _model(name)
    _, intermediates, _ = _reference(name)
    extractor = _create(name, features_only=True, out_indices=(1, -1)).eval()
    last = len(model.feature_info) - 1
    assert extractor.feature_info.channels() == [model.feature_info[i]["num_chs"] for i in (1, last)]
    assert extractor.feature_info.reduction() == [model.feature_info[i]["reduction"] for i in (1, last)]
    extractor.model.load_state_dict(model.state_dict(), strict=False)
    with torch.no_grad():
        first, second = extractor(_input())
    assert torch.equal(first, intermediates[1]) and torch.equal(second, intermediates[-1])


@pytest.mark.parametrize("name", ZOO_MODELS)
def test_indices(name: str) -> None:
    model = _model(name)
    features, intermediates, _ = _reference(name)
    n = len(intermediates)
    with torch.no_grad():
        for indices, expected in (
            ([1], [1]),
            ([-1], [n - 1]),
            ([0, -2], [0, n - 2]),
            (2, [n - 2, n - 1]),
            (None, list(range(n))),
        ):
            final, taken = model.forward_intermediates(_input(), indices=indices)
            assert torch.equal(final, features)
            assert len(taken) == len(expected)
            assert all(torch.equal(t, intermediates[i]) for t, i in zip(taken, expected, strict=True)), indices
        # stop_early ends at the last requested level, whose map is then the final output.
        final, taken = model.forward_intermediates(_input(), indices=[1], stop_early=True)
        assert torch.equal(final, intermediates[1]) and torch.equal(taken[0], intermediates[1])
        with pytest.raises(AssertionError):
            model.forward_intermediates(_input(), indices=[n])
        with pytest.raises(ValueError, match="NCHW"):
            model.forward_intermediates(_input(), output_fmt="NHWC")


@pytest.mark.parametrize("name", ZOO_MODELS)
def test_prune_intermediate_layers(name: str) -> None:
    model = _copy(name)
    _, intermediates, _ = _reference(name)
    n = len(intermediates)
    keys = set(model.state_dict())
    assert model.prune_intermediate_layers([0, -3]) == [0, n - 3]
    # The levels after the last kept one, and what follows them, are gone; so is the classifier.
    assert model.num_features == model.head_hidden_size == model.feature_info[n - 3]["num_chs"]
    assert isinstance(model.get_classifier(), nn.Identity)
    assert set(model.state_dict()) < keys
    pruned = [model.feature_info[i]["module"] for i in range(n - 2, n)]
    assert not any(key.startswith(tuple(f"{m}." for m in pruned)) for key in model.state_dict())
    with torch.no_grad():
        final, taken = model.forward_intermediates(_input(), indices=[0, n - 3])
        assert torch.equal(taken[0], intermediates[0]) and torch.equal(taken[1], intermediates[n - 3])
        assert torch.equal(final, intermediates[n - 3])
        assert torch.equal(model.forward_features(_input()), intermediates[n - 3])
        # timm's reset_classifier(0, ""): no pooling either, the model returns the feature map.
        assert torch.equal(model(_input()), intermediates[n - 3])
        with pytest.raises(ValueError, match="pruned"):
            model.forward_intermediates(_input(), indices=[n - 1])


@pytest.mark.parametrize("name", ZOO_MODELS)
def test_prune_keeping_every_level(name: str) -> None:
    model = _copy(name)
    _, intermediates, logits = _reference(name)
    n = len(intermediates)
    # Every level, the final norm or head convolution and the classifier kept: nothing changes.
    assert model.prune_intermediate_layers(n, prune_head=False) == list(range(n))
    with torch.no_grad():
        taken = model.forward_intermediates(_input(), intermediates_only=True)
        assert all(torch.equal(a, b) for a, b in zip(taken, intermediates, strict=True))
        assert torch.equal(model(_input()), logits)
    # timm's features_only pruning (FeatureGetterNet with norm=False): what follows the last level goes too.
    model.prune_intermediate_layers(n, prune_norm=True)
    assert model.num_features == model.feature_info[-1]["num_chs"]
    with torch.no_grad():
        assert torch.equal(model.forward_features(_input()), intermediates[-1])
        assert torch.equal(model.forward_intermediates(_input())[0], intermediates[-1])


@pytest.mark.parametrize("name", [name for name in ZOO_MODELS if name.startswith("wrn")])
def test_wrn_norm_applies_the_final_batchnorm_relu(name: str) -> None:
    # RepDistiller's f3 is block3's raw output; forward_features applies the final BatchNorm-ReLU to it.
    model = _model(name)
    features, intermediates, _ = _reference(name)
    with torch.no_grad():
        assert torch.equal(intermediates[-1], model.block3(intermediates[-2]))
        assert torch.equal(model.relu(model.bn1(intermediates[-1])), features)
        final, normed = model.forward_intermediates(_input(), indices=[2, 3], norm=True)
    assert torch.equal(final, features)
    assert torch.equal(normed[0], intermediates[2]) and torch.equal(normed[1], features)
    extractor = _create(name, features_only=True)
    assert "bn1.weight" not in extractor.state_dict() and "model.bn1.weight" not in extractor.state_dict()


@pytest.mark.parametrize("name", ["resnet8", "resnet20"])
def test_forward_intermediates_after_sps(name: str) -> None:
    # SPS replaces layer1..layer3 with SharedPassStage modules after construction; the levels must follow.
    model = apply_sps(_copy(name))
    assert isinstance(model.layer1, SharedPassStage)
    with torch.no_grad():
        features = model.forward_features(_input())
        final, intermediates = model.forward_intermediates(_input())
        assert torch.equal(final, features)
        assert torch.equal(model.forward_head(final), model(_input()))
        assert torch.equal(intermediates[1], model.layer1(intermediates[0]))
        assert torch.equal(intermediates[3], features)
        # The shared second passes change the function, so the levels are not the plain model's.
        assert not torch.equal(features, _reference(name)[0])
    model.prune_intermediate_layers([1, 2])
    with torch.no_grad():
        assert torch.equal(model.forward_features(_input()), intermediates[2])


@pytest.mark.parametrize("name", VGGS)
@pytest.mark.parametrize("img_size", [32, 64])
def test_vgg_traces_with_fx(name: str, img_size: int) -> None:
    model = _model(name) if img_size == 32 else _create(name, img_size=img_size).eval()
    x = _input(img_size)
    traced = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        assert torch.equal(traced(x), model(x))
        levels = model.forward_intermediates(x, intermediates_only=True)
        # timm's fx feature extraction by the feature_info module names: the blocks, before their functional ReLU.
        extractor = create_feature_extractor(model, {entry["module"]: entry["module"] for entry in model.feature_info})
        for level, (module, block_output) in zip(levels, extractor(x).items(), strict=True):
            assert torch.equal(F.relu(block_output), level), module
        graph_features = _create(name, img_size=img_size, features_only=True, feature_cls="fx").eval()
        missing, _ = graph_features.graph_module.load_state_dict(model.state_dict(), strict=False)
        assert not missing  # the graph ends at block4, without the classifier
        assert all(torch.equal(F.relu(t), level) for t, level in zip(graph_features(x), levels, strict=True))


def _repdistiller_vgg(model: Any, x: Tensor) -> Tensor:
    """RepDistiller's VGG forward (before its classifier), which pools before block4 for 64-pixel-high inputs."""
    height = x.shape[2]
    x = F.relu(model.block0(x))
    x = F.relu(model.block1(F.max_pool2d(x, 2)))
    x = F.relu(model.block2(F.max_pool2d(x, 2)))
    x = F.relu(model.block3(F.max_pool2d(x, 2)))
    if height == 64:
        x = F.max_pool2d(x, 2)
    return F.relu(model.block4(x))


@pytest.mark.parametrize("name", VGGS)
def test_vgg_img_size_64_pools_before_block4(name: str) -> None:
    model = _create(name, img_size=64).eval()
    assert model.pool_before_block4 and not _model(name).pool_before_block4
    assert model.pretrained_cfg["input_size"] == (3, 64, 64)
    assert [entry["reduction"] for entry in model.feature_info] == [1, 2, 4, 8, 16]
    assert {k: v.shape for k, v in model.state_dict().items()} == {
        k: v.shape for k, v in _model(name).state_dict().items()
    }
    model.load_state_dict(_model(name).state_dict())
    with torch.no_grad():
        x = _input(64)
        features = model.forward_features(x)
        assert features.shape[1:] == (512, 4, 4)
        assert torch.equal(features, _repdistiller_vgg(model, x))
        # On 32x32 inputs both models compute RepDistiller's function (no pooling before block4).
        x = _input(32)
        assert torch.equal(_model(name).forward_features(x), _repdistiller_vgg(model, x))
        # A model built for 32 no longer looks at the input's height: 64x64 inputs reach block4 at 8x8.
        assert _model(name).forward_features(_input(64)).shape[1:] == (512, 8, 8)
