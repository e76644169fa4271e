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


def measure(arch: str, splits, image_size: int, hp_values: dict, pretrained: bool,
            batch_size: int) -> tuple[float, float]:
    """(seconds per epoch, seconds of set-up per trial) of ARCH here, from a few real batches.

    Timed through `model.fit` and `model.evaluate` on the sweep's own datasets, so the input
    pipeline's share of the cores is counted: timing `train_on_batch` on batches already in
    memory guessed ResNet's epoch at 12 s on this 2-core CPU, and it took 21 s."""
    import keras

    from catdog import models, runtime

    t0 = time.perf_counter()
    with runtime.strategy().scope():
        model = models.get(arch).build(models.fixed_hyperparameters(hp_values),
                                       image_size=image_size, pretrained=pretrained,
                                       num_classes=splits.num_classes)
    model.fit(splits.train, epochs=1, steps_per_epoch=WARMUP_BATCHES, verbose=0)
    model.evaluate(splits.val, steps=1, verbose=0)
    setup = time.perf_counter() - t0
    t1 = time.perf_counter()
    model.fit(splits.train, epochs=1, steps_per_epoch=TIMED_BATCHES, verbose=0)
    per_batch = (time.perf_counter() - t1) / TIMED_BATCHES
    t2 = time.perf_counter()
    model.evaluate(splits.val, steps=TIMED_BATCHES, verbose=0)
    per_val_batch = (time.perf_counter() - t2) / TIMED_BATCHES
    del model
    keras.backend.clear_session()
    runtime.release_memory()
    steps = math.ceil(splits.sizes["train"] / batch_size)
    val_steps = math.ceil(splits.sizes["val"] / batch_size)
    return per_batch * steps + per_val_batch * val_steps, setup + TRIAL_OVERHEAD_S


BF16_MIN_SPEEDUP = 1.1  # bf16 is chosen only where it trains at least this much faster


def measure_fastest(arch: str, splits, image_size: int, hp_values: dict, pretrained: bool,
                    batch_size: int, candidates: tuple[str, ...]) -> tuple[float, float, str]:
    """(seconds per epoch, set-up per trial, precision) of ARCH in the fastest of CANDIDATES
    (`runtime.precision_candidates`), each timed as `measure` does.

    bf16 is kept only where it is at least BF16_MIN_SPEEDUP times faster than fp32: the same
    model measured 0.77-1.03x on an AVX-512-BF16 AMD EPYC and up to 1.8x with AMX, so the
    choice is per architecture and per machine. A model measured first in a row can come out
    slower than the same model measured after it (on the AMD EPYC, fp32-then-bf16 once read
    2x for bf16 where whole epochs showed none), so a bf16 lead is checked in the opposite
    order, and each precision keeps its faster reading. Models build in float32 again
    afterwards."""
    from catdog import runtime

    def timed(order) -> dict[str, tuple[float, float]]:
        out = {}
        for name in order:
            runtime.set_precision(name)
            out[name] = measure(arch, splits, image_size, hp_values, pretrained, batch_size)
        return out

    try:
        speeds = timed(candidates)
        if {"fp32", "bf16"} <= set(speeds) and \
                speeds["fp32"][0] / speeds["bf16"][0] >= BF16_MIN_SPEEDUP:
            again = timed(tuple(reversed(candidates)))
            speeds = {k: min(speeds[k], again[k]) for k in speeds}
    finally:
        runtime.set_precision(candidates[0])
    chosen = candidates[0]
    if {"fp32", "bf16"} <= set(speeds):
        speedup = speeds["fp32"][0] / speeds["bf16"][0]
        chosen = "bf16" if speedup >= BF16_MIN_SPEEDUP else "fp32"
        log.info("[%s] bf16 trains at %.2fx of fp32's speed at %dpx: %s", arch, speedup,
                 image_size, chosen if chosen == "bf16" else
                 f"fp32 (bf16 pays from {BF16_MIN_SPEEDUP:g}x)")
    return (*speeds[chosen], chosen)
