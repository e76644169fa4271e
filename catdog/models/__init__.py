"""Importing this package fills the registry with every architecture family.

A family is any module in this package (other than `registry`, `common`, `balanced`,
`whitening` and names starting with `_`): dropping a new file with `@register`ed builders here
is enough for it to be found.
"""

import importlib
import pkgutil

from catdog.models.balanced import BalancedAccuracy  # registered: saved models load with it
from catdog.models.common import schedule_callbacks
from catdog.models.registry import Architecture, fixed_hyperparameters, get, names, register
from catdog.models.whitening import PatchWhitening, adapt_callbacks  # registered, as above

_NOT_FAMILIES = {"registry", "common", "balanced", "whitening"}  # a metric and a layer


def discover_families() -> list[str]:
    """Import every family module of this package, so its builders register; returns their names.

    Modules already imported are not imported again, so calling this once more only picks up new
    files (on `__path__`) without registering anything twice.
    """
    found = []
    for module in pkgutil.iter_modules(__path__):
        if module.name in _NOT_FAMILIES or module.name.startswith("_"):
            continue
        importlib.import_module(f"{__name__}.{module.name}")
        found.append(module.name)
    return found


discover_families()

__all__ = [
    "Architecture",
    "BalancedAccuracy",
    "PatchWhitening",
    "adapt_callbacks",
    "discover_families",
    "fixed_hyperparameters",
    "get",
    "names",
    "register",
    "schedule_callbacks",
]
