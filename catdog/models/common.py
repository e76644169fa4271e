"""Pieces every architecture shares: the raw-pixel input, augmentation, the head and compile.

Keeping them here means every family has the same input contract (raw 0-255 RGB, rescaled by
the model's first layer), the same augmentation hyperparameters and the same optimizer search
space, so architectures are compared on what differs: their bodies.
"""

from __future__ import annotations

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


def binary_head(x):
    # float32 output keeps the sigmoid and the loss stable under mixed precision.
    x = layers.Dense(1, name="logit")(x)
    return layers.Activation("sigmoid", dtype="float32", name="p_dog")(x)


def compile_model(hp, inputs, outputs, name: str) -> keras.Model:
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
    model.compile(
        optimizer=opt,
        loss="binary_crossentropy",
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")],
    )
    return model


# Keras's default BatchNorm momentum (0.99) needs thousands of steps before its moving statistics
# match the weights; sweeps train for a few hundred, and validation then collapses to one class
# (seen here: train accuracy 0.73, val 0.50 after 3 epochs). 0.9 tracks them within ~50 steps.
BN_MOMENTUM = 0.9


def batch_norm(name: str):
    return layers.BatchNormalization(momentum=BN_MOMENTUM, name=name)


def conv_bn_relu(x, filters: int, kernel: int = 3, strides: int = 1, name: str = ""):
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                      name=f"{name}_conv")(x)
    x = batch_norm(f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def schedule_callbacks(hp_values: dict, epochs: int) -> list:
    """The learning-rate schedule a configuration chose, as Keras callbacks for a fit of EPOCHS
    epochs: a per-epoch cosine decay to 1% of the initial rate, or a 3x cut whenever the val
    loss has not improved for 2 epochs (for fits that have validation data)."""
    choice = hp_values.get("lr_schedule", "constant")
    if choice == "cosine":
        import math

        start: dict[str, float] = {}

        def cosine(epoch: int, lr: float) -> float:
            base = start.setdefault("lr", float(lr))  # the rate the optimizer was built with
            fraction = min(epoch / max(epochs, 1), 1.0)
            return base * (COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 * (1 + math.cos(math.pi *
                                                                                  fraction)))
        return [keras.callbacks.LearningRateScheduler(cosine)]
    if choice == "plateau":
        return [keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=1 / 3, patience=2,
                                                  min_lr=1e-6)]
    return []
