"""Importing this package fills the registry with every architecture family."""

from catdog.models import notebook, resnet, transfer, vgg, xception  # noqa: F401  (registers)
from catdog.models.registry import Architecture, get, names, register

__all__ = ["Architecture", "get", "names", "register"]
