"""kdcli: knowledge distillation for image classifiers, from the command line or from Python.

Importing kdcli registers its CIFAR model zoo into timm's registry, so ``timm.create_model('resnet20')`` works.
"""

__version__ = "0.1.0"

from kdcli import models as models
from kdcli.api import distill, evaluate, resume, train
from kdcli.config import RunConfig

__all__ = ["RunConfig", "__version__", "distill", "evaluate", "models", "resume", "train"]
