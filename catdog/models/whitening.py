"""A patch-whitening first layer: a 3x3 convolution whose filters come from the training photos,
not from gradient descent (David Page, "How to train your ResNet"; Keller Jordan's airbench).

The filters are the top eigenvectors of the covariance of the photos' 3x3 patches, each over the
square root of its eigenvalue, then the same negated, so the ReLU after the layer's BatchNorm
drops nothing. The layer sees decorrelated, equal-variance patch components from the first step,
and the network fits sooner: in `benchmarks.tricks` at the long fit's scale (22 epochs) it was
ahead of the same model without it at every epoch from the 11th (docs/performance.md).

`PatchWhitening` is a Keras layer with an `adapt` step, as `keras.layers.Normalization` is: it is
built with stand-in filters, and `adapt(images)` sets them from data and marks it `ready`. The
flag is a weight, so it travels with the filters: a saved, resumed, registered or served model
and a long fit carried to a larger size keep the filters they were given. catdog adapts the layer
at the start of any fit (`AdaptWhitening`, in every fit's callbacks) from the first
WHITEN_PHOTOS training photos, as the layer sees them without augmentation, once.

Opt in with the `whiten` hyperparameter (`whiten = true` in a sweep file, `--set whiten=true`);
the from-scratch families whose stem is `common.stem` declare it.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

WHITEN_EPS = 5e-4  # added to each eigenvalue (pixels in [0, 1]), as airbench does
WHITEN_PHOTOS = 512  # training photos the patch covariance is taken from
PATCH = 3


def max_filters(channels: int) -> int:
    """The most filters whitening 3x3 patches of CHANNELS channels gives: each eigenvector and
    its negative."""
    return 2 * PATCH * PATCH * channels


def _check_filters(filters: int, channels: int) -> None:
    if filters % 2 or not 2 <= filters <= max_filters(channels):
        raise ValueError(
            f"patch whitening of {channels}-channel photos gives an even number of filters up "
            f"to {max_filters(channels)}, not {filters}"
        )


def whitening_kernel(images: np.ndarray, filters: int) -> np.ndarray:
    """A (3, 3, channels, FILTERS) kernel whitening the 3x3 patches of IMAGES ((n, h, w, c), on
    the scale the layer sees): the top FILTERS // 2 eigenvectors of the patches' covariance,
    each over the square root of its eigenvalue (+ WHITEN_EPS), then the same negated."""
    x = np.asarray(images, np.float32)
    c = x.shape[-1]
    _check_filters(filters, c)
    # Every 3x3 window (every other position, which sees every pixel), ordered as Conv2D's
    # kernel is: (rows, columns, channels).
    win = np.lib.stride_tricks.sliding_window_view(x, (PATCH, PATCH), axis=(1, 2))[:, ::2, ::2]
    patches = win.transpose(0, 1, 2, 4, 5, 3).reshape(-1, PATCH * PATCH * c).astype(np.float64)
    patches -= patches.mean(axis=0)
    values, vectors = np.linalg.eigh(patches.T @ patches / len(patches))
    top = np.argsort(values)[::-1][: filters // 2]
    kernel = vectors[:, top] / np.sqrt(np.maximum(values[top], 0.0) + WHITEN_EPS)
    kernel = np.concatenate([kernel, -kernel], axis=1)
    return kernel.reshape(PATCH, PATCH, c, filters).astype(np.float32)


@keras.saving.register_keras_serializable(package="catdog")
class PatchWhitening(layers.Layer):
    """A 3x3 convolution (no bias, "same" padding) with fixed, data-derived whitening filters.

    Until `adapt` is called the filters are Glorot-random, as an ordinary convolution's start,
    and `ready` is false. Nothing in the layer is trained.
    """

    def __init__(self, filters: int, strides: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.strides = int(filters), int(strides)

    def build(self, input_shape):
        channels = int(input_shape[-1])
        _check_filters(self.filters, channels)
        self.kernel = self.add_weight(
            name="kernel",
            shape=(PATCH, PATCH, channels, self.filters),
            initializer="glorot_uniform",
            trainable=False,
        )
        self.ready = self.add_weight(name="ready", shape=(), initializer="zeros", trainable=False)

    @property
    def is_ready(self) -> bool:
        return bool(ops.convert_to_numpy(self.ready) > 0)

    def adapt(self, images) -> None:
        """Set the filters from IMAGES ((n, h, w, c), as this layer sees them) and mark the layer
        ready."""
        self.kernel.assign(whitening_kernel(np.asarray(images), self.filters))
        self.ready.assign(1.0)

    def call(self, inputs):
        kernel = ops.cast(self.kernel, inputs.dtype)
        return ops.conv(inputs, kernel, strides=self.strides, padding="same")

    def compute_output_shape(self, input_shape):
        def side(n):
            return None if n is None else -(-n // self.strides)

        return (input_shape[0], side(input_shape[1]), side(input_shape[2]), self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "strides": self.strides}


def training_images(dataset, photos: int = WHITEN_PHOTOS) -> np.ndarray:
    """The first PHOTOS images of DATASET (batches of (images, labels[, weights]) or of images)."""
    taken, count = [], 0
    for batch in dataset:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        x = np.asarray(x)
        taken.append(x[: photos - count])
        count += len(taken[-1])
        if count >= photos:
            break
    if not taken:
        raise ValueError("patch whitening needs training photos, and the dataset has none")
    return np.concatenate(taken)


class AdaptWhitening(keras.callbacks.Callback):
    """At a fit's start, adapts every `PatchWhitening` layer of the model that is not yet ready
    from the first WHITEN_PHOTOS photos of TRAIN, as the layer sees them at inference (after the
    layers before it, without augmentation). A ready layer (carried, resumed or loaded) is left
    as it is; a model without one costs nothing."""

    def __init__(self, train, photos: int = WHITEN_PHOTOS):
        super().__init__()
        self.train, self.photos = train, photos

    def on_train_begin(self, logs=None):
        pending = [
            layer
            for layer in self.model.layers
            if isinstance(layer, PatchWhitening) and not layer.is_ready
        ]
        if not pending:
            return
        if self.train is None:
            raise ValueError("a patch-whitening layer needs training photos to adapt to")
        images = training_images(self.train, self.photos)
        for layer in pending:
            seen = keras.Model(self.model.inputs, layer.input)
            layer.adapt(
                np.concatenate(
                    [
                        ops.convert_to_numpy(seen([images[i : i + 64]], training=False))
                        for i in range(0, len(images), 64)
                    ]
                )
            )


def adapt_callbacks(train) -> list:
    """What every catdog fit on TRAIN adds so a whitening layer gets its filters first."""
    return [AdaptWhitening(train)]
