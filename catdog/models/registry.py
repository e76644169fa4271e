"""The architecture registry: a dict filled by the `register` decorator.

An entry is a builder `def name(hp, *, input_shape, num_classes) -> keras.Model` that declares its
own search space with KerasTuner `hp` calls; the defaults of those calls form a sensible plain run,
so one builder serves `catdog train` (fixed hyperparameters) and `catdog sweep` (searched ones).
The class count comes from the prepared dataset (`pipeline.Splits.classes`); the builder hands it
to `common.head`, which picks the head, loss and metrics for it. The search space does not depend
on it.

Families that start from pretrained weights register with `pretrained=True` and their builder
takes a `pretrained` argument. As in timm, `build()` asks for weights only when told to, so
counting parameters, listing search spaces and tests never download anything.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass

from catdog.errors import CatdogError

Builder = Callable[..., "object"]


@dataclass(frozen=True)
class Architecture:
    name: str
    family: str
    description: str
    default_image_size: int
    builder: Builder
    pretrained: bool = False  # the builder can start from pretrained (ImageNet) weights
    # The image sizes (px, smallest and largest) at which the family makes sense: a race that
    # searches the size (`strategy = "best"`) keeps to them.
    image_range: tuple[int, int] = (64, 256)
    # For a pretrained family: (image size) -> (whether its weights can be had, and why), so a
    # sweep can leave it out, saying why, rather than train a "pretrained" model from noise.
    weights: Callable[[int], tuple[bool, str]] | None = None
    # Whether its weights fit any input size (a global-pooling head): a model trained at one
    # size carries on at another. A Flatten head ties them to the size it was built at.
    any_size: bool = True

    def weights_available(self, image_size: int) -> tuple[bool, str]:
        return self.weights(image_size) if self.weights else (True, "no weights needed")

    def sizes_within(self, sizes) -> list[int]:
        lo, hi = self.image_range
        return [s for s in sizes if lo <= s <= hi]

    def build(
        self,
        hp=None,
        *,
        image_size: int | None = None,
        pretrained: bool = False,
        num_classes: int = 2,
    ):
        """Build and compile the model for NUM_CLASSES classes; `hp=None` means every
        hyperparameter at its default.

        `pretrained=True` loads pretrained weights for the families that have them (falling back
        to random weights, with a warning, when they cannot be downloaded); other families ignore
        it, since they always train from scratch.
        """
        import keras_tuner as kt

        hp = hp if hp is not None else kt.HyperParameters()
        size = image_size or self.default_image_size
        extra = {"pretrained": pretrained} if self.pretrained else {}
        return self.builder(hp, input_shape=(size, size, 3), num_classes=num_classes, **extra)

    def search_space(self, image_size: int | None = None, hp=None):
        """The HyperParameters this builder declares, with their defaults, without training
        (added to HP, whose fixed or narrowed ones stay as they are, when given)."""
        import keras
        import keras_tuner as kt

        if hp is None:  # the declared space alone: built once per size, then copied
            key = (self.name, image_size or 32)
            if key not in _SPACES:
                _SPACES[key] = self.search_space(image_size, kt.HyperParameters()).get_config()
            return kt.HyperParameters.from_config(_SPACES[key])
        self.build(hp, image_size=image_size or 32)
        keras.backend.clear_session()
        return hp

    def param_count(self, image_size: int | None = None) -> int:
        import keras

        count = self.build(image_size=image_size).count_params()
        keras.backend.clear_session()
        return count


_REGISTRY: dict[str, Architecture] = {}
_SPACES: dict[tuple[str, int], dict] = {}  # (arch, size) -> its declared HyperParameters


def register(
    *,
    family: str,
    description: str,
    default_image_size: int = 128,
    pretrained: bool = False,
    image_range: tuple[int, int] = (64, 256),
    weights: Callable[[int], tuple[bool, str]] | None = None,
    any_size: bool = True,
):
    """Decorator: add a builder to the registry under its function name."""

    def wrap(fn: Builder) -> Builder:
        name = fn.__name__
        if name in _REGISTRY:
            raise ValueError(f"architecture {name!r} is registered twice")
        _REGISTRY[name] = Architecture(
            name,
            family,
            description,
            default_image_size,
            fn,
            pretrained,
            image_range,
            weights,
            any_size,
        )
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


def fixed_hyperparameters(values: dict | None):
    """A HyperParameters object where the given values are fixed; the rest keep builder defaults."""
    import keras_tuner as kt

    hp = kt.HyperParameters()
    for name, value in (values or {}).items():
        if value is not None:
            hp.Fixed(name, value)
    return hp
