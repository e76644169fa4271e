"""Probes the measurements are made with: CPU share of other processes, a step/epoch clock,
precision policies, FLOP counts, machine facts, and small helpers to build models and inputs.

TensorFlow, Keras and the catdog modules that load them are imported inside the functions, so
importing this module stays cheap and leaves TensorFlow's logging to be quieted first."""

from __future__ import annotations

import contextlib
import math
import os
import platform
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from benchmarks.settings import (
    BATCH,
    CHUNKS,
    DISTURBED,
    NO_AUGMENT,
    SEED,
    SKIP_STEPS,
    WARMUP_STEPS,
    Settings,
)
from catdog.log import get_logger

log = get_logger(__name__)


class CpuShare:
    """The share of the machine's CPU time that OTHER processes used since creation.

    Read from /proc/stat (all CPUs) minus this process's own user+system time: the bench's
    witness for interference from other jobs on a shared box (None where /proc is absent)."""

    def __init__(self) -> None:
        self._start = self._snapshot()

    @staticmethod
    def _snapshot() -> tuple[int, int, float] | None:
        try:
            with open("/proc/stat") as f:
                ticks = [int(v) for v in f.readline().split()[1:9]]
        except (OSError, ValueError):
            return None
        total = sum(ticks)
        own = sum(os.times()[:2]) * os.sysconf("SC_CLK_TCK")
        return total, total - ticks[3] - ticks[4], own  # total, busy (not idle/iowait), own

    def others(self) -> float | None:
        end = self._snapshot()
        if self._start is None or end is None or end[0] <= self._start[0]:
            return None
        total, busy, own = (e - s for e, s in zip(end, self._start))
        return min(max((busy - own) / total, 0.0), 1.0)


def median_ms(fn, reps: int, warmup: int = 3) -> float:
    """The median of REPS timed calls of FN, in milliseconds, after WARMUP untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def _clock():
    """A Keras callback recording when each training step and each epoch ends, and how much
    of the CPU other processes took during each epoch."""
    import keras

    class Clock(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.step_ends: list[float] = []
            self.epoch_seconds: list[float] = []
            self.epoch_others: list[float | None] = []

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch_start, self._cpu = time.perf_counter(), CpuShare()

        def on_train_batch_end(self, batch, logs=None):
            self.step_ends.append(time.perf_counter())

        def on_epoch_end(self, epoch, logs=None):  # after validation: it is part of the epoch
            self.epoch_seconds.append(time.perf_counter() - self._epoch_start)
            self.epoch_others.append(self._cpu.others())

    return Clock()


@contextlib.contextmanager
def precision(name: str) -> Iterator[str]:
    """Build models under a precision policy inside the block; fp32 again afterwards."""
    import keras

    from catdog import runtime

    keras.backend.clear_session()
    try:
        yield runtime.set_precision(name)
    finally:
        runtime.set_precision("fp32")


def _build(arch: str, size: int, hparams: dict | None = NO_AUGMENT):
    import keras

    from catdog import models

    keras.backend.clear_session()
    keras.utils.set_random_seed(SEED)
    return models.get(arch).build(models.fixed_hyperparameters(hparams), image_size=size)


def train_throughput(model, ds, batch: int, settings: Settings) -> dict:
    """Training images/s of `model` on an endless dataset, after a warm-up that traces it.

    The warm-up's last steps size the timed window to about `settings.throughput_seconds`;
    rates are taken between step ends, so fit's start-up is left out. The window is cut into
    CHUNKS equal runs of steps: `images_per_s` is the fastest chunk (interference from other
    jobs only ever slows a chunk down), `images_per_s_mean` the whole window. A window in
    which other processes took more than DISTURBED of the CPU is measured once more and the
    less disturbed of the two kept."""
    clock = _clock()
    model.fit(ds.take(WARMUP_STEPS), epochs=1, verbose=0, callbacks=[clock])
    step = float(np.median(np.diff(clock.step_ends[1:])))
    steps = int(
        min(
            max(math.ceil(settings.throughput_seconds / max(step, 1e-6)), 3 * CHUNKS),
            settings.max_steps,
        )
    )
    best: dict | None = None
    for attempt in (1, 2):
        cpu = CpuShare()
        model.fit(ds.take(steps + SKIP_STEPS + 1), epochs=1, verbose=0, callbacks=[clock])
        others = cpu.others()
        ends = np.asarray(clock.step_ends[SKIP_STEPS:])
        seconds = float(ends[-1] - ends[0])
        bounds = np.linspace(0, len(ends) - 1, CHUNKS + 1).round().astype(int)
        chunk_rates = [
            float((b - a) * batch / (ends[b] - ends[a])) for a, b in zip(bounds, bounds[1:])
        ]
        m = {
            "images_per_s": max(chunk_rates),
            "images_per_s_mean": steps * batch / seconds,
            "chunk_images_per_s": [round(r, 2) for r in chunk_rates],
            "steps": steps,
            "seconds": seconds,
            "others_cpu_share": others,
        }
        if best is None or (others or 0) < (best["others_cpu_share"] or 0):
            best = m
        if (others or 0) <= DISTURBED:
            break
        log.info(
            "other processes took %.0f%% of the CPU during this measurement%s",
            100 * others,
            "; measuring again" if attempt == 1 else "",
        )
    return {**best, "attempts": attempt}


def training_flops(model) -> dict:
    """Forward and training FLOPs per image, counted from the layers that dominate them.

    Conv2D 2*Ho*Wo*K*K*Cin*Cout; DepthwiseConv2D 2*Ho*Wo*K*K*Cin*m; SeparableConv2D its
    depthwise plus pointwise (2*Ho*Wo*Cin*m*Cout) parts; Dense 2*in*out. Training counts 3x the
    forward pass for a layer with trainable weights (forward, input and weight gradients), 2x
    for a frozen layer that gradients pass through, 1x for a frozen layer before any trainable
    one (a frozen backbone at the input needs no backward pass)."""
    totals = {"forward": 0.0, "train": 0.0}
    _count_flops(model, totals, seen_trainable=False)
    return {"forward_gflop": totals["forward"] / 1e9, "train_gflop": totals["train"] / 1e9}


def _count_flops(model, totals: dict, seen_trainable: bool) -> bool:
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            seen_trainable = _count_flops(layer, totals, seen_trainable)
            continue
        forward = _layer_flops(layer)
        trainable = bool(layer.trainable and layer.trainable_weights)
        factor = 3 if trainable else (2 if seen_trainable else 1)
        seen_trainable = seen_trainable or trainable
        totals["forward"] += forward
        totals["train"] += factor * forward
    return seen_trainable


def _layer_flops(layer) -> float:
    from keras import layers

    if not isinstance(
        layer, (layers.Conv2D, layers.DepthwiseConv2D, layers.SeparableConv2D, layers.Dense)
    ):
        return 0.0
    out = layer.output.shape
    c_in = layer.input.shape[-1]
    if isinstance(layer, layers.Dense):
        return 2.0 * math.prod(out[1:-1]) * c_in * out[-1]
    h, w, c_out = out[1], out[2], out[3]
    k = math.prod(layer.kernel_size)
    if isinstance(layer, layers.Conv2D):
        return 2.0 * h * w * k * (c_in // layer.groups) * c_out
    mult = layer.depth_multiplier
    depthwise = 2.0 * h * w * k * c_in * mult
    if isinstance(layer, layers.DepthwiseConv2D):
        return depthwise
    return depthwise + 2.0 * h * w * c_in * mult * c_out


def _cached_rate(dec, passes: int = 3) -> dict:
    """Images/s of full passes over catdog's cached dataset (batch 32, shuffled)."""
    from catdog import pipeline

    ds = pipeline.dataset(dec, BATCH, shuffle=True, seed=SEED)
    rates = []
    cpu = CpuShare()
    for _ in range(passes):
        t0, n = time.perf_counter(), 0
        for x, _y in ds:
            n += int(x.shape[0])
        rates.append(n / (time.perf_counter() - t0))
    return {
        "images_per_s": float(np.mean(rates)),
        "passes": [round(r, 1) for r in rates],
        "others_cpu_share": cpu.others(),
    }


def _notebook_dataset(root: Path, split: str, size: int, shuffle: bool = True):
    """The notebook's input pipeline: decode every epoch, divide by 255 in a map, no prefetch."""
    import keras

    ds = keras.utils.image_dataset_from_directory(
        root / "images" / split,
        image_size=(size, size),
        batch_size=BATCH,
        shuffle=shuffle,
        seed=SEED,
        verbose=False,
    )
    return ds.map(lambda x, y: (x / 255.0, y))


def _split_sizes(root: Path) -> dict[str, int]:
    from catdog.data.prepare import read_summary

    counts = read_summary(root)["counts"]
    return {split: int(sum(by_label.values())) for split, by_label in counts.items()}


def machine_info() -> dict:
    import keras
    import tensorflow as tf

    from catdog import runtime

    cpu = platform.processor() or platform.machine() or "unknown"  # macOS: no /proc
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as lines:
        for line in lines:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cpu_bf16": runtime.cpu_has_bf16(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": sys.version.split()[0],
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
        "loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def save_result(out: str | Path, **payload) -> None:
    """A standalone benchmark's JSON at OUT: this machine's description and PAYLOAD."""
    import json

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine_info(), **payload}, indent=2))
