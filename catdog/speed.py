"""How fast an architecture trains on this machine: seconds per epoch and per-trial set-up,
measured on a few real batches, and the precision it trains fastest in. A sweep's plan
(`catdog.plan`) is built from these figures."""

from __future__ import annotations

import math
import time

from catdog.log import get_logger

log = get_logger(__name__)

# Per trial, beyond its epochs: building, compiling and tracing the model, and logging its
# curves, confusion matrix and (for a new best) the model itself. Measured on this 2-core CPU:
# 8-15 s at 64-128 px; the probe's own compile time is added to it.
TRIAL_OVERHEAD_S = 8.0
WARMUP_BATCHES = 2
TIMED_BATCHES = 10
# When two precisions are compared, each reading trains up to one whole epoch, stopped after
# this many seconds: ten batches read bf16 anywhere from 0.68x to 2x of fp32 on the
# same AMD EPYC, where whole epochs showed no difference.
PRECISION_TIMED_SECONDS = 12.0


def measure(
    arch: str,
    splits,
    image_size: int,
    hp_values: dict,
    pretrained: bool,
    batch_size: int,
    seconds: float | None = None,
) -> tuple[float, float]:
    """(seconds per epoch, seconds of set-up per trial) of ARCH here, from real batches:
    TIMED_BATCHES of them, or with SECONDS, as many of one epoch's batches as fit in SECONDS.

    Timed through `model.fit` and `model.evaluate` on the sweep's own datasets, so the input
    pipeline's share of the cores is counted: timing `train_on_batch` on batches already in
    memory guessed ResNet's epoch at 12 s on this 2-core CPU, and it took 21 s."""
    import keras

    from catdog import models, runtime

    steps = math.ceil(splits.sizes["train"] / batch_size)
    val_steps = math.ceil(splits.sizes["val"] / batch_size)
    t0 = time.perf_counter()
    with runtime.strategy().scope():
        model = models.get(arch).build(
            models.fixed_hyperparameters(hp_values),
            image_size=image_size,
            pretrained=pretrained,
            num_classes=splits.num_classes,
        )
    model.fit(splits.train, epochs=1, steps_per_epoch=WARMUP_BATCHES, verbose=0)
    model.evaluate(splits.val, steps=1, verbose=0)
    setup = time.perf_counter() - t0
    per_batch = _seconds_per_batch(
        model, splits.train, steps if seconds else min(TIMED_BATCHES, steps), seconds
    )
    t2 = time.perf_counter()
    val_timed = min(TIMED_BATCHES, val_steps)  # a split of fewer batches runs out of data
    model.evaluate(splits.val, steps=val_timed, verbose=0)
    per_val_batch = (time.perf_counter() - t2) / val_timed
    del model
    keras.backend.clear_session()
    runtime.release_memory()
    return per_batch * steps + per_val_batch * val_steps, setup + TRIAL_OVERHEAD_S


def _seconds_per_batch(model, dataset, batches: int, seconds: float | None) -> float:
    """Seconds per training batch over up to BATCHES batches, stopping once SECONDS have passed
    (if given); the batches counted are the ones that ran."""
    import keras

    t0 = time.perf_counter()
    done: list[float] = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            done.append(time.perf_counter())
            if seconds is not None and done[-1] - t0 >= seconds:
                self.model.stop_training = True  # Keras checks it after every batch

    model.fit(dataset, epochs=1, steps_per_epoch=batches, verbose=0, callbacks=[Clock()])
    return (done[-1] - t0) / len(done) if done else time.perf_counter() - t0


BF16_MIN_SPEEDUP = 1.1  # bf16 is chosen only where it trains at least this much faster


def measure_fastest(
    arch: str,
    splits,
    image_size: int,
    hp_values: dict,
    pretrained: bool,
    batch_size: int,
    candidates: tuple[str, ...],
) -> tuple[float, float, str]:
    """(seconds per epoch, set-up per trial, precision) of ARCH in the fastest of CANDIDATES
    (`runtime.precision_candidates`, which offers bf16 only on a CPU with AMX).

    One candidate is timed as `measure` does. Two are each timed for up to an epoch
    (PRECISION_TIMED_SECONDS), and bf16 is kept only where it is at least BF16_MIN_SPEEDUP
    times faster than fp32 in that reading AND in a second one taken in the opposite order: a
    model measured first in a row can come out slower than the same model measured after it
    (on an AMD EPYC, fp32-then-bf16 once read 2x for bf16 where whole epochs showed none). The
    same model trained 0.77-1.03x in bf16 on that AVX-512-BF16 EPYC and up to 1.8x with AMX,
    so the choice is per architecture and per machine. Each precision keeps its faster
    reading. Models build in float32 again afterwards."""
    from catdog import runtime

    seconds = PRECISION_TIMED_SECONDS if len(candidates) > 1 else None

    def timed(order) -> dict[str, tuple[float, float]]:
        out = {}
        for name in order:
            runtime.set_precision(name)
            out[name] = measure(
                arch, splits, image_size, hp_values, pretrained, batch_size, seconds=seconds
            )
        return out

    try:
        speeds = timed(candidates)
        leads = [bf16_speedup(speeds)]
        if leads[0] is not None and leads[0] >= BF16_MIN_SPEEDUP:
            again = timed(tuple(reversed(candidates)))
            leads.append(bf16_speedup(again))
            speeds = {k: min(speeds[k], again[k]) for k in speeds}
    finally:
        runtime.set_precision(candidates[0])
    chosen = candidates[0]
    if leads[0] is not None:
        chosen = "bf16" if all(x >= BF16_MIN_SPEEDUP for x in leads) and len(leads) == 2 else "fp32"
        log.info(
            "[%s] bf16 trains at %s of fp32's speed at %dpx: %s",
            arch,
            " then ".join(f"{x:.2f}x" for x in leads),
            image_size,
            chosen
            if chosen == "bf16"
            else f"fp32 (bf16 pays from {BF16_MIN_SPEEDUP:g}x, in both orders)",
        )
    return (*speeds[chosen], chosen)


def bf16_speedup(speeds: dict[str, tuple[float, float]]) -> float | None:
    """fp32's seconds per epoch over bf16's in one reading, or None when not both were timed."""
    if not {"fp32", "bf16"} <= set(speeds):
        return None
    return speeds["fp32"][0] / speeds["bf16"][0]


INFERENCE_BATCH = 32
INFERENCE_REPEATS = 7  # timed calls per figure, after one untimed call that traces the model


def inference_ms(model, images, repeats: int = INFERENCE_REPEATS) -> tuple[float, float]:
    """(ms for one image, ms per image in a batch of INFERENCE_BATCH) of MODEL here: the median
    of REPEATS `predict_on_batch` calls each, on IMAGES (raw pixels; repeated to fill a batch)."""
    import numpy as np

    images = np.asarray(images, dtype=np.float32)
    one = images[:1]
    batch = np.resize(images, (INFERENCE_BATCH, *images.shape[1:]))

    def median_seconds(x) -> float:
        model.predict_on_batch(x)  # traces the predict function for this shape
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model.predict_on_batch(x)
            times.append(time.perf_counter() - t0)
        return float(np.median(times))

    return median_seconds(one) * 1000, median_seconds(batch) * 1000 / INFERENCE_BATCH
