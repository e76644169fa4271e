"""VGG-style: stacks of 3x3 convolutions that double in width per block, a global-average head."""

from __future__ import annotations

from keras import layers

from catdog.models.common import compile_model, conv_bn_relu, head, inputs_and_augment
from catdog.models.registry import register


@register(
    family="vgg", description="VGG-style: 4-5 blocks of two 3x3 convs (BN), global average pooling"
)
def vgg(hp, *, input_shape, num_classes):
    blocks = hp.Int("blocks", 4, 5, default=4)
    width = hp.Choice("width", [16, 32, 64], default=32)
    dropout = hp.Float("dropout", 0.0, 0.5, step=0.1, default=0.3)
    inputs, x = inputs_and_augment(hp, input_shape)
    for b in range(blocks):
        filters = min(width * 2**b, 512)
        x = conv_bn_relu(x, filters, name=f"block{b + 1}a")
        x = conv_bn_relu(x, filters, name=f"block{b + 1}b")
        x = layers.MaxPooling2D(2, name=f"block{b + 1}_pool")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    return compile_model(hp, inputs, head(x, num_classes), "vgg")
