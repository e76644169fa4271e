"""Do the fast-training tricks help the long fit? Each one measured on validation.

    python -m benchmarks.tricks [--data PATH] [--sizes 96 128] [--epochs 12 8]
                                [--variants base,smooth,ema,translate,all,
                                            mixup,frozen_bn,whiten,stem_pool,
                                            stem_pool_all,stem_pool_dropout,
                                            stem_pool_mixup,stem_pool_augment,
                                            stem_pool_batch16,stem_pool_rotate10,
                                            stem_pool_rotate10_wd0.4,...,gc,sam]
                                [--seeds 1337]
                                [--limit N] [--keep DIR]
                                [--out benchmarks/results/tricks.json]

Each variant trains the `focus` long fit's usual winner (xception, width 16, Adam at 0.0015,
augment 0.15) through the sizes as `benchmarks.resize` does (the weights and Adam's state carried
across a resize, one cosine over the whole fit), with the variant's hyperparameters on top: label
smoothing, an average of the weights (EMA, validated and kept as `catdog.models.common.EMAWeights`
does in any catdog fit), random translation, or all three. `mixup` (mixing pairs of photos and
their labels) can be asked for too; it is the benchmark's own, not a catdog hyperparameter, as are
the tricks on the built model in `benchmarks.modeltricks` (frozen-scale BatchNorm, gradient
centralisation, SAM), each alone. `whiten` is catdog's patch-whitening first layer (the `whiten`
hyperparameter), adapted to the training photos at the first size and carried after;
`stem_pool` adds the 2x2 pooling after that stem (the `stem_pool` hyperparameter), and is meant
for larger sizes (`--sizes 128 160`); `stem_pool_all` is that with all three of the first tricks
on top, `stem_pool_dropout` with the head's dropout at 0.5, `stem_pool_mixup` with mixup (the
whitening adapted to unmixed photos, as it would be in a catdog fit), `stem_pool_augment` with
`augment` 0.25, `stem_pool_batch16` in training batches of 16 (not BATCH), `stem_pool_rotate10`
with the augmentation's rotation held to 10 degrees (the `rotate` hyperparameter),
`stem_pool_rotate10_wd0.1` and `_wd0.4` that with decoupled weight decay (`weight_decay`). Every
epoch is validated and printed as it ends. The final model is then scored on validation plain,
with flip TTA (what catdog ships when it helps on validation) and with flip+translate TTA (the
photo and its mirror, each also shifted by TTA_SHIFT of its size up, down, left and right: ten
views).
`--keep DIR` saves each final model there, for `benchmarks.testsize` to score at other sizes.
The test split is never read. `--limit N` trains on N of the training photos, for a quick probe
(about a minute per variant, mostly building the graph).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmarks import modeltricks
from benchmarks.resize import DEFAULT_DATA

ARCH = "xception"
BATCH = 32
VALUES = {  # the long fit's usual winner in `make sweep` (experiments/cpu.toml)
    "width": 16,
    "lr": 0.0015,
    "optimizer": "adam",
    "lr_schedule": "constant",  # the cosine over the whole fit is the Clock's
    "augment": 0.15,
}
MIXUP_ALPHA = 0.2
VARIANTS = {
    "base": {},
    "smooth": {"label_smoothing": 0.1},
    "ema": {"ema": True},
    "translate": {"translate": 0.1},
    "all": {"label_smoothing": 0.1, "ema": True, "translate": 0.1},
    "mixup": {},  # the benchmark's own: see `mixed`
    "whiten": {"whiten": True},  # catdog.models.whitening
    "stem_pool": {"whiten": True, "stem_pool": True},  # as cpu.toml trains it: at 128-160 px
}
# The three cheap tricks again, on top of what cpu.toml ships, at the long fit's scale.
VARIANTS["stem_pool_all"] = {**VARIANTS["stem_pool"], **VARIANTS["all"]}
# The head's dropout at the top of its range (Chollet's mini-Xception drops half), where the
# others keep the build's default (0.25): a 6-epoch screen cannot tell what 60 epochs need.
VARIANTS["stem_pool_dropout"] = {**VARIANTS["stem_pool"], "dropout": 0.5}
# Mixup on what cpu.toml ships: the papers find it pays only in long fits, so at their scale.
VARIANTS["stem_pool_mixup"] = dict(VARIANTS["stem_pool"])
MIXUP_VARIANTS = ("mixup", "stem_pool_mixup")  # the benchmark's own: see `mixed`
# Where the long fits overfit (training 0.96, validation 0.89-0.90): stronger augmentation than
# cpu.toml's 0.15, and twice the updates per epoch (batch 16 costs about what 32 does per photo
# on 2 cores at 128-160 px), each on what cpu.toml ships.
VARIANTS["stem_pool_augment"] = {**VARIANTS["stem_pool"], "augment": 0.25}
VARIANTS["stem_pool_batch16"] = dict(VARIANTS["stem_pool"])
BATCHES = {"stem_pool_batch16": 16}  # the training batch where it is not BATCH
# The benchmark's own tricks on the built model (`benchmarks.modeltricks`), each alone.
MODEL_VARIANTS = {name: {name: True} for name in modeltricks.MODEL_TRICKS}
VARIANTS.update({name: {} for name in MODEL_VARIANTS})
# `augment` 0.15 turns photos up to 54 degrees (a rotation's strength is a fraction of a turn);
# photos of pets are rarely turned more than a little: the same with rotations of 10 at most
# (catdog's `rotate`, which cpu.toml now sets; the variant keeps its name for its records).
VARIANTS["stem_pool_rotate10"] = {**VARIANTS["stem_pool"], "rotate": 10}
# What `make sweep`'s default seed trains: its one-trial screen draws the head's dropout, and
# draws 0.0, where every variant above keeps the build's default (0.25).
VARIANTS["stem_pool_rotate10_dropout0"] = {**VARIANTS["stem_pool_rotate10"], "dropout": 0.0}
# Where the long fit overfits after about 40 epochs (training 0.99, validation 0.89-0.91):
# decoupled weight decay (`weight_decay`, AdamW's with Adam) on what cpu.toml ships, at two
# strengths. Over these 48 epochs at a rate of 0.0015 on a cosine, a weight no gradient holds up
# keeps exp(-3.6 * weight_decay) of itself: 70% at 0.1, 24% at 0.4.
for _wd in (0.1, 0.4):
    VARIANTS[f"stem_pool_rotate10_wd{_wd:g}"] = {
        **VARIANTS["stem_pool_rotate10"],
        "weight_decay": _wd,
    }
TTA_SHIFT = 0.08  # of the image's side, for the translated views


def progress(label: str, total: int, size: int, start: float):
    """A callback that prints each epoch as it ends, with the time it took and the time since
    START."""
    import keras

    from catdog.log import format_seconds

    class Progress(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._t = time.monotonic()

        def on_epoch_end(self, epoch, logs=None):
            logs, now = logs or {}, time.monotonic()
            print(
                f"[{label}] epoch {epoch + 1}/{total} at {size}px: loss "
                f"{logs.get('loss', float('nan')):.4f} val_loss "
                f"{logs.get('val_loss', float('nan')):.4f} val_accuracy "
                f"{logs.get('val_accuracy', float('nan')):.4f}  "
                f"({format_seconds(now - self._t)}; {format_seconds(now - start)} in all)",
                flush=True,
            )

    return Progress()


def train_set(root, size: int, seed: int, limit: int | None, batch: int = BATCH):
    """The training split at SIZE in batches of BATCH, shuffled each epoch; LIMIT photos of it
    (a seeded draw)."""
    from catdog import pipeline

    dec = pipeline.decoded(root, "train", size)
    if limit and limit < len(dec.labels):
        idx = np.sort(np.random.default_rng(seed).choice(len(dec.labels), limit, replace=False))
        dec = pipeline.Decoded(
            dec.images[idx], dec.labels[idx], tuple(dec.paths[i] for i in idx), False
        )
    return pipeline.dataset(dec, batch, shuffle=True, seed=seed)


def mixed(ds, alpha: float, seed: int):
    """DS with each photo and its label mixed with another of its batch's, in a proportion
    drawn from Beta(ALPHA, ALPHA) (mixup; two classes, float labels)."""
    import tensorflow as tf

    def mix(x, y):
        n = tf.shape(x)[0]
        a = tf.random.gamma([n], alpha, seed=seed)
        b = tf.random.gamma([n], alpha, seed=seed + 1)
        lam = a / (a + b)
        other = tf.random.shuffle(tf.range(n), seed=seed)
        x = lam[:, None, None, None] * x + (1 - lam[:, None, None, None]) * tf.gather(x, other)
        return x, lam * y + (1 - lam) * tf.gather(y, other)

    return ds.map(mix, num_parallel_calls=tf.data.AUTOTUNE)


def fit_variant(
    root, sizes, epochs, seed, values, limit, label, mixup=False, tricks=None, batch=BATCH
):
    """The model after training VALUES through SIZES (EPOCHS[i] epochs at SIZES[i]) with one
    cosine over the whole fit, and the model TRICKS (`benchmarks.modeltricks`) applied, and its
    val accuracy per epoch. BATCH is the training batch (validation's stays the module's)."""
    import keras

    from catdog import models, pipeline
    from catdog.models.common import ema_callbacks
    from catdog.search.strategies.focus.checkpoint import Clock, carry

    keras.utils.set_random_seed(seed)
    total, start, model, scores, t0 = sum(epochs), 0, None, [], time.monotonic()
    for size, n in zip(sizes, epochs):
        # Unmixed: what a whitening layer adapts to.
        photos = train_set(root, size, seed, limit, batch)
        train = mixed(photos, MIXUP_ALPHA, seed) if mixup else photos
        val = pipeline.dataset(pipeline.decoded(root, "val", size), BATCH, shuffle=False)
        new = models.get(ARCH).build(models.fixed_hyperparameters(values), image_size=size)
        if tricks:
            new = modeltricks.apply(new, tricks, float(values["lr"]))
        if model is not None:
            carry(model, new, True)
        model = new
        clock = Clock(float(values["lr"]), 1.0, total, t0, None, None)
        history = model.fit(
            train,
            validation_data=val,
            initial_epoch=start,
            epochs=start + n,
            verbose=0,
            # EMAWeights first, so every other callback sees the validated weights.
            callbacks=[
                *models.adapt_callbacks(photos),  # a whitening layer: at the first size only
                *ema_callbacks(values),
                clock,
                progress(label, total, size, t0),
            ],
        )
        scores += [float(v) for v in history.history["val_accuracy"]]
        start += n
    return model, scores


def shifted(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """X (n, h, w, c) moved DY rows down and DX columns right, the uncovered edge filled with
    its mirror image (as `RandomTranslation`'s "reflect" fills it in training)."""
    p = max(abs(dy), abs(dx))
    if p == 0:
        return x
    h, w = x.shape[1:3]
    padded = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode="symmetric")
    return padded[:, p - dy : p - dy + h, p - dx : p - dx + w]


def views(x: np.ndarray, shift: int) -> list[np.ndarray]:
    """The TTA views of a batch: the photos, their mirror images, then each of the two shifted
    by SHIFT pixels down, up, right and left."""
    mirror = x[:, :, ::-1, :]
    moves = [(shift, 0), (-shift, 0), (0, shift), (0, -shift)]
    return [x, mirror] + [shifted(v, dy, dx) for v in (x, mirror) for dy, dx in moves]


def tta_accuracies(model, root, size: int) -> dict[str, float]:
    """Val accuracy of MODEL plain, with flip TTA and with flip+translate TTA (the mean of the
    views' class probabilities, as `pipeline.predict` averages the flip)."""
    from catdog import metrics, pipeline

    dec = pipeline.decoded(root, "val", size)
    shift = max(1, round(TTA_SHIFT * size))
    outs: list[list[np.ndarray]] = []
    for i in range(0, len(dec.labels), 64):
        x = np.asarray(dec.images[i : i + 64], np.float32)
        outs.append([np.asarray(model.predict_on_batch(v)) for v in views(x, shift)])
    per_view = [np.concatenate(col) for col in zip(*outs)]

    def accuracy(n_views: int) -> float:
        probs = metrics.probability_matrix(np.mean(per_view[:n_views], axis=0))
        return float(np.mean(metrics.predicted(probs) == dec.labels))

    return {"plain": accuracy(1), "flip": accuracy(2), "flip_translate": accuracy(len(per_view))}


def run_one(root, args, variant: str, seed: int) -> dict:
    import keras

    from catdog.log import format_seconds

    values = {**VALUES, **VARIANTS[variant]}
    label = f"{variant} seed {seed}"
    on_model = MODEL_VARIANTS.get(variant, {})
    batch = BATCHES.get(variant, BATCH)
    tricks = {
        **VARIANTS[variant],
        **on_model,
        **({"mixup": MIXUP_ALPHA} if variant in MIXUP_VARIANTS else {}),
        **({"batch": batch} if batch != BATCH else {}),
    }
    print(f"[{label}] training {ARCH} with {tricks or 'no tricks'}", flush=True)
    t0 = time.monotonic()
    model, scores = fit_variant(
        root,
        args.sizes,
        args.epochs,
        seed,
        values,
        args.limit,
        label,
        variant in MIXUP_VARIANTS,
        on_model,
        batch,
    )
    seconds = time.monotonic() - t0
    print(f"[{label}] scoring the final model with and without TTA on validation", flush=True)
    final = tta_accuracies(model, root, args.sizes[-1])
    if args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=True)
        model.save(Path(args.keep) / f"{variant}-{seed}.keras")
    keras.backend.clear_session()
    best = int(np.argmax(scores))
    print(
        f"[{label}] best val_accuracy {scores[best]:.4f} (epoch {best + 1}); final model "
        f"plain {final['plain']:.4f}, flip {final['flip']:.4f}, flip+translate "
        f"{final['flip_translate']:.4f}; trained in {format_seconds(seconds)}, scored in "
        f"{format_seconds(time.monotonic() - t0 - seconds)}",
        flush=True,
    )
    return {
        "variant": variant,
        "seed": seed,
        "values": values,
        "mixup_alpha": MIXUP_ALPHA if variant in MIXUP_VARIANTS else None,
        "model_tricks": dict(on_model),
        "batch": batch,
        "val_accuracy": scores,
        "best": scores[best],
        "best_epoch": best + 1,
        "final": final,
        "seconds": seconds,
    }


def table(runs: list[dict], variants: list[str]) -> str:
    """One row per variant, its seeds' means."""
    head = (
        f"{'variant':<10} {'best':>7} {'epoch':>6} {'last':>7} {'plain':>7} {'flip':>7} "
        f"{'flip+tr':>8} {'minutes':>8}"
    )
    rows = [head]
    for v in variants:
        rs = [r for r in runs if r["variant"] == v]

        def mean(get, rs=rs):
            return float(np.mean([get(r) for r in rs]))

        rows.append(
            f"{v:<10} {mean(lambda r: r['best']):>7.4f} {mean(lambda r: r['best_epoch']):>6.1f} "
            f"{mean(lambda r: r['val_accuracy'][-1]):>7.4f} "
            f"{mean(lambda r: r['final']['plain']):>7.4f} "
            f"{mean(lambda r: r['final']['flip']):>7.4f} "
            f"{mean(lambda r: r['final']['flip_translate']):>8.4f} "
            f"{mean(lambda r: r['seconds']) / 60:>8.1f}"
        )
    return "\n".join(rows)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--sizes", type=int, nargs="+", default=[96, 128])
    parser.add_argument("--epochs", type=int, nargs="+", default=[12, 8])
    parser.add_argument("--variants", default="base,smooth,ema,translate,all")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1337])
    parser.add_argument("--limit", type=int, default=None, help="train on N photos only")
    parser.add_argument(
        "--keep", default=None, help="save each final model in this folder (.keras)"
    )
    parser.add_argument("--out", default="benchmarks/results/tricks.json")
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    if len(args.sizes) != len(args.epochs):
        parser.error("--sizes and --epochs need one value each per phase")
    from catdog.data import resolve_data
    from catdog.data.prepared import classes
    from catdog.log import setup

    setup()
    root = resolve_data(args.data)
    if len(classes(root)) != 2:
        parser.error("the benchmark's variants (smoothing, mixup) are for two classes")
    out = {
        "arch": ARCH,
        "sizes": args.sizes,
        "epochs": args.epochs,
        "limit": args.limit,
        "tta_shift": TTA_SHIFT,
        "runs": [],
    }
    for seed in args.seeds:
        for variant in variants:
            out["runs"].append(run_one(root, args, variant, seed))
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(out, indent=2))  # kept as it grows
    print(table(out["runs"], variants), flush=True)
    return out


if __name__ == "__main__":
    main()
