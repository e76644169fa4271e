"""The tricks `benchmarks.tricks` measures that are not catdog hyperparameters: each changes a
built catdog model, for the benchmark only, until one pays on validation.

- `frozen_bn`: every BatchNorm's scale stays at 1 (not trained), its shift still trained
  ("frozen-scale BatchNorm", David Page, "How to train your ResNet", part 7).
- `whiten`: the first convolution is fixed to whitening filters of the training photos' 3x3
  patches, the top eigenvectors of their covariance and their negatives (so the ReLU after it
  drops nothing), each scaled by one over the square root of its eigenvalue (Page; airbench).
- `gc`: gradient centralisation, each kernel's gradient less its mean over the kernel's inputs
  (Yong et al., 2020), before Adam sees it.
- `sam`: sharpness-aware minimisation (Foret et al., 2021): each step's gradient is taken at the
  weights moved RHO along the normalised gradient. Two forward and backward passes a step: up
  to twice the work of a step without it.
"""

from __future__ import annotations

import numpy as np

SAM_RHO = 0.05
WHITEN_EPS = 5e-4  # added to each eigenvalue, as airbench does
WHITEN_PHOTOS = 512  # training photos the patch covariance is taken from
MODEL_TRICKS = ("frozen_bn", "whiten", "gc", "sam")


def freeze_bn_scales(model) -> int:
    """MODEL with every BatchNormalization's scale (gamma) not trained; how many were frozen."""
    import keras

    n = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization) and layer.gamma is not None:
            layer.gamma.trainable = False
            n += 1
    return n


def patch_whitening(images: np.ndarray, filters: int, seed: int) -> np.ndarray:
    """A (3, 3, channels, FILTERS) kernel whitening the 3x3 patches of IMAGES (n, h, w, c, in
    0-255): the top FILTERS // 2 eigenvectors of the patches' covariance, each over the square
    root of its eigenvalue, then the same negated."""
    if filters % 2:
        raise ValueError(f"whitening needs an even number of filters, got {filters}")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(images), min(WHITEN_PHOTOS, len(images)), replace=False)
    x = np.asarray(images[np.sort(pick)], np.float32) / 255.0  # as the model's Rescaling sees it
    c = x.shape[-1]
    # Windows (n, h-2, w-2, c, 3, 3), every other position; reordered to Conv2D's (kh, kw, c).
    win = np.lib.stride_tricks.sliding_window_view(x[:, ::2, ::2], (3, 3), axis=(1, 2))
    patches = win.transpose(0, 1, 2, 4, 5, 3).reshape(-1, 9 * c).astype(np.float64)
    patches -= patches.mean(axis=0)
    values, vectors = np.linalg.eigh(patches.T @ patches / len(patches))
    half = filters // 2
    if half > 9 * c:
        raise ValueError(f"3x3 patches of {c} channels have {9 * c} eigenvectors, not {half}")
    top = np.argsort(values)[::-1][:half]
    kernel = vectors[:, top] / np.sqrt(values[top] + WHITEN_EPS)
    kernel = np.concatenate([kernel, -kernel], axis=1)
    return kernel.reshape(3, 3, c, filters).astype(np.float32)


def whiten_first_conv(model, images: np.ndarray | None, seed: int) -> str:
    """MODEL with its first Conv2D's kernel set to `patch_whitening` of IMAGES and not trained;
    the layer's name. Without IMAGES the kernel is only frozen: a later phase's model, whose
    weights (the whitening among them) are then carried in from the phase before."""
    import keras

    conv = next(
        layer
        for layer in model.layers
        if type(layer) is keras.layers.Conv2D and layer.kernel.shape[:2] == (3, 3)
    )
    if images is not None:
        conv.kernel.assign(patch_whitening(images, int(conv.kernel.shape[-1]), seed))
    conv.trainable = False
    return conv.name


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


def apply(model, tricks: dict, train_images: np.ndarray | None, lr: float, seed: int):
    """MODEL (a compiled two-class catdog model) with the model TRICKS asked for applied, before
    any weights are carried into it (TRAIN_IMAGES None: they will be); a new model where the
    training step changes."""
    if tricks.get("frozen_bn"):
        freeze_bn_scales(model)
    if tricks.get("whiten"):
        whiten_first_conv(model, train_images, seed)
    if tricks.get("gc") or tricks.get("sam"):
        model = tricked_model(model, gc=bool(tricks.get("gc")), sam=bool(tricks.get("sam")), lr=lr)
    return model
