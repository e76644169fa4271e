"""Search strategies, one file each, found by name in one registry (like architectures).

A strategy decides how a sweep spends its budget. It is an object with:
- `name`: what a sweep file's `strategy = ...` says, and the parent run's `search_strategy`;
- `note`: one sentence on how to read its ranking, which `compare` and the report show;
- `check(cfg, role)`: refuse, in one sentence, settings it cannot run;
- `plan(...)`: measure this machine and fit its trials and epochs to the budget;
- `search(ctx, spaces, state_dir)`: run (or resume) the search, returning each architecture's
  best trial.
The rest (`before_trial`, `check_trial`, `epochs_for`, `eta`, ...) has defaults in
`base.Strategy`. A new strategy is a new file here with a `@register`ed class, and its module
name in `MODULES`.
"""

from __future__ import annotations

import importlib

from catdog.errors import CatdogError

MODULES = (
    "compare",
    "best",
    "focus",
)  # the files (and folder) of this package that register strategies

_REGISTRY: dict[str, object] = {}


def register(cls):
    """Class decorator: put an instance of the strategy CLS in the registry by its name."""
    if cls.name in _REGISTRY and type(_REGISTRY[cls.name]) is not cls:
        raise CatdogError(f"strategy {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls()
    return cls


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def _load() -> None:
    for module in MODULES:
        importlib.import_module(f"{__name__}.{module}")


def names() -> tuple[str, ...]:
    _load()
    return tuple(_REGISTRY)


def get(name: str):
    _load()
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))  # whichever module a caller imported first
        raise CatdogError(f"unknown strategy {name!r}; choose one of {known}")
    return _REGISTRY[name]


def validate(cfg, role: str = "local"):
    """The strategy cfg names, once it has accepted cfg's settings (one sentence if not)."""
    strategy = get(cfg.strategy)
    strategy.check(cfg, role)
    return strategy


def note(name: str) -> str:
    """How to read a ranking made by the strategy NAME (the name itself if it is unknown,
    say a sweep recorded by a newer catdog)."""
    _load()
    found = _REGISTRY.get(name)
    return found.note if found is not None else name
