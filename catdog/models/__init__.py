"""Importing this package fills the registry with every architecture family."""

from catdog.models import notebook, resnet, transfer, vgg, xception  # noqa: F401  (registers)
from catdog.models.common import SCHEDULES, schedule_callbacks
from catdog.models.registry import Architecture, fixed_hyperparameters, get, names, register

__all__ = ["SCHEDULES", "Architecture", "fixed_hyperparameters", "get", "names", "register",
           "schedule_callbacks"]
