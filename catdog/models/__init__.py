"""Importing this package fills the registry with every architecture family."""

from catdog.models import notebook, resnet, transfer, vgg, xception  # noqa: F401  (registers)
from catdog.models.registry import Architecture, fixed_hyperparameters, get, names, register

__all__ = ["Architecture", "fixed_hyperparameters", "get", "names", "register"]
