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

from catdog.errors import CatdogError
from catdog.models.whitening import PatchWhitening, max_filters

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
    # A shift of up to this fraction of the photo each way. Off unless asked for (see `OPT_IN`):
    # read here where a sweep file or --set gave it, declared with the other tricks at the end
    # (`compile_model`), so a search draws every other value from the seed it always did.
    translate = fraction("translate", hp.values.get("translate", 0.0))
    # The rotation's limit in degrees each way, where one is given; else `augment`'s strength,
    # which Keras reads as a fraction of a full turn (0.15: up to 54 degrees).
    turn = rotation_turn(hp.values.get("rotate", 0.0), strength)
    if strength > 0:
        x = layers.RandomFlip("horizontal", seed=seed, name="aug_flip")(x)
        x = layers.RandomRotation(turn, seed=seed, name="aug_rotate")(x)
        x = layers.RandomZoom(strength, seed=seed, name="aug_zoom")(x)
        x = layers.RandomContrast(strength, value_range=(0, 1), seed=seed, name="aug_contrast")(x)
    if translate:
        x = layers.RandomTranslation(translate, translate, seed=seed, name="aug_translate")(x)
    return inputs, x


def rotation_turn(rotate, strength: float) -> float:
    """The fraction of a full turn a RandomRotation may turn a photo each way: ROTATE degrees
    where it is given (not 0), else STRENGTH, `augment`'s."""
    degrees = float(rotate)
    if not 0 <= degrees <= 180:
        raise CatdogError(f"rotate is the rotation's limit in degrees, 0 to 180; got {rotate}")
    return degrees / 360.0 if degrees else strength


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
    from catdog import keys
    from catdog.models.balanced import BalancedAccuracy

    # Balanced accuracy in every model: an imbalanced dataset's sweep searches and chooses on it
    # (`catdog.data.balance.objective`); on balanced data it is close to accuracy.
    if units == 1:
        return "binary_crossentropy", [
            keras.metrics.BinaryAccuracy(name="accuracy"),
            keras.metrics.AUC(name="auc"),
            BalancedAccuracy(2, name=keys.BALANCED_ACCURACY),
        ]
    # Integer labels (the pipeline's class indices) against a softmax; the one-vs-rest ROC AUC
    # comes from scikit-learn when a model is evaluated (`catdog.metrics.summary`).
    return "sparse_categorical_crossentropy", [
        keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
        BalancedAccuracy(units, name=keys.BALANCED_ACCURACY),
    ]


def compile_model(
    hp, inputs, outputs, name: str, *, whitening: bool = False, pooling: bool = False
) -> keras.Model:
    """The model from INPUTS to the `head`'s OUTPUTS, compiled with the loss and metrics that
    head needs and the optimizer the hyperparameters choose. WHITENING: the builder's `stem`
    can whiten (declares `whiten`); POOLING: it can pool (declares `stem_pool`)."""
    model = keras.Model(inputs, outputs, name=name)
    optimizer = hp.Choice("optimizer", list(OPTIMIZERS), default="adam")
    lr = hp.Float("lr", 1e-4, 1e-2, sampling="log", default=1e-3)
    # How the rate changes over the fit; applied by `schedule_callbacks` at fit time, because a
    # cosine needs the fit's length, which the builder does not know.
    hp.Choice("lr_schedule", list(SCHEDULES), default="cosine")
    # Off unless asked for (see `OPT_IN`); declared last, so a search still draws the others'
    # values from the seeds it drew them from before these existed.
    hp.Fixed("translate", 0.0)  # used by `inputs_and_augment`
    smoothing = fraction("label_smoothing", hp.Fixed("label_smoothing", 0.0))
    ema = hp.Fixed("ema", 0.0)  # the weights' moving average's momentum (True: EMA_MOMENTUM)
    if whitening:
        hp.Fixed("whiten", False)  # used by `stem`
    if pooling:
        hp.Fixed("stem_pool", False)  # used by `stem`
    hp.Fixed("rotate", 0.0)  # used by `inputs_and_augment`; 0: as `augment` turns
    decay = hp.Fixed("weight_decay", 0.0)
    # Validation and the saved model see the average through `EMAWeights` at fit time.
    extra = {"use_ema": True, "ema_momentum": ema_momentum(ema)} if ema else {}
    if decay:
        extra["weight_decay"] = weight_decay(decay)
    if optimizer == "sgd":
        opt = keras.optimizers.SGD(learning_rate=lr, momentum=0.9, nesterov=True, **extra)
    elif optimizer == "rmsprop":
        opt = keras.optimizers.RMSprop(learning_rate=lr, **extra)
    else:
        opt = keras.optimizers.Adam(learning_rate=lr, **extra)
    units = int(outputs.shape[-1])
    loss, metrics = _loss_and_metrics(units)
    if smoothing:
        if units != 1:  # Keras's SparseCategoricalCrossentropy has no label_smoothing
            raise CatdogError(
                f"label_smoothing works with two classes only; this dataset has {units}"
            )
        loss = keras.losses.BinaryCrossentropy(label_smoothing=smoothing)
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


def stem(hp, x, filters: int, strides: int = 1, name: str = "stem", pool: bool = False):
    """A from-scratch model's first layers: `conv_bn_relu`, or with the `whiten` hyperparameter
    a `PatchWhitening` layer in the convolution's place (at most `max_filters` of the input's
    channels). The builder then passes `whitening=True` to `compile_model`.

    With POOL, the `stem_pool` hyperparameter adds a 2x2 max pooling of stride 2 (the ResNet's
    stem pools 3x3 at stride 2 always): the body then runs on a quarter of the positions, so a
    photo of twice the side costs about what it did (the builder passes `pooling=True` to
    `compile_model`). 2x2 is what was measured (docs/performance.md)."""
    if not hp.values.get("whiten"):
        x = conv_bn_relu(x, filters, strides=strides, name=name)
    else:
        filters = min(filters, max_filters(int(x.shape[-1])))
        x = PatchWhitening(filters, strides=strides, name=f"{name}_whiten")(x)
        x = batch_norm(f"{name}_bn")(x)
        x = layers.Activation("relu", name=f"{name}_relu")(x)
    if pool and hp.values.get("stem_pool"):
        x = layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    return x


def cosine(base: float, epoch: float, epochs: int) -> float:
    """The rate at EPOCH (fractional: a time-kept fit is part-way through one) of a cosine decay
    from BASE over EPOCHS epochs to COSINE_FLOOR of it."""
    fraction = min(max(epoch, 0.0) / max(epochs, 1), 1.0)
    return base * (COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 * (1 + math.cos(math.pi * fraction)))


def schedule_callbacks(hp_values: dict, epochs: int) -> list:
    """The callbacks a configuration's fit of EPOCHS epochs needs: its learning-rate schedule,
    then `EMAWeights` when it averages its weights (`ema`)."""
    return _rate_callbacks(hp_values, epochs) + ema_callbacks(hp_values)


def _rate_callbacks(hp_values: dict, epochs: int) -> list:
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


# Training tricks a configuration may ask for, off by default. They are declared `hp.Fixed` at
# 0, not as ranges: catdog's tuners search every declared range (`tune_new_entries`), and these
# should change no sweep that does not name them. A sweep file that gives one a value, a list or
# a range registers it first, and the builder takes that (`sweepfile.apply_hp`); so does a fixed
# value (`fixed_hyperparameters`, `catdog train --set ema=0.99`).
# whiten: where `stem` is used; stem_pool: where it may pool (a stem that does not already).
# rotate: the augmentation's rotation in degrees, where it should not be `augment`'s.
# weight_decay: Keras's decoupled decay (AdamW's with `optimizer = "adam"`): each step takes
# lr * weight_decay of every trainable weight away, BatchNorm's and biases' included, as Keras
# does unless told otherwise; a rule kept in the optimizer's config, so a resumed long fit,
# which loads its checkpoint, decays exactly as it did before the kill.
OPT_IN = ("translate", "label_smoothing", "ema", "whiten", "stem_pool", "rotate", "weight_decay")
EMA_MOMENTUM = 0.99  # `ema = true`: an average over about the last 100 steps (~an epoch here)


def fraction(name: str, value) -> float:
    """VALUE of the opt-in NAME (`translate`, `label_smoothing`), a share: at least 0, below 1."""
    share = float(value)
    if not 0 <= share < 1:
        raise CatdogError(f"{name} is a share, at least 0 and below 1; got {value}")
    return share


def weight_decay(value) -> float:
    """The decoupled weight decay a `weight_decay` hyperparameter asks for."""
    decay = float(value)
    if not 0 <= decay < 1:
        raise CatdogError(
            f"weight_decay is the share of each weight a step takes away per unit of learning "
            f"rate, at least 0 and below 1; got {value}"
        )
    return decay


def ema_momentum(value) -> float:
    """The EMA momentum an `ema` hyperparameter asks for: True means EMA_MOMENTUM."""
    momentum = EMA_MOMENTUM if value is True else float(value)
    if not 0 < momentum < 1:
        raise CatdogError(f"ema is the average's momentum, between 0 and 1; got {value}")
    return momentum


# How the builders read each opt-in that has bounds: a value outside them is a CatdogError.
# `sweepfile.search_spaces` puts every value a sweep file lets a trial draw through these before
# any data is read, so `ema = 1.5` fails at once, not an hour in, when its turn comes.
TRICK_READERS = {
    "translate": lambda v: fraction("translate", v),
    "label_smoothing": lambda v: fraction("label_smoothing", v),
    "ema": lambda v: ema_momentum(v) if v else 0.0,  # 0 / false: no average
    "rotate": lambda v: rotation_turn(v, 0.0),
    "weight_decay": weight_decay,
}


def ema_callbacks(hp_values: dict) -> list:
    """[`EMAWeights`] for a configuration that averages its weights, else []: what a fit that
    does not take `schedule_callbacks` (the focus long fit, a benchmark) adds for `ema`."""
    return [EMAWeights()] if hp_values.get("ema") else []


class EMAWeights(keras.callbacks.Callback):
    """Validation, callbacks at an epoch's end and whatever the fit leaves behind (the saved,
    registered model) see the moving average of the weights (an optimizer with `use_ema`);
    training goes on from the raw weights.

    From an epoch's validation (or its end, without validation data) to the next epoch's start,
    the raw weights are held aside and the model's weights and the optimizer's averages are
    both the average. So a checkpoint written between epochs holds the validated weights, and
    `finalize_variable_values`, which Keras runs at the end of every fit and which copies the
    averages into the model, changes nothing, however the fit ended. (Keras's `SwapEMAWeights`
    swaps the two in place instead: a fit stopped before its last epoch then ends on the raw
    weights, and a checkpoint holds them the wrong way round.) A fit resumed from a checkpoint
    or continued at another size starts from the average. Batch-norm statistics are not
    averaged (they are not trainable): they follow the raw weights' last batches.
    With validation data its place among the callbacks does not matter; without, the callbacks
    before it see the raw weights at an epoch's end.
    """

    def __init__(self):
        super().__init__()
        self._raw = None  # [(variable, its raw value)] while the average is in the model

    def on_train_begin(self, logs=None):
        self._raw = None

    def _average_in(self):
        opt = getattr(self.model.optimizer, "inner_optimizer", self.model.optimizer)
        if self._raw is not None or not (getattr(opt, "use_ema", False) and opt.built):
            return
        if int(keras.ops.convert_to_numpy(opt.iterations)) == 0:
            return  # no step yet: the averages are not set
        pairs = [
            (var, avg)
            for var, avg in zip(opt._trainable_variables, opt._model_variables_moving_average)
            if avg is not None
        ]
        self._raw = [(var, keras.ops.convert_to_numpy(var)) for var, _ in pairs]
        for var, avg in pairs:
            var.assign(avg)

    def on_test_begin(self, logs=None):
        self._average_in()

    def on_epoch_end(self, epoch, logs=None):
        self._average_in()

    def on_epoch_begin(self, epoch, logs=None):
        for var, value in self._raw or ():
            var.assign(value)
        self._raw = None
