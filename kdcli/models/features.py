"""The features a method asks of a model (``FeatureRequest``), delivered for student and teacher alike.

Stage indices go through timm's ``forward_intermediates`` where a model has it (every timm model of recent timm, and
the CIFAR zoo), else through forward hooks on the modules its ``feature_info`` names; module names go through forward
hooks; ``PRE_LOGITS`` is ``forward_head(x, pre_logits=True)``. The hooks are registered once, when the reader is made,
so that a compiled or graph-captured forward sees the same modules at every step.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from kdcli.errors import UsageError
from kdcli.interfaces import PRE_LOGITS, FeatureRequest, ModelInfo, ModelOutput, StageInfo


def model_info(model: nn.Module, arch: str) -> ModelInfo:
    """What a method may know of ``model`` before training: pre-logit width and timm's ``feature_info`` stages."""
    stages = tuple(
        StageInfo(int(info["num_chs"]), int(info["reduction"]), str(info["module"]))
        for info in (getattr(model, "feature_info", None) or [])
        if isinstance(info, dict)
    )
    return ModelInfo(arch, int(getattr(model, "num_features", 0) or 0), stages)


class FeatureReader:
    """Calls a model and returns its logits with the requested features (``ModelOutput``)."""

    def __init__(self, model: nn.Module, requests: tuple[FeatureRequest, ...], arch: str = "") -> None:
        self.model = model
        self.requests = requests
        info = model_info(model, arch)
        self.stages: dict[int, str] = {}  # stage index as in feature_info → the key the method asked with
        names: dict[str, str] = {}  # module name → key
        for request in requests:
            if isinstance(request, int):
                if not -len(info.stages) <= request < len(info.stages):
                    raise UsageError(
                        f"a method asked {arch or type(model).__name__} for stage {request}, but its feature_info "
                        f"lists {len(info.stages)} stages"
                    )
                self.stages[request % len(info.stages)] = str(request)
            elif request != PRE_LOGITS:
                names[request] = request
        self.pre_logits = PRE_LOGITS in requests
        needs_head = self.pre_logits or bool(self.stages)
        if needs_head and not (hasattr(model, "forward_features") and hasattr(model, "forward_head")):
            raise UsageError(
                f"{arch or type(model).__name__} has no forward_features/forward_head, so it cannot give pre-logit "
                "or stage features; this method needs a timm classifier"
            )
        self.intermediates = bool(self.stages) and hasattr(model, "forward_intermediates")
        if self.stages and not self.intermediates:  # hooks on the modules feature_info names
            names.update({info.stages[index].module: key for index, key in self.stages.items()})
        self.captured: dict[str, Tensor] = {}
        self.hooks = [self._hook(model, name, key) for name, key in names.items()]

    def _hook(self, model: nn.Module, name: str, key: str) -> Any:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise UsageError(
                f"a method asked for the output of module {name!r}, which the model does not have"
            ) from None

        def keep(module: nn.Module, inputs: Any, output: Tensor) -> None:
            self.captured[key] = output

        return module.register_forward_hook(keep)

    def __call__(self, images: Tensor) -> ModelOutput:
        if not self.requests:
            return ModelOutput(self.model(images))
        model: Any = self.model
        features: dict[str, Tensor] = {}
        if self.intermediates:
            indices = sorted(self.stages)
            final, intermediates = model.forward_intermediates(images, indices=indices)
            features.update({self.stages[i]: out for i, out in zip(indices, intermediates, strict=True)})
            logits = model.forward_head(final)
        elif self.pre_logits or self.stages:
            final = model.forward_features(images)
            logits = model.forward_head(final)
        else:
            final, logits = None, model(images)
        if self.pre_logits:
            features[PRE_LOGITS] = model.forward_head(final, pre_logits=True)
        features.update(self.captured)
        self.captured = {}
        return ModelOutput(logits, features)

    def close(self) -> None:
        for hook in self.hooks:
            hook.remove()
