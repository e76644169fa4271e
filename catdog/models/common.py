"""Pieces every architecture shares: the raw-pixel input, augmentation, the head and compile.

The head follows the task: one sigmoid unit for two classes (the probability of the second
class), a softmax over N units for more; the loss and metrics follow the head.

Keeping them here means every family has the same input contract (raw 0-255 RGB, rescaled by
the model's first layer), the same augmentation hyperparameters and the same optimizer search
space, so architectures are compared on what differs: their bodies.
"""

from __future__ import annotations

import math

import keras
from keras import layers

OPTIMIZERS = ("adam", "sgd", "rmsprop")
SCHEDULES = ("constant", "cosine", "plateau")
COSINE_FLOOR = 0.01  # the cosine ends at 1% of the initial rate, not zero


def inputs_and_augment(hp, input_shape, seed: int | None = None):
    """Raw pixels in, rescaled to [0, 1] by the first layer, then train-time augmentation.

    Augmentation layers are built fresh for each model and are no-ops at inference, as Keras does.
    """
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    strength = hp.Float("augment", 0.0, 0.3, step=0.05, default=0.1)
    if strength > 0:
        x = layers.RandomFlip("horizontal", seed=seed, name="aug_flip")(x)
        x = layers.RandomRotation(strength, seed=seed, name="aug_rotate")(x)
        x = layers.RandomZoom(strength, seed=seed, name="aug_zoom")(x)
        x = layers.RandomContrast(strength, value_range=(0, 1), seed=seed, name="aug_contrast")(x)
    return inputs, x


# The output layer's name. Models saved before class names were recorded call it after their
# second class, so loading one never depends on this name.
OUTPUT = "probabilities"


def head(x, num_classes: int):
    """The class probabilities: one sigmoid unit for two classes, else a softmax over them."""
    if num_classes < 2:
        raise ValueError(f"a classifier needs at least two classes, got {num_classes}")
    # float32 output keeps the sigmoid/softmax and the loss stable under mixed precision.
    if num_classes == 2:
        x = layers.Dense(1, name="logit")(x)
        return layers.Activation("sigmoid", dtype="float32", name=OUTPUT)(x)
    x = layers.Dense(num_classes, name="logits")(x)
    return layers.Activation("softmax", dtype="float32", name=OUTPUT)(x)


def _loss_and_metrics(units: int):
    if units == 1:
        return "binary_crossentropy", [
            keras.metrics.BinaryAccuracy(name="accuracy"),
            keras.metrics.AUC(name="auc"),
        ]
    # Integer labels (the pipeline's class indices) against a softmax; the one-vs-rest ROC AUC
    # comes from scikit-learn when a model is evaluated (`catdog.metrics.summary`).
    return "sparse_categorical_crossentropy", [
        keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    ]


def compile_model(hp, inputs, outputs, name: str) -> keras.Model:
    """The model from INPUTS to the `head`'s OUTPUTS, compiled with the loss and metrics that
    head needs and the optimizer the hyperparameters choose."""
    model = keras.Model(inputs, outputs, name=name)
    optimizer = hp.Choice("optimizer", list(OPTIMIZERS), default="adam")
    lr = hp.Float("lr", 1e-4, 1e-2, sampling="log", default=1e-3)
    # How the rate changes over the fit; applied by `schedule_callbacks` at fit time, because a
    # cosine needs the fit's length, which the builder does not know.
    hp.Choice("lr_schedule", list(SCHEDULES), default="cosine")
    if optimizer == "sgd":
        opt = keras.optimizers.SGD(learning_rate=lr, momentum=0.9, nesterov=True)
    elif optimizer == "rmsprop":
        opt = keras.optimizers.RMSprop(learning_rate=lr)
    else:
        opt = keras.optimizers.Adam(learning_rate=lr)
    loss, metrics = _loss_and_metrics(int(outputs.shape[-1]))
    model.compile(optimizer=opt, loss=loss, metrics=metrics)
    return model


# Keras's default BatchNorm momentum (0.99) needs thousands of steps before its moving statistics
# match the weights; sweeps train for a few hundred, and validation then collapses to one class
# (seen here: train accuracy 0.73, val 0.50 after 3 epochs). 0.9 tracks them within ~50 steps.
BN_MOMENTUM = 0.9


def batch_norm(name: str):
    return layers.BatchNormalization(momentum=BN_MOMENTUM, name=name)


def conv_bn_relu(x, filters: int, kernel: int = 3, strides: int = 1, name: str = ""):
    x = layers.Conv2D(
        filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv"
    )(x)
    x = batch_norm(f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def cosine(base: float, epoch: float, epochs: int) -> float:
    """The rate at EPOCH (fractional: a time-kept fit is part-way through one) of a cosine decay
    from BASE over EPOCHS epochs to COSINE_FLOOR of it."""
    fraction = min(max(epoch, 0.0) / max(epochs, 1), 1.0)
    return base * (COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 * (1 + math.cos(math.pi * fraction)))


def schedule_callbacks(hp_values: dict, epochs: int) -> list:
    """The learning-rate schedule a configuration chose, as Keras callbacks for a fit of EPOCHS
    epochs: a per-epoch cosine decay to 1% of the initial rate, or a 3x cut whenever the val
    loss has not improved for 2 epochs (for fits that have validation data)."""
    choice = hp_values.get("lr_schedule", "constant")
    if choice == "cosine":
        start: dict[str, float] = {}

        def rate(epoch: int, lr: float) -> float:
            base = start.setdefault("lr", float(lr))  # the rate the optimizer was built with
            return cosine(base, epoch, epochs)

        return [keras.callbacks.LearningRateScheduler(rate)]
    if choice == "plateau":
        return [
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", factor=1 / 3, patience=2, min_lr=1e-6
            )
        ]
    return []
