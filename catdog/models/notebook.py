"""The original notebooks' CNNs: three 3x3 conv blocks (32/64/128) and a 128-64 dense head.

`baseline` is the network without normalisation; `bn_dropout` is the notebooks' model as
written, with BatchNormalization after each convolution and Dropout after each dense layer.
"""

from __future__ import annotations

from keras import layers

from catdog.models.common import compile_model, head, inputs_and_augment
from catdog.models.registry import register


def _notebook_cnn(hp, input_shape, num_classes: int, *, normalise: bool, name: str):
    inputs, x = inputs_and_augment(hp, input_shape)
    for i, filters in enumerate((32, 64, 128), start=1):
        x = layers.Conv2D(filters, 3, padding="valid", activation="relu", name=f"conv{i}")(x)
        if normalise:
            x = layers.BatchNormalization(name=f"bn{i}")(x)
        x = layers.MaxPooling2D(2, strides=2, padding="valid", name=f"pool{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    dropout = hp.Float("dropout", 0.0, 0.5, step=0.1, default=0.1) if normalise else 0.0
    for units in (128, 64):
        x = layers.Dense(units, activation="relu", name=f"dense{units}")(x)
        if normalise:
            x = layers.Dropout(dropout, name=f"dropout{units}")(x)
    return compile_model(hp, inputs, head(x, num_classes), name)


@register(
    family="notebook",
    description="The notebooks' 3-block CNN without normalisation",
    any_size=False,
)
def baseline(hp, *, input_shape, num_classes):
    return _notebook_cnn(hp, input_shape, num_classes, normalise=False, name="baseline")


@register(
    family="notebook",
    description="The notebooks' CNN as written: BatchNorm after each conv, Dropout after each "
    "dense",
    any_size=False,
)
def bn_dropout(hp, *, input_shape, num_classes):
    return _notebook_cnn(hp, input_shape, num_classes, normalise=True, name="bn_dropout")
