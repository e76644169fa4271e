"""Where a model looked: Grad-CAM on its last convolutional feature map, for the report.

Grad-CAM (Selvaraju et al., 2017) weights the last 4-D feature map by the gradient of the
predicted class's score, averaged over space: the probability of the class the model chose (for
a binary model's single sigmoid p, p when it chose the second class and 1 - p when the first).
Models whose graph hides that map fall back to the plain input gradient (vanilla saliency). Both
need only the Keras model, so every architecture in the registry gets a map.
"""

from __future__ import annotations

import numpy as np


def _last_feature_layer(model):
    for layer in reversed(model.layers):
        shape = getattr(layer, "output", None)
        shape = getattr(shape, "shape", None)
        if shape is not None and len(shape) == 4 and not layer.name.startswith(("aug_", "rescale")):
            return layer
    return None


def _normalise(maps: np.ndarray) -> np.ndarray:
    maps = np.maximum(maps, 0)
    top = maps.reshape(len(maps), -1).max(axis=1).reshape(-1, 1, 1)
    return maps / np.where(top > 0, top, 1)


def _predicted_score(p):
    """Summed over the batch, each image's probability of the class it is predicted to be."""
    import tensorflow as tf

    from catdog.metrics import THRESHOLD

    if p.shape[-1] == 1:
        p = tf.reshape(p, (-1,))
        return tf.reduce_sum(tf.where(p >= THRESHOLD, p, 1.0 - p))
    return tf.reduce_sum(tf.reduce_max(p, axis=-1))


GRAD_CAM = "Grad-CAM"
INPUT_GRADIENT = "input-gradient saliency"


def heatmaps(model, images: np.ndarray) -> tuple[np.ndarray, str]:
    """(n, h, w) maps in 0-1 over raw 0-255 images (n, h, w, 3), for the class each is predicted,
    and the method that drew them (Grad-CAM, or the input gradient where Grad-CAM cannot reach
    the feature map, e.g. inside a nested pretrained backbone)."""
    import keras
    import tensorflow as tf

    x = tf.convert_to_tensor(np.asarray(images, np.float32))
    size = images.shape[1:3]
    layer = _last_feature_layer(model)
    try:
        if layer is None:
            raise ValueError("no 4-D feature map")
        probe = keras.Model(model.inputs, [layer.output, model.output])
        with tf.GradientTape() as tape:
            feats, p = probe(x, training=False)
            score = _predicted_score(p)
        grads = tape.gradient(score, feats)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        cam = tf.reduce_sum(weights * feats, axis=-1)[..., None]
        cam = tf.image.resize(cam, size, method="bilinear")[..., 0].numpy()
        method = GRAD_CAM
    except (ValueError, TypeError, AttributeError):
        with tf.GradientTape() as tape:
            tape.watch(x)
            score = _predicted_score(model(x, training=False))
        cam = tf.reduce_max(tf.abs(tape.gradient(score, x)), axis=-1).numpy()
        method = INPUT_GRADIENT
    return _normalise(cam), method
