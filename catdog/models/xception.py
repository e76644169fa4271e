"""Xception-style, after keras.io's "image classification from scratch": separable convolutions
in blocks with strided 1x1 residual projections, a global-average head. Width is searched."""

from __future__ import annotations

from keras import layers

from catdog.models.common import (
    batch_norm,
    compile_model,
    head,
    inputs_and_augment,
    stem,
)
from catdog.models.registry import register


@register(
    family="xception",
    description="Small Xception: separable convs with residuals (keras.io from-scratch model)",
)
def xception(hp, *, input_shape, num_classes):
    width = hp.Choice("width", [16, 32, 64], default=32)
    dropout = hp.Float("dropout", 0.0, 0.5, step=0.1, default=0.25)
    inputs, x = inputs_and_augment(hp, input_shape)
    x = stem(hp, x, width * 2, strides=2, name="entry", pool=True)
    previous = x
    for i, filters in enumerate((width * 4, width * 8, width * 16), start=1):
        x = layers.Activation("relu", name=f"sep{i}_relu_a")(x)
        x = layers.SeparableConv2D(filters, 3, padding="same", name=f"sep{i}_a")(x)
        x = batch_norm(f"sep{i}_bn_a")(x)
        x = layers.Activation("relu", name=f"sep{i}_relu_b")(x)
        x = layers.SeparableConv2D(filters, 3, padding="same", name=f"sep{i}_b")(x)
        x = batch_norm(f"sep{i}_bn_b")(x)
        x = layers.MaxPooling2D(3, strides=2, padding="same", name=f"sep{i}_pool")(x)
        residual = layers.Conv2D(filters, 1, strides=2, padding="same", name=f"sep{i}_res")(
            previous
        )
        x = layers.Add(name=f"sep{i}_add")([x, residual])
        previous = x
    x = layers.SeparableConv2D(width * 32, 3, padding="same", name="exit_sep")(x)
    x = batch_norm("exit_bn")(x)
    x = layers.Activation("relu", name="exit_relu")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    return compile_model(hp, inputs, head(x, num_classes), "xception", whitening=True, pooling=True)
