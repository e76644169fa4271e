"""Transfer learning: an ImageNet backbone from keras.applications with a new binary head.

With `pretrained=True` (what `catdog train` and `catdog sweep` ask for) the weights come from
ImageNet when they can be downloaded (Keras caches them in ~/.keras/models); offline, the
backbone is built with random weights and a warning says so. `pretrained=False` (the registry's
default, and the tests') never downloads. The number of top backbone layers unfrozen for
fine-tuning is a hyperparameter (0 = frozen backbone, a pure feature extractor).
"""

from __future__ import annotations

import keras
from keras import layers

from catdog.log import get_logger
from catdog.models.common import binary_head, compile_model, inputs_and_augment
from catdog.models.registry import register

log = get_logger(__name__)

# Each backbone's expected input range, from our [0, 1] rescaled pixels.
_BACKBONES = {
    "mobilenet_v2": (keras.applications.MobileNetV2, dict(scale=2.0, offset=-1.0)),  # [-1, 1]
    "efficientnet_b0": (keras.applications.EfficientNetB0, dict(scale=255.0, offset=0.0)),  # 0-255
}


def _backbone(name: str, input_shape, pretrained: bool):
    cls, _ = _BACKBONES[name]
    if pretrained:
        try:
            return cls(include_top=False, weights="imagenet", input_shape=input_shape), "imagenet"
        except Exception as exc:  # offline, or a proxy that refuses: still build the model
            log.warning("could not load ImageNet weights for %s (%s); building it with random "
                        "weights", name, type(exc).__name__)
    return cls(include_top=False, weights=None, input_shape=input_shape), "none"


# ImageNet backbones were trained at 224 px and lose much below 96 px.
@register(family="transfer", default_image_size=160, pretrained=True, image_range=(96, 224),
          description="ImageNet backbone (MobileNetV2 or EfficientNetB0) with a new head; fine-tune depth searched")
def transfer(hp, *, input_shape, pretrained: bool = False):
    name = hp.Choice("backbone", list(_BACKBONES), default="mobilenet_v2")
    fine_tune = hp.Int("fine_tune", 0, 60, step=20, default=0)
    dropout = hp.Float("dropout", 0.0, 0.5, step=0.1, default=0.2)
    inputs, x = inputs_and_augment(hp, input_shape)
    x = layers.Rescaling(**_BACKBONES[name][1], name="backbone_range")(x)
    base, _ = _backbone(name, input_shape, pretrained)
    base.trainable = fine_tune > 0
    if fine_tune:
        for layer in base.layers[:-fine_tune]:
            layer.trainable = False
    for layer in base.layers:  # BatchNorm statistics stay frozen even while fine-tuning.
        if isinstance(layer, layers.BatchNormalization):
            layer.trainable = False
    x = base(x, training=False)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    return compile_model(hp, inputs, binary_head(x), "transfer")
