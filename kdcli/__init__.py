"""kdcli: knowledge distillation for image classifiers, from the command line or from Python.

``import kdcli`` is light (no torch, no timm): the command line answers its help at once. The API's names load on
first use::

    import kdcli
    result = kdcli.distill({...})          # imports the engine, torch and timm now

``import kdcli.models`` registers the CIFAR model zoo into timm's registry, so ``timm.create_model('resnet20')``
works; every kdcli function that builds a model does it too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kdcli._version import __version__

if TYPE_CHECKING:
    from kdcli import models
    from kdcli.api import (
        analyze,
        compare,
        distill,
        evaluate,
        export,
        import_checkpoint,
        load_model,
        resume,
        sweep,
        train,
    )
    from kdcli.config import RunConfig

_LAZY = {
    "analyze": "kdcli.api",
    "distill": "kdcli.api",
    "evaluate": "kdcli.api",
    "export": "kdcli.api",
    "import_checkpoint": "kdcli.api",
    "load_model": "kdcli.api",
    "resume": "kdcli.api",
    "sweep": "kdcli.api",
    "compare": "kdcli.api",
    "train": "kdcli.api",
    "RunConfig": "kdcli.config",
}

__all__ = [
    "RunConfig",
    "__version__",
    "analyze",
    "compare",
    "distill",
    "evaluate",
    "export",
    "import_checkpoint",
    "load_model",
    "models",
    "resume",
    "sweep",
    "train",
]


def __getattr__(name: str) -> Any:
    import importlib

    if name == "models":
        return importlib.import_module("kdcli.models")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kdcli' has no attribute {name!r}")
