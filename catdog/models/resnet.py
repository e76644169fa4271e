"""A small ResNet: a strided stem, then stages of basic residual blocks (two 3x3 convs)."""

from __future__ import annotations

from keras import layers

from catdog.models.common import (
    batch_norm,
    compile_model,
    conv_bn_relu,
    head,
    inputs_and_augment,
    stem,
)
from catdog.models.registry import register


def _basic_block(x, filters: int, strides: int, name: str):
    shortcut = x
    y = conv_bn_relu(x, filters, strides=strides, name=f"{name}_1")
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_2_conv")(y)
    y = batch_norm(f"{name}_2_bn")(y)
    if strides != 1 or shortcut.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=strides, use_bias=False, name=f"{name}_proj")(
            shortcut
        )
        shortcut = batch_norm(f"{name}_proj_bn")(shortcut)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.Activation("relu", name=f"{name}_out")(y)


@register(
    family="resnet", description="Small ResNet: strided stem, 3-4 stages of basic residual blocks"
)
def resnet(hp, *, input_shape, num_classes):
    stages = hp.Int("stages", 3, 4, default=4)
    blocks = hp.Int("blocks_per_stage", 1, 2, default=1)
    width = hp.Choice("width", [16, 32, 64], default=32)
    dropout = hp.Float("dropout", 0.0, 0.5, step=0.1, default=0.2)
    inputs, x = inputs_and_augment(hp, input_shape)
    x = stem(hp, x, width, strides=2, name="stem")
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for s in range(stages):
        for b in range(blocks):
            strides = 2 if (b == 0 and s > 0) else 1
            x = _basic_block(x, width * 2**s, strides, name=f"stage{s + 1}_block{b + 1}")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    return compile_model(hp, inputs, head(x, num_classes), "resnet", whitening=True)
