"""The tricks `benchmarks.tricks` measures that are not catdog hyperparameters: each changes a
built catdog model, for the benchmark only, until one pays on validation.

- `frozen_bn`: every BatchNorm's scale stays at 1 (not trained), its shift still trained
  ("frozen-scale BatchNorm", David Page, "How to train your ResNet", part 7).
- (`whiten`, a patch-whitening first layer, measured here first, is now catdog's `whiten`
  hyperparameter: `catdog.models.whitening`.)
- `gc`: gradient centralisation, each kernel's gradient less its mean over the kernel's inputs
  (Yong et al., 2020), before Adam sees it.
- (`rotation`, the augmentation's rotation held to some degrees, measured here first, is now
  catdog's `rotate` hyperparameter.)
- `sam`: sharpness-aware minimisation (Foret et al., 2021): each step's gradient is taken at the
  weights moved RHO along the normalised gradient. Two forward and backward passes a step: up
  to twice the work of a step without it.
"""

from __future__ import annotations

SAM_RHO = 0.05
MODEL_TRICKS = ("frozen_bn", "gc", "sam")


def freeze_bn_scales(model) -> int:
    """MODEL with every BatchNormalization's scale (gamma) not trained; how many were frozen."""
    import keras

    n = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization) and layer.gamma is not None:
            layer.gamma.trainable = False
            n += 1
    return n


def centralised(gradient, variable):
    """GRADIENT less its mean over the kernel's inputs, for a convolution's or a dense layer's
    kernel (the last axis is the outputs; a depthwise kernel's outputs are its last two); any
    other gradient as it is."""
    import tensorflow as tf

    rank = len(variable.shape)
    if rank < 2:
        return gradient
    axes = list(range(rank - 2)) if "depthwise" in variable.path else list(range(rank - 1))
    if not axes:
        return gradient
    return gradient - tf.reduce_mean(gradient, axis=axes, keepdims=True)


def tricked_model(model, *, gc: bool, sam: bool, lr: float):
    """A model of MODEL's layers whose training step centralises the gradients (GC) and/or takes
    them at the sharpness-aware point (SAM), compiled with Adam at LR and the two-class loss
    and accuracy (the benchmark reads only val accuracy)."""
    import keras
    import tensorflow as tf

    class Tricked(keras.Model):
        def train_step(self, data):
            x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
            variables = self.trainable_variables

            def gradients():
                with tf.GradientTape() as tape:
                    y_pred = self(x, training=True)
                    loss = self.compute_loss(x=x, y=y, y_pred=y_pred, training=True)
                return y_pred, loss, tape.gradient(loss, variables)

            y_pred, loss, grads = gradients()
            if sam:
                scale = SAM_RHO / (tf.linalg.global_norm(grads) + 1e-12)
                moves = [g * scale for g in grads]
                for v, e in zip(variables, moves):
                    v.assign_add(e)
                _, _, grads = gradients()
                for v, e in zip(variables, moves):
                    v.assign_sub(e)
            if gc:
                grads = [centralised(g, v) for g, v in zip(grads, variables)]
            self.optimizer.apply(grads, variables)
            self._loss_tracker.update_state(loss, sample_weight=tf.shape(x)[0])
            return self.compute_metrics(x, y, y_pred)

    tricked = Tricked(model.inputs, model.outputs, name=model.name)
    tricked.compile(
        optimizer=keras.optimizers.Adam(learning_rate=lr),
        loss="binary_crossentropy",
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy")],
    )
    return tricked


def apply(model, tricks: dict, lr: float):
    """MODEL (a compiled two-class catdog model) with the model TRICKS asked for applied, before
    any weights are carried into it; a new model where the training step changes."""
    if tricks.get("frozen_bn"):
        freeze_bn_scales(model)
    if tricks.get("gc") or tricks.get("sam"):
        model = tricked_model(model, gc=bool(tricks.get("gc")), sam=bool(tricks.get("sam")), lr=lr)
    return model
