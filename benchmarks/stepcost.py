"""Where a training step's time goes on this machine: augmentation, the forward pass, the
backward pass with Adam's update, and whether TensorFlow's fused BatchNorm would shorten it.

    python -m benchmarks.stepcost [--arch xception] [--sizes 128 160 192] [--steps 30]
                                  [--out benchmarks/results/stepcost.json]

The model is the long fit's usual winner as `experiments/cpu.toml` builds it (the `stem_pool`
variant of `benchmarks.tricks`: width 16, whitened and pooled stem, `augment` 0.15). At each
size, one batch of BATCH synthetic photos (speed does not depend on what they show), each part
timed as the median of STEPS calls after a warm-up:

- augmentation: the model's augmentation layers alone, in training mode;
- forward: the whole model in training mode (its augmentation included);
- step: Keras's `train_on_batch` (forward, loss, backward, Adam's update, metrics), as a fit
  runs it; backward and update are the step less the forward pass;
- BatchNorm: the same step with the model's BatchNormalization layers as Keras 3 computes
  them (moments, then the normalisation: separate ops) and through TensorFlow's fused kernel
  (`tf.nn.fused_batch_norm`), both compiled alike and timed in turn, twice. The fused copy's
  outputs are checked against the model's first, so the two time the same arithmetic.

Nothing is trained to a result: this says which part of an epoch a change could shorten, before
`benchmarks.tricks` measures what the epochs it buys are worth.
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks import tricks
from benchmarks.probes import median_ms

BATCH = 32
HPARAMS = {**tricks.VALUES, **tricks.VARIANTS["stem_pool"]}  # as cpu.toml's long fit


def augmentation_layers(model) -> list:
    return [layer for layer in model.layers if layer.name.startswith("aug_")]


class FusedBatchNorm:
    """Keras's BatchNormalization, trained through TensorFlow's fused kernel
    (`FusedBatchNormV3`, which Keras 2 used) where Keras 3 computes the moments and the
    normalisation as separate ops. Made as a subclass on first use, so importing this module
    stays free of Keras. The moving statistics follow Keras's rule, with the batch's biased
    variance (the kernel returns the unbiased one)."""

    _class = None

    @classmethod
    def layer(cls):
        if cls._class is None:
            import keras
            import tensorflow as tf

            class Fused(keras.layers.BatchNormalization):
                def call(self, inputs, training=None, mask=None):
                    if not training or len(inputs.shape) != 4:
                        return super().call(inputs, training=training, mask=mask)
                    x = tf.cast(inputs, tf.float32)
                    y, mean, unbiased = tf.compat.v1.nn.fused_batch_norm(
                        x, self.gamma, self.beta, epsilon=self.epsilon, is_training=True
                    )
                    n = tf.cast(tf.reduce_prod(tf.shape(x)[:3]), tf.float32)
                    keep = self.momentum
                    self.moving_mean.assign(self.moving_mean * keep + mean * (1 - keep))
                    self.moving_variance.assign(
                        self.moving_variance * keep + unbiased * (n - 1) / n * (1 - keep)
                    )
                    return tf.cast(y, self.compute_dtype)

            cls._class = Fused
        return cls._class


def with_fused_batch_norm(model):
    """A copy of MODEL whose BatchNormalization layers train through the fused kernel, with
    MODEL's weights."""
    import keras

    fused = FusedBatchNorm.layer()

    def clone(layer):
        if isinstance(layer, keras.layers.BatchNormalization):
            return fused.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def batch_norm_costs(model, x, y, steps: int) -> dict:
    """A training step of MODEL with Keras's BatchNormalization and with the fused kernel's, in
    ms, both compiled alike (Adam, the model's loss, accuracy) and timed in turn, twice; and
    whether each fused layer's training-mode output is its Keras twin's."""
    import keras

    fused = with_fused_batch_norm(model)
    rng = np.random.default_rng(1)
    agree = True
    for layer in model.layers:  # layer by layer: the model's augmentation draws differ per call
        if isinstance(layer, keras.layers.BatchNormalization):
            batch = rng.normal(size=(8, *layer.input.shape[1:])).astype(np.float32)
            twin = fused.get_layer(layer.name)
            agree &= bool(
                np.allclose(layer(batch, training=True), twin(batch, training=True), atol=1e-4)
            )
    times: dict[str, list[float]] = {"keras": [], "fused": []}
    for name, net in (("keras", keras.models.clone_model(model)), ("fused", fused)) * 2:
        net.compile(optimizer=keras.optimizers.Adam(1e-3), loss=model.loss, metrics=["accuracy"])
        times[name].append(median_ms(lambda n=net: n.train_on_batch(x, y), steps))
    return {
        "batch_norm_layers": sum(
            isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers
        ),
        "step_keras_bn_ms": float(np.mean(times["keras"])),
        "step_fused_bn_ms": float(np.mean(times["fused"])),
        "fused_bn_agrees": agree,
    }


def step_costs(arch: str, size: int, steps: int) -> dict:
    """The parts of one training step of ARCH at SIZE px, in ms per batch of BATCH."""
    import keras
    import tensorflow as tf

    from benchmarks.probes import _build

    model = _build(arch, size, HPARAMS)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (BATCH, size, size, 3)).astype(np.float32)
    y = rng.integers(0, 2, (BATCH, 1)).astype(np.float32)
    pixels = tf.constant(x)
    augment = augmentation_layers(model)
    row: dict = {"arch": arch, "size": size, "batch": BATCH, "params": int(model.count_params())}
    if augment:
        augmenter = keras.Model(model.input, augment[-1].output)
        row["augmentation_ms"] = median_ms(
            tf.function(lambda: augmenter(pixels, training=True)), steps
        )
    else:
        row["augmentation_ms"] = 0.0
    row["forward_ms"] = median_ms(tf.function(lambda: model(pixels, training=True)), steps)
    row["step_ms"] = median_ms(lambda: model.train_on_batch(x, y), steps)
    row["backward_update_ms"] = row["step_ms"] - row["forward_ms"]
    row.update(batch_norm_costs(model, x, y, steps))
    return row


def report(row: dict) -> str:
    step = row["step_ms"]

    def share(ms: float) -> str:
        return f"{ms:7.1f} ms  {ms / step:4.0%}"

    return "\n".join(
        [
            f"{row['arch']} at {row['size']} px, a batch of {row['batch']} "
            f"({row['params']:,} parameters):",
            f"  training step (train_on_batch)   {share(step)}",
            f"    augmentation layers            {share(row['augmentation_ms'])}",
            f"    forward, training mode         {share(row['forward_ms'])}  (augmentation in it)",
            f"    backward and Adam's update     {share(row['backward_update_ms'])}",
            f"  the step with its {row['batch_norm_layers']} BatchNorm layers as Keras computes "
            f"them {row['step_keras_bn_ms']:.1f} ms, through the fused kernel "
            f"{row['step_fused_bn_ms']:.1f} ms (same outputs: {row['fused_bn_agrees']})",
        ]
    )


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default=tricks.ARCH)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 160, 192])
    parser.add_argument("--steps", type=int, default=30, help="timed calls per part")
    parser.add_argument("--out", default="benchmarks/results/stepcost.json")
    args = parser.parse_args(argv)

    from benchmarks.probes import save_result

    rows = []
    for size in args.sizes:
        rows.append(step_costs(args.arch, size, args.steps))
        print(report(rows[-1]), flush=True)
    save_result(args.out, rows=rows)
    return rows


if __name__ == "__main__":
    main()
