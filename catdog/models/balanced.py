"""Balanced accuracy as a Keras metric: the mean of the per-class recalls, so every class counts
the same however many photos it has (150 of one class and 12 of another: always answering the
first scores 0.93 accuracy and 0.50 balanced accuracy).

It is what an imbalanced dataset's sweep searches, stops and chooses on (`catdog.data.balance`),
compiled into every model under `keys.BALANCED_ACCURACY` so Keras logs `val_balanced_accuracy`
each epoch. The classes a model predicts are the served model's: for one sigmoid unit, the second
class from `metrics.THRESHOLD` up; for a softmax, the most probable. Its state is two counters
per class (hits and images, `add_variable`, summed across replicas under tf.distribute), so the
value over many batches is the value over all their images, as scikit-learn's
`balanced_accuracy_score` gives it; classes absent from the labels seen are left out of the mean.
"""

from __future__ import annotations

import keras
from keras import ops

from catdog.metrics import THRESHOLD


@keras.saving.register_keras_serializable(package="catdog")
class BalancedAccuracy(keras.metrics.Metric):
    """Mean per-class recall over every batch since the last reset. NUM_CLASSES is 2 for a
    one-unit sigmoid head (labels 0/1), else the softmax's width (integer labels)."""

    def __init__(self, num_classes: int = 2, threshold: float = THRESHOLD, name=None, **kwargs):
        super().__init__(name=name or "balanced_accuracy", **kwargs)
        self.num_classes, self.threshold = int(num_classes), float(threshold)
        # float32 whatever the dtype policy: counts of images, not activations.
        self.hits = self.add_variable(
            shape=(self.num_classes,), initializer="zeros", dtype="float32", name="hits"
        )
        self.seen = self.add_variable(
            shape=(self.num_classes,), initializer="zeros", dtype="float32", name="seen"
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.cast(y_pred, "float32")
        if y_pred.shape[-1] == 1:  # one sigmoid unit: the second class's probability
            pred = ops.cast(ops.reshape(y_pred, (-1,)) >= self.threshold, "int32")
        else:
            pred = ops.argmax(ops.reshape(y_pred, (-1, self.num_classes)), axis=-1)
        true = ops.cast(ops.round(ops.reshape(ops.cast(y_true, "float32"), (-1,))), "int32")
        onehot = ops.one_hot(true, self.num_classes, dtype="float32")
        # Keras hands `class_weight` to the metrics as sample weights: a recall is a share within
        # one class, so a weight that is constant per class leaves it unchanged.
        weight = (
            ops.ones_like(ops.cast(true, "float32"))
            if sample_weight is None
            else ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
        )
        right = ops.cast(ops.equal(true, ops.cast(pred, "int32")), "float32") * weight
        self.hits.assign_add(ops.sum(onehot * ops.expand_dims(right, -1), axis=0))
        self.seen.assign_add(ops.sum(onehot * ops.expand_dims(weight, -1), axis=0))

    def result(self):
        present = ops.cast(self.seen > 0, "float32")
        recall = ops.divide_no_nan(self.hits, self.seen)
        return ops.divide_no_nan(ops.sum(recall * present), ops.sum(present))

    def reset_state(self):
        for variable in (self.hits, self.seen):
            variable.assign(ops.zeros((self.num_classes,), dtype="float32"))

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "threshold": self.threshold,
        }
