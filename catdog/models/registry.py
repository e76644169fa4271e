"""The architecture registry: a dict filled by the `register` decorator.

An entry is a builder `def name(hp, *, input_shape) -> keras.Model` that declares its own search
space with KerasTuner `hp` calls; the defaults of those calls form a sensible plain run, so one
builder serves `catdog train` (fixed hyperparameters) and `catdog sweep` (searched ones).
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
from dataclasses import dataclass
from typing import Callable

from catdog.errors import CatdogError

Builder = Callable[..., "object"]


@dataclass(frozen=True)
class Architecture:
    name: str
    family: str
    description: str
    default_image_size: int
    builder: Builder

    def build(self, hp=None, *, image_size: int | None = None):
        """Build and compile the model; `hp=None` means every hyperparameter at its default."""
        import keras_tuner as kt

        hp = hp if hp is not None else kt.HyperParameters()
        size = image_size or self.default_image_size
        return self.builder(hp, input_shape=(size, size, 3))

    def search_space(self, image_size: int | None = None):
        """The HyperParameters this builder declares, with their defaults, without training."""
        import keras
        import keras_tuner as kt

        hp = kt.HyperParameters()
        with without_pretrained_weights():
            self.build(hp, image_size=image_size or 32)
        keras.backend.clear_session()
        return hp

    def param_count(self, image_size: int | None = None) -> int:
        import keras

        with without_pretrained_weights():
            count = self.build(image_size=image_size).count_params()
        keras.backend.clear_session()
        return count


@contextlib.contextmanager
def without_pretrained_weights():
    """Shapes and search spaces don't need ImageNet weights: don't download them for those."""
    old = os.environ.get("CATDOG_TRANSFER_WEIGHTS")
    os.environ["CATDOG_TRANSFER_WEIGHTS"] = "none"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("CATDOG_TRANSFER_WEIGHTS")
        else:
            os.environ["CATDOG_TRANSFER_WEIGHTS"] = old


_REGISTRY: dict[str, Architecture] = {}


def register(*, family: str, description: str, default_image_size: int = 128):
    """Decorator: add a builder to the registry under its function name."""

    def wrap(fn: Builder) -> Builder:
        name = fn.__name__
        if name in _REGISTRY:
            raise ValueError(f"architecture {name!r} is registered twice")
        _REGISTRY[name] = Architecture(name, family, description, default_image_size, fn)
        return fn

    return wrap


def get(name: str) -> Architecture:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise CatdogError(
            f"unknown architecture {name!r}; known architectures: {', '.join(names())}"
        ) from None


def names(pattern: str = "*") -> list[str]:
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))
