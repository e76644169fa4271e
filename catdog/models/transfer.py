"""Transfer learning: an ImageNet backbone from keras.applications with a new head.

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
from catdog.models.common import compile_model, head, inputs_and_augment
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
            log.warning(
                "could not load ImageNet weights for %s (%s); building it with random weights",
                name,
                type(exc).__name__,
            )
    return cls(include_top=False, weights=None, input_shape=input_shape), "none"


MOBILENET_SIZES = (96, 128, 160, 192, 224)  # Keras keeps one MobileNetV2 file for each
WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
PROBE_TIMEOUT_S = 5.0


def weights_file(image_size: int) -> str:
    """The file name keras.applications.MobileNetV2 (alpha 1.0, no top) loads its ImageNet
    weights from at IMAGE_SIZE: one per size it knows, else the 224 px file."""
    rows = image_size if image_size in MOBILENET_SIZES else 224
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5"


def weights_available(image_size: int) -> tuple[bool, str]:
    """Whether the default backbone's ImageNet weights can be had here: cached in Keras's folder
    ($KERAS_HOME/models, else ~/.keras/models), or downloadable now (a HEAD request)."""
    import os
    import urllib.request
    from pathlib import Path

    name = weights_file(image_size)
    folder = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "models"
    if (folder / name).is_file():
        return True, f"cached in {folder}"
    try:
        request = urllib.request.Request(WEIGHTS_URL + name, method="HEAD")
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_S):
            return True, "downloadable"
    except Exception as exc:  # offline, a proxy, DNS: all mean "not now"
        reason = getattr(exc, "reason", None) or type(exc).__name__
        return False, (
            f"its ImageNet weights ({name}) are not in {folder} and cannot be downloaded ({reason})"
        )


# ImageNet backbones were trained at 224 px and lose much below 96 px.
@register(
    family="transfer",
    default_image_size=160,
    pretrained=True,
    image_range=(96, 224),
    weights=weights_available,
    description="ImageNet backbone (MobileNetV2 or EfficientNetB0) with a new head; fine-tune "
    "depth searched",
)
def transfer(hp, *, input_shape, num_classes, pretrained: bool = False):
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
    return compile_model(hp, inputs, head(x, num_classes), "transfer")
