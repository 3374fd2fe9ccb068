"""Features delivered to methods: stage indices through forward_intermediates or hooks, module names, pre-logits."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from kdcli.errors import UsageError
from kdcli.interfaces import PRE_LOGITS
from kdcli.models.features import FeatureReader, model_info


def test_stage_requests_equal_the_zoo_stages_and_keep_the_logits() -> None:
    model = timm.create_model("resnet8", num_classes=10).eval()
    images = torch.randn(2, 3, 32, 32)
    out = FeatureReader(model, (2, -1, PRE_LOGITS), "resnet8")(images)
    assert torch.equal(out.logits, model(images))
    assert out.feature(2).shape == (2, 32, 16, 16) and out.feature(-1).shape == (2, 64, 8, 8)
    assert torch.equal(out.features[PRE_LOGITS], model.forward_head(model.forward_features(images), pre_logits=True))


def test_models_without_forward_intermediates_are_served_by_hooks_on_feature_info_modules() -> None:
    """A timm model whose forward_intermediates is hidden: the same stage comes from a hook on the module its
    feature_info names, and equals what forward_intermediates gives."""
    model = timm.create_model("resnet8", num_classes=10).eval()
    images = torch.randn(2, 3, 32, 32)
    _, (expected,) = model.forward_intermediates(images, indices=[1])

    class Hidden(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner
            self.feature_info = [{**f, "module": f"inner.{f['module']}"} for f in inner.feature_info]
            self.num_features = inner.num_features

        def forward_features(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner.forward_features(x)

        def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
            return self.inner.forward_head(x, pre_logits=pre_logits)

    reader = FeatureReader(Hidden(model), (1,), "hidden")
    assert not reader.intermediates
    assert torch.equal(reader(images).feature(1), expected)
    reader.close()
    assert not model.layer1._forward_hooks


def test_module_name_requests_come_from_hooks_and_bad_requests_say_what_exists() -> None:
    model = timm.create_model("resnet8", num_classes=10).eval()
    out = FeatureReader(model, ("layer2.0.conv1",), "resnet8")(torch.randn(1, 3, 32, 32))
    assert out.feature("layer2.0.conv1").shape == (1, 32, 16, 16)
    with pytest.raises(UsageError, match="lists 4 stages"):
        FeatureReader(model, (7,), "resnet8")
    with pytest.raises(UsageError, match="module 'nope'"):
        FeatureReader(model, ("nope",), "resnet8")


def test_model_info_reads_timm_feature_info() -> None:
    info = model_info(timm.create_model("resnet32x4", num_classes=100), "resnet32x4")
    assert info.num_features == 256
    assert [(s.channels, s.reduction) for s in info.stages] == [(32, 1), (64, 1), (128, 2), (256, 4)]
