"""catdog's performance benchmark: where the time goes, as ratios measured within one run.

    python -m catdog.bench [--data PATH] [--out bench/results/bench.json] [--quick]
    make bench [DATA=path]

DATA (default ../shared/data/dogs-vs-cats-mini beside the repository) is anything `catdog`
accepts: a prepared dataset, a zip or an unpacked folder (prepared once under ./data/prepared).
The bench prints a plain-text table and writes the same figures as JSON to
bench/results/bench-<UTC timestamp>.json (or --out), with a copy named latest.json beside it.
`--quick` shrinks everything (a few hundred images, tiny sizes, 1-epoch sweep trials) so a
smoke test finishes in a few minutes; its numbers only show that every item runs.

Items (each a function returning a dict; the table is rendered from those dicts):

1. ceiling     matmul GFLOP/s in float32, bfloat16 and float16 (unless absurdly slow)
2. pipeline    images/s of the input pipeline alone: catdog's first pass (decode+resize into
               the cache), catdog's cached passes, and the notebook's image_dataset_from_directory
3. training    training images/s of every architecture at its default size, fp32 and bf16, and
               achieved GFLOP/s (counted from Conv/SeparableConv/Depthwise/Dense layers,
               training = 3x forward for trainable layers) as a fraction of the ceiling
4. notebook    epoch 2 wall time (training + validation) of the notebook as written against
               catdog's bn_dropout at the same size, batch and seed; validation accuracy of each
5. sweep       a tracked random-search sweep (8 trials): per-trial peak RSS, time outside
               model.fit, and decodes per image
6. scaling     one epoch of `baseline` and its cache memory at 1/4, 1/2 and all of the train
               split, at two image sizes

Every run is self-contained: MLflow logs to a sqlite file in a scratch directory (also the
working directory, so tuner state and caches land there) that is deleted at the end. Absolute
numbers drift with whatever else runs on the machine; compare the ratios, which are measured
within the same run. The sweep runs right after the ceiling so that its trials' peak RSS
(ru_maxrss, a process-wide high-water mark) is not hidden by the larger caches of later items.

On a shared box, every measurement also records "others": the share of the machine's CPU that
other processes used meanwhile (/proc/stat minus this process). Throughput is the fastest of
three runs of steps in its window, a window where others took over 25% is measured once more,
and the table flags what stayed disturbed with '!'.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

import catdog
from catdog.log import get_logger, setup

log = get_logger(__name__)

REPO = Path(catdog.__file__).resolve().parents[1]
DEFAULT_DATA = Path(catdog.__file__).resolve().parents[2] / "shared" / "data" / "dogs-vs-cats-mini"
RESULTS_DIR = REPO / "bench" / "results"
SEED = 1337
BATCH = 32
WARMUP_STEPS = 4  # the first traces the train function; the others calibrate the timed window
SKIP_STEPS = 1  # steps at the start of a timed fit left out (iterator start-up)
CHUNKS = 3  # a timed window is cut into this many runs of steps; the fastest is reported
DISTURBED = 0.25  # other processes' CPU share above which a measurement is retried / flagged
CONV_FAMILIES = ("notebook", "vgg", "resnet", "xception")  # from scratch; `transfer` is frozen
NO_AUGMENT = {"augment": 0.0}


@dataclass(frozen=True)
class Settings:
    """Sizes of every item; FULL is the real bench, QUICK a smoke run."""

    quick: bool
    matmul_n: int
    matmul_reps: int
    matmul_budget_seconds: float
    pipeline_sizes: tuple[int, ...]  # ascending; the largest is the notebook's size
    arch_size: int | None  # None: each architecture's default size
    throughput_seconds: float  # timed window of one training-throughput measurement
    max_steps: int
    notebook_epochs: int
    sweep_trials: int  # per architecture
    sweep_epochs: int
    sweep_size: int
    scaling_sizes: tuple[int, ...]
    scaling_fractions: tuple[float, ...] = (0.25, 0.5, 1.0)
    quick_per_class: int = 0  # quick: train+val images per class in the subset

    @property
    def notebook_size(self) -> int:
        return max(self.pipeline_sizes)


FULL = Settings(quick=False, matmul_n=2048, matmul_reps=20, matmul_budget_seconds=8.0,
                pipeline_sizes=(128, 256), arch_size=None, throughput_seconds=15.0,
                max_steps=400, notebook_epochs=2, sweep_trials=4, sweep_epochs=2, sweep_size=64,
                scaling_sizes=(64, 128))
QUICK = Settings(quick=True, matmul_n=1024, matmul_reps=10, matmul_budget_seconds=1.0,
                 pipeline_sizes=(32, 64), arch_size=48, throughput_seconds=1.0, max_steps=40,
                 notebook_epochs=2, sweep_trials=2, sweep_epochs=1, sweep_size=32,
                 scaling_sizes=(32, 48), quick_per_class=100)


# ------------------------------------------------------------------------------------ helpers
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
    from catdog.train import fixed_hyperparameters

    keras.backend.clear_session()
    keras.utils.set_random_seed(SEED)
    return models.get(arch).build(fixed_hyperparameters(hparams), image_size=size)


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
    steps = int(min(max(math.ceil(settings.throughput_seconds / max(step, 1e-6)), 3 * CHUNKS),
                    settings.max_steps))
    best: dict | None = None
    for attempt in (1, 2):
        cpu = CpuShare()
        model.fit(ds.take(steps + SKIP_STEPS + 1), epochs=1, verbose=0, callbacks=[clock])
        others = cpu.others()
        ends = np.asarray(clock.step_ends[SKIP_STEPS:])
        seconds = float(ends[-1] - ends[0])
        bounds = np.linspace(0, len(ends) - 1, CHUNKS + 1).round().astype(int)
        chunk_rates = [float((b - a) * batch / (ends[b] - ends[a]))
                       for a, b in zip(bounds, bounds[1:])]
        m = {"images_per_s": max(chunk_rates), "images_per_s_mean": steps * batch / seconds,
             "chunk_images_per_s": [round(r, 2) for r in chunk_rates], "steps": steps,
             "seconds": seconds, "others_cpu_share": others}
        if best is None or (others or 0) < (best["others_cpu_share"] or 0):
            best = m
        if (others or 0) <= DISTURBED:
            break
        log.info("other processes took %.0f%% of the CPU during this measurement%s",
                 100 * others, "; measuring again" if attempt == 1 else "")
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

    if not isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D, layers.SeparableConv2D,
                              layers.Dense)):
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
    return {"images_per_s": float(np.mean(rates)), "passes": [round(r, 1) for r in rates],
            "others_cpu_share": cpu.others()}


def _notebook_dataset(root: Path, split: str, size: int, shuffle: bool = True):
    """The notebook's input pipeline: decode every epoch, divide by 255 in a map, no prefetch."""
    import keras

    ds = keras.utils.image_dataset_from_directory(
        root / "images" / split, image_size=(size, size), batch_size=BATCH, shuffle=shuffle,
        seed=SEED, verbose=False)
    return ds.map(lambda x, y: (x / 255.0, y))


def _split_sizes(root: Path) -> dict[str, int]:
    from catdog.data.prepare import read_summary

    counts = read_summary(root)["counts"]
    return {split: int(sum(by_label.values())) for split, by_label in counts.items()}


# ------------------------------------------------------------------------- 1. matmul ceiling
def ceiling(settings: Settings) -> dict:
    """Matmul GFLOP/s per dtype: what the cores can do on the best-case kernel.

    `gflops` is from the fastest repetition (a ceiling; other jobs only slow reps down),
    `gflops_mean` from all of them."""
    import tensorflow as tf

    n = settings.matmul_n
    flop = 2.0 * n**3
    base = tf.random.uniform((n, n), seed=SEED)
    out: dict[str, Any] = {"n": n}
    fp32_rep = None
    for name, dtype in (("float32", tf.float32), ("bfloat16", tf.bfloat16),
                        ("float16", tf.float16)):
        a, b = tf.cast(base, dtype), tf.cast(tf.transpose(base), dtype)
        t0 = time.perf_counter()
        float(tf.linalg.matmul(a, b)[0, 0])  # first call: kernel selection, primitive creation
        first = time.perf_counter() - t0
        if fp32_rep is not None and first > max(2.0, 50 * fp32_rep):
            out[name] = {"gflops": flop / first / 1e9, "reps": 1, "skipped":
                         f"one {n}x{n} matmul took {first:.1f}s ({first / fp32_rep:.0f}x float32)"}
            log.info("ceiling %s: %.1f GFLOP/s from one call; too slow to repeat", name,
                     out[name]["gflops"])
            continue
        float(tf.linalg.matmul(a, b)[0, 0])
        times: list[float] = []
        cpu, t_start = CpuShare(), time.perf_counter()
        while len(times) < settings.matmul_reps and (
                len(times) < 3 or time.perf_counter() - t_start < settings.matmul_budget_seconds):
            t0 = time.perf_counter()
            float(tf.linalg.matmul(a, b)[0, 0])
            times.append(time.perf_counter() - t0)
        out[name] = {"gflops": flop / min(times) / 1e9, "gflops_mean": flop / np.mean(times) / 1e9,
                     "reps": len(times), "others_cpu_share": cpu.others()}
        if name == "float32":
            fp32_rep = float(np.mean(times))
        log.info("ceiling %s: %.1f GFLOP/s best, %.1f mean (%d reps)", name,
                 out[name]["gflops"], out[name]["gflops_mean"], len(times))
    for name in ("bfloat16", "float16"):
        out[name]["vs_float32"] = out[name]["gflops"] / out["float32"]["gflops"]
    return out


# -------------------------------------------------------------------- 2. input pipeline alone
def input_pipeline(root: Path, settings: Settings) -> dict:
    """Images/s with no model: catdog's decode pass, its cached passes, the notebook's pass.

    Sizes run in ascending order, so the largest (the notebook comparison's) stays cached for
    item 4 (each first pass clears the process-level cache to time a real decode)."""
    from catdog import pipeline

    rows = []
    for size in settings.pipeline_sizes:
        pipeline.clear_cache()
        t0 = time.perf_counter()
        dec = pipeline.decoded(root, "train", size)
        first = time.perf_counter() - t0
        n = len(dec.labels)
        cached = _cached_rate(dec)
        row = {"size": size, "images": n, "cache_mb": dec.nbytes / 1e6,
               "first_pass_seconds": first, "first_pass_images_per_s": n / first,
               "cached_images_per_s": cached["images_per_s"], "cached_passes": cached["passes"],
               "cached_others_cpu_share": cached["others_cpu_share"]}
        if size == settings.notebook_size:
            ds = _notebook_dataset(root, "train", size)
            cpu, t0, seen = CpuShare(), time.perf_counter(), 0
            for x, _y in ds:
                seen += int(x.shape[0])
            row["notebook_images_per_s"] = seen / (time.perf_counter() - t0)
            row["notebook_others_cpu_share"] = cpu.others()
            row["cached_vs_notebook"] = row["cached_images_per_s"] / row["notebook_images_per_s"]
            row["first_pass_vs_notebook"] = (row["first_pass_images_per_s"]
                                             / row["notebook_images_per_s"])
        log.info("pipeline %dpx: first pass %.0f images/s, cached %.0f images/s%s", size,
                 row["first_pass_images_per_s"], row["cached_images_per_s"],
                 f", notebook {row['notebook_images_per_s']:.0f} images/s"
                 if "notebook_images_per_s" in row else "")
        rows.append(row)
    return {"batch": BATCH, "rows": rows}


# --------------------------------------------------------------- 3. training throughput
def training(root: Path, settings: Settings, ceil: dict, pipe: dict) -> dict:
    """Training images/s and achieved FLOP/s of every architecture, fp32 and bf16."""
    from catdog import models, pipeline

    pipe_rates = {r["size"]: r["cached_images_per_s"] for r in pipe.get("rows", [])}
    rows = []
    variants = [(name, NO_AUGMENT) for name in models.names()]
    variants.append(("bn_dropout", None))  # its default hyperparameters: augment 0.1
    for arch, hparams in variants:
        entry = models.get(arch)
        size = settings.arch_size or entry.default_image_size
        dec = pipeline.decoded(root, "train", size)
        if size not in pipe_rates:
            pipe_rates[size] = _cached_rate(dec)["images_per_s"]
        ds = pipeline.dataset(dec, BATCH, shuffle=True, seed=SEED).repeat()
        label = arch if hparams is not None else f"{arch} +augment 0.1"
        row: dict[str, Any] = {"arch": label, "family": entry.family, "size": size,
                               "pipeline_images_per_s": pipe_rates[size]}
        precisions = ("fp32", "bf16") if hparams is not None else ("fp32",)
        for prec in precisions:
            with precision(prec):
                model = _build(arch, size, hparams)
                if prec == "fp32":
                    row.update(training_flops(model), params=int(model.count_params()))
                m = train_throughput(model, ds, BATCH, settings)
            gflops = row["train_gflop"] * m["images_per_s"]
            dtype = "float32" if prec == "fp32" else "bfloat16"
            row[prec] = {**m, "gflops": gflops,
                         "ceiling_fraction": gflops / ceil[dtype]["gflops"] if dtype in ceil
                         else None,
                         "pipeline_ratio": pipe_rates[size] / m["images_per_s"]}
            log.info("training %s %dpx %s: %.1f images/s, %.1f GFLOP/s", label, size, prec,
                     m["images_per_s"], gflops)
        if "bf16" in row:
            row["bf16_speedup"] = row["bf16"]["images_per_s"] / row["fp32"]["images_per_s"]
        rows.append(row)
    main_rows = [r for r in rows if "bf16" in r]
    fastest = max(((r, p) for r in main_rows for p in ("fp32", "bf16")),
                  key=lambda rp: rp[0][rp[1]]["images_per_s"])
    r, p = fastest
    return {"batch": BATCH, "rows": rows, "pipeline_images_per_s": pipe_rates,
            "fastest": {"arch": r["arch"], "precision": p, "size": r["size"],
                        "images_per_s": r[p]["images_per_s"],
                        "pipeline_images_per_s": r["pipeline_images_per_s"],
                        "pipeline_ratio": r[p]["pipeline_ratio"]}}


# ------------------------------------------------------- 4. one epoch end to end vs notebook
def notebook_model(size: int):
    """The notebooks' CNN as written: no Rescaling layer (the map divides), no augmentation."""
    import keras
    from keras import layers

    keras.backend.clear_session()
    keras.utils.set_random_seed(SEED)
    stack: list = [keras.Input((size, size, 3))]
    for filters in (32, 64, 128):
        stack += [layers.Conv2D(filters, 3, padding="valid", activation="relu"),
                  layers.BatchNormalization(), layers.MaxPooling2D(2, strides=2)]
    stack += [layers.Flatten(), layers.Dense(128, activation="relu"), layers.Dropout(0.1),
              layers.Dense(64, activation="relu"), layers.Dropout(0.1),
              layers.Dense(1, activation="sigmoid")]
    model = keras.Sequential(stack, name="notebook")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy",
                  metrics=["accuracy"])
    return model


def _fit_epochs(model, train, val, epochs: int) -> dict:
    clock = _clock()
    history = model.fit(train, validation_data=val, epochs=epochs, verbose=0, callbacks=[clock])
    h = history.history
    return {"epoch_seconds": clock.epoch_seconds, "epoch_last_seconds": clock.epoch_seconds[-1],
            "epoch_others_cpu_share": clock.epoch_others,
            "val_accuracy": float(h["val_accuracy"][-1]), "accuracy": float(h["accuracy"][-1])}


def versus_notebook(root: Path, settings: Settings, pipe: dict) -> dict:
    """The last of N epochs (training + validation) of the notebook and of catdog's bn_dropout."""
    from catdog import pipeline

    size, epochs = settings.notebook_size, settings.notebook_epochs
    sizes = _split_sizes(root)
    runs: dict[str, dict] = {}

    log.info("notebook as written: %d epochs at %dpx", epochs, size)
    model = notebook_model(size)
    runs["notebook fp32"] = _fit_epochs(model, _notebook_dataset(root, "train", size),
                                        _notebook_dataset(root, "val", size), epochs)
    flops = training_flops(model)
    for prec in ("fp32", "bf16"):
        log.info("catdog bn_dropout %s: %d epochs at %dpx", prec, epochs, size)
        with precision(prec):
            splits = pipeline.load(root, size, BATCH, seed=SEED)
            model = _build("bn_dropout", size)
            runs[f"catdog {prec}"] = _fit_epochs(model, splits.train, splits.val, epochs)
    base = runs["notebook fp32"]
    for name, run in runs.items():
        run["batch"] = BATCH
        run["vs_notebook"] = run["epoch_last_seconds"] / base["epoch_last_seconds"]
        run["val_accuracy_delta"] = run["val_accuracy"] - base["val_accuracy"]
        log.info("%s: epoch %d %.1fs (x%.2f of the notebook), val_accuracy %.4f", name, epochs,
                 run["epoch_last_seconds"], run["vs_notebook"], run["val_accuracy"])

    # Levers, as training throughput only (same model, cached pipeline): precision x batch.
    dec = pipeline.decoded(root, "train", size)
    levers = []
    for prec in ("fp32", "bf16"):
        for batch in (32, 64):
            with precision(prec):
                model = _build("bn_dropout", size)
                ds = pipeline.dataset(dec, batch, shuffle=True, seed=SEED).repeat()
                m = train_throughput(model, ds, batch, settings)
            levers.append({"precision": prec, "batch": batch, **m,
                           "gflops": flops["train_gflop"] * m["images_per_s"]})
            log.info("lever bn_dropout %dpx %s batch %d: %.1f images/s", size, prec, batch,
                     m["images_per_s"])
    ref = levers[0]["images_per_s"]
    for lever in levers:
        lever["speedup"] = lever["images_per_s"] / ref
    at_batch = {lv["precision"]: lv for lv in levers if lv["batch"] == BATCH}

    # Why: the share of the notebook's epoch that is model compute, which no pipeline touches.
    pipe_row = next((r for r in pipe.get("rows", []) if r["size"] == size), {})
    nb_rate = pipe_row.get("notebook_images_per_s")
    compute = {prec: sizes["train"] / lv["images_per_s"] for prec, lv in at_batch.items()}
    why = {"train_images": sizes["train"], "val_images": sizes["val"],
           "compute_seconds": compute,
           "compute_others_cpu_share": {prec: lv["others_cpu_share"]
                                        for prec, lv in at_batch.items()},
           "compute_share_of_notebook_epoch": {prec: c / base["epoch_last_seconds"]
                                               for prec, c in compute.items()},
           "catdog_decode_seconds_once": (sizes["train"] + sizes["val"])
           / pipe_row["first_pass_images_per_s"] if pipe_row else None,
           "notebook_pipeline_seconds": (sizes["train"] + sizes["val"]) / nb_rate
           if nb_rate else None}
    return {"size": size, "epochs": epochs, "train_gflop_per_image": flops["train_gflop"],
            "runs": runs, "levers": levers, "why": why}


# ------------------------------------------------------------------------------- 5. sweep
def sweep_costs(root: Path, settings: Settings) -> dict:
    """A tracked random-search sweep; per-trial RSS, time outside fit, and decodes per image."""
    import mlflow

    from catdog import experiment, pipeline, sweep, tracking
    from catdog.data.prepare import read_summary

    archs = ["baseline", "bn_dropout"]
    cfg = experiment.load(None, archs=archs, tuner="random", trials=settings.sweep_trials,
                          epochs=settings.sweep_epochs, image_size=settings.sweep_size,
                          data=str(root))
    sizes = _split_sizes(root)
    digest = read_summary(root)["digest"]
    pipeline.clear_cache()
    before = {s: pipeline.DECODES[(digest, s, cfg.image_size)] for s in ("train", "val")}
    cpu = CpuShare()
    result = sweep.run(cfg, fresh=True)
    others = cpu.others()
    decodes = sum(pipeline.DECODES[(digest, s, cfg.image_size)] - before[s] for s in before)

    tracking.configure()
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(cfg.experiment)
    runs = client.search_runs(
        [exp.experiment_id], f"tags.`catdog.sweep_key` = '{result.key}' and "
        "tags.`catdog.kind` = 'trial'", max_results=1000, order_by=["attributes.start_time ASC"])
    trials = []
    for run in (r for r in runs if r.info.status == "FINISHED"):
        m = run.data.metrics
        fit, overhead = m.get("fit_seconds", float("nan")), m.get("overhead_seconds", float("nan"))
        # fit_seconds wraps KerasTuner's run_trial, which also builds and compiles the model;
        # the epochs themselves (training + validation) are what EpochLogger timed.
        epochs = sum(x.value for x in client.get_metric_history(run.info.run_id, "epoch_seconds"))
        trials.append({"arch": run.data.tags.get("catdog.arch"),
                       "trial_id": run.data.tags.get("catdog.trial_id"),
                       "peak_rss_mb": m.get("peak_rss_mb", float("nan")),
                       "rss_mb": m.get("rss_mb"),  # current RSS after the trial, if logged
                       "fit_seconds": fit, "overhead_seconds": overhead,
                       "overhead_fraction": overhead / (fit + overhead),
                       "epoch_seconds": epochs,
                       "outside_epochs_fraction": 1 - epochs / (fit + overhead),
                       "epochs_run": m.get("epochs_run")})
    rss = [t["peak_rss_mb"] for t in trials]
    fit_per_epoch = float(np.mean([t["fit_seconds"] / max(t["epochs_run"] or 1, 1)
                                   for t in trials])) if trials else float("nan")
    overhead_mean = float(np.mean([t["overhead_seconds"] for t in trials])) if trials else 0.0
    return {"key": result.key, "archs": archs, "trials_per_arch": cfg.trials,
            "epochs": cfg.epochs, "size": cfg.image_size, "sweep_seconds": result.seconds,
            "others_cpu_share": others,
            "trials": trials,
            "rss_growth_pct": 100 * (rss[-1] - rss[1]) / rss[1] if len(rss) >= 3 else None,
            "rss_growth_within_arch_pct": _rss_growth_within_arch(trials),
            "overhead_fraction_mean": float(np.mean([t["overhead_fraction"] for t in trials]))
            if trials else None,
            "outside_epochs_fraction_mean": float(np.mean(
                [t["outside_epochs_fraction"] for t in trials])) if trials else None,
            "overhead_seconds_mean": overhead_mean, "fit_seconds_per_epoch_mean": fit_per_epoch,
            # epochs per trial that would bring the mean time outside fit under 10%
            "epochs_for_10pct_overhead": math.ceil(9 * overhead_mean / fit_per_epoch)
            if trials else None,
            "decodes": decodes, "images": sizes["train"] + sizes["val"],
            "decodes_per_image": decodes / (sizes["train"] + sizes["val"])}


def _rss_growth_within_arch(trials: list[dict]) -> dict[str, float]:
    """Peak RSS growth from each architecture's 2nd trial to its last: a leak grows it trial
    after trial, while a switch to a bigger model raises it once."""
    out = {}
    for arch in dict.fromkeys(t["arch"] for t in trials):
        rss = [t["peak_rss_mb"] for t in trials if t["arch"] == arch]
        if len(rss) >= 3:
            out[arch] = 100 * (rss[-1] - rss[1]) / rss[1]
    return out


# ------------------------------------------------------------------------ 6. how cost grows
def scaling(root: Path, settings: Settings) -> dict:
    """One epoch of `baseline` (fp32, batch 32) and its cache memory on growing train subsets.

    Subsets are seeded random picks (sorted), so each holds both classes in proportion."""
    from catdog import pipeline

    rows = []
    for size in settings.scaling_sizes:
        dec = pipeline.decoded(root, "train", size)
        total = len(dec.labels)
        order = np.random.default_rng(SEED).permutation(total)
        model = _build("baseline", size)
        model.fit(pipeline.dataset(dec, BATCH, shuffle=True, seed=SEED).take(WARMUP_STEPS),
                  epochs=1, verbose=0)
        for fraction in settings.scaling_fractions:
            n = int(round(total * fraction))
            idx = np.sort(order[:n])
            sub = pipeline.Decoded(dec.images[idx], dec.labels[idx],
                                   tuple(dec.paths[i] for i in idx), False)
            clock = _clock()
            model.fit(pipeline.dataset(sub, BATCH, shuffle=True, seed=SEED), epochs=1,
                      verbose=0, callbacks=[clock])
            seconds = clock.epoch_seconds[-1]
            rows.append({"size": size, "fraction": fraction, "images": n,
                         "epoch_seconds": seconds, "ms_per_image": 1000 * seconds / n,
                         "others_cpu_share": clock.epoch_others[-1],
                         "cache_mb": sub.nbytes / 1e6})
            log.info("scaling %dpx x%.2f (%d images): epoch %.1fs, cache %.0f MB", size,
                     fraction, n, seconds, sub.nbytes / 1e6)
    return {"arch": "baseline", "batch": BATCH, "rows": rows,
            "cache_mb_per_1000_images": {s: 1000 * s * s * 3 / 1e6
                                         for s in settings.scaling_sizes}}


# ----------------------------------------------------------------------------------- targets
def targets(res: dict) -> list[dict]:
    """Each target ratio, its measured value, PASS/MISS, and what the numbers say about why."""
    out: list[dict] = []

    def add(name: str, goal: str, value: float | None, ok: bool | None, shown: str,
            why: str = "") -> None:
        verdict = "n/a" if ok is None else ("PASS" if ok else "MISS")
        out.append({"target": name, "goal": goal,
                    "value": None if value is None else float(value), "shown": shown,
                    "result": verdict, "why": why if verdict == "MISS" else ""})

    tr = res.get("training", {})
    if "fastest" in tr:
        f = tr["fastest"]
        add("cached pipeline / fastest training", ">= 10x", f["pipeline_ratio"],
            f["pipeline_ratio"] >= 10, f"{f['pipeline_ratio']:.1f}x",
            f"cached pipeline {f['pipeline_images_per_s']:.0f} img/s at {f['size']}px vs "
            f"{f['arch']} {f['precision']} training {f['images_per_s']:.0f} img/s")
    nb = res.get("notebook", {})
    for prec in ("fp32", "bf16"):
        run = nb.get("runs", {}).get(f"catdog {prec}")
        if run:
            add(f"catdog {prec} epoch / notebook epoch", "<= 0.5", run["vs_notebook"],
                run["vs_notebook"] <= 0.5,
                f"{run['vs_notebook']:.2f} (val acc {run['val_accuracy_delta']:+.3f})",
                _epoch_why(nb, prec))
    rows = [r for r in tr.get("rows", []) if r["family"] in CONV_FAMILIES and "bf16" in r]
    by_arch = {r["arch"]: r for r in rows}
    for prec in ("fp32", "bf16"):
        fr = {r["arch"]: r[prec]["ceiling_fraction"] for r in rows
              if r[prec].get("ceiling_fraction") is not None}
        if fr:
            lo, hi = min(fr, key=fr.get), max(fr, key=fr.get)
            add(f"conv archs {prec} FLOP/s / {prec} ceiling (each)", ">= 50%",
                fr[lo], fr[lo] >= 0.5, f"{fr[lo]:.0%} ({lo}) .. {fr[hi]:.0%} ({hi})",
                _flops_why(by_arch, prec, hi))
    sw = res.get("sweep", {})
    if "decodes_per_image" in sw:
        d = sw["decodes_per_image"]
        add("decodes per image in a sweep", "= 1", d, abs(d - 1) < 1e-9,
            f"{d:.2f} ({sw['decodes']} for {sw['images']} images, {len(sw['trials'])} trials)",
            "the decoded cache was not shared by every trial")
    if sw.get("rss_growth_pct") is not None:
        g = sw["rss_growth_pct"]
        rss = [t["peak_rss_mb"] for t in sw["trials"]]
        within = sw.get("rss_growth_within_arch_pct", {})
        why = f"peak RSS {rss[1]:.0f} -> {rss[-1]:.0f} MB over {len(rss) - 2} trials"
        if within:
            why += ("; within each architecture (2nd trial -> last): "
                    + ", ".join(f"{a} {x:+.1f}%" for a, x in within.items()))
            if max(within.values()) < g / 2:
                why += ", so most of it is the switch to a larger model, not a per-trial leak"
        add("peak RSS growth trial 2 -> last", "< 5%", g, g < 5, f"{g:+.1f}%", why)
    if sw.get("overhead_fraction_mean") is not None:
        o = sw["overhead_fraction_mean"]
        add("time outside model.fit per trial", "< 10%", o, o < 0.1, f"{o:.1%}",
            f"{sw['overhead_seconds_mean']:.1f}s per trial outside fit (build, logging, "
            f"evaluation, model logging) vs {sw['fit_seconds_per_epoch_mean']:.1f}s per epoch "
            f"of fit: trials of >= {sw['epochs_for_10pct_overhead']} epochs at "
            f"{sw['size']}px would be under 10%")
    return out


def _epoch_why(nb: dict, prec: str) -> str:
    """What item 4 says about the gap to a 2x faster epoch."""
    w, epoch = nb["why"], nb["runs"]["notebook fp32"]["epoch_last_seconds"]
    parts = []
    if w.get("notebook_pipeline_seconds") is not None:
        parts.append(f"the notebook's own pipeline needs only {w['notebook_pipeline_seconds']:.1f}s "
                     f"of its {epoch:.0f}s epoch ({w['notebook_pipeline_seconds'] / epoch:.0%}), "
                     "so a faster pipeline has almost nothing to remove")
    if prec in w.get("compute_seconds", {}):
        parts.append(f"{prec} training compute alone (cached pipeline, no validation) takes "
                     f"{w['compute_seconds'][prec]:.0f}s "
                     f"({w['compute_share_of_notebook_epoch'][prec]:.0%} of that epoch)"
                     + _disturbed(w.get("compute_others_cpu_share", {}).get(prec)))
    return "; ".join(parts)


def _disturbed(others: float | None) -> str:
    return (f" [disturbed: other processes took {others:.0%} of the CPU]"
            if (others or 0) > DISTURBED else "")


def _flops_why(by_arch: dict, prec: str, best: str) -> str:
    """What the training rows say about the gap to the matmul ceiling."""
    why = (f"only {best} (the widest 3x3 convs, {by_arch[best]['train_gflop']:.2f} GFLOP/img) "
           "gets close; the others spend their time on uncounted memory-bound layers (BatchNorm, "
           "pooling, activations) and on shapes that use the cores poorly (3-channel first "
           "convs, depthwise convs)")
    if "baseline" in by_arch and "bn_dropout" in by_arch:
        share = (by_arch["bn_dropout"][prec]["images_per_s"]
                 / by_arch["baseline"][prec]["images_per_s"])
        why += (f": bn_dropout has baseline's FLOPs but runs at {share:.0%} of its speed, "
                "the cost of its BatchNorm layers")
    speedups = [r["bf16_speedup"] for r in by_arch.values() if "bf16_speedup" in r]
    if prec == "bf16" and speedups:
        why += (f"; bf16 trains at {min(speedups):.2f}-{max(speedups):.2f}x the fp32 speed "
                "although its matmul ceiling is higher, so the bf16 gain is lost outside the "
                "counted convolutions")
    return why


# ------------------------------------------------------------------------------------ table
def _table(headers: list[str], rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]

    def line(cells):
        return indent + "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                                  for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def _f(x: float | None, fmt: str = ".1f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _pct(fraction: float | None) -> str:
    return "-" if fraction is None else f"{100 * fraction:.0f}%"


def _others(fraction: float | None) -> str:
    """Other processes' CPU share, flagged '!' when the figure beside it is disturbed."""
    return _pct(fraction) + (" !" if (fraction or 0) > DISTURBED else "")


def render(res: dict) -> str:
    m, s = res["machine"], res["settings"]
    out = [f"catdog benchmark  {m['date']}{'  (QUICK: smoke run, numbers not meaningful)' if s['quick'] else ''}",
           f"CPU: {m['cpu']} | {m['cores']} cores | bf16 native: {m['cpu_bf16']} | "
           f"TF {m['tensorflow']} | Keras {m['keras']} | load avg at start {m['loadavg_start']}, "
           f"at end {m.get('loadavg_end', '?')}",
           f"data: {res['data']} ({', '.join(f'{k} {v}' for k, v in res['splits'].items())})",
           f"total wall time {res['wall_seconds'] / 60:.1f} min",
           "'others' = share of the machine's CPU that other processes used during a measurement "
           f"(interference; 0% = the bench had the box to itself; '!' = over {DISTURBED:.0%}: "
           "treat that row's figures as disturbed)", ""]

    def section(title: str, key: str, body: Callable[[dict], list[str]]) -> None:
        out.append(title)
        item = res.get(key, {})
        if "error" in item:
            out.append(f"  FAILED: {item['error']}")
        else:
            out.extend(body(item))
        out.append("")

    def ceiling_body(c: dict) -> list[str]:
        rows = [[k, _f(c[k]["gflops"]), _f(c[k].get("gflops_mean")),
                 _f(c[k].get("vs_float32", 1.0), ".2f") + "x", _others(c[k].get("others_cpu_share")),
                 c[k].get("skipped", f"{c[k]['reps']} reps")]
                for k in ("float32", "bfloat16", "float16")]
        lines = _table(["dtype", "GFLOP/s (best rep)", "mean", "vs fp32", "others", "note"],
                       rows)
        end = res.get("ceiling_end", {})
        if "float32" in end:
            lines.append("  again at the end: " + ", ".join(
                f"{k} {end[k]['gflops']:.1f} ({end[k]['gflops'] / c[k]['gflops'] - 1:+.0%})"
                for k in ("float32", "bfloat16", "float16") if k in end) + " (machine drift)")
        return lines

    def pipeline_body(p: dict) -> list[str]:
        rows = [[str(r["size"]), str(r["images"]), _f(r["first_pass_images_per_s"], ".0f"),
                 _f(r["cached_images_per_s"], ".0f"), _f(r.get("notebook_images_per_s"), ".0f"),
                 _f(r.get("cached_vs_notebook"), ".1f") + ("x" if "cached_vs_notebook" in r else ""),
                 _f(r["cache_mb"], ".0f"),
                 _others(max(r.get("cached_others_cpu_share") or 0,
                          r.get("notebook_others_cpu_share") or 0))] for r in p["rows"]]
        return _table(["px", "images", "first pass (decode)", "cached (mean of 3)",
                       "notebook (1 pass)", "cached/notebook", "cache MB", "others"], rows)

    def training_body(t: dict) -> list[str]:
        rows = []
        for r in t["rows"]:
            b = r.get("bf16", {})
            rows.append([r["arch"], str(r["size"]), _f(r["train_gflop"], ".2f"),
                         _f(r["fp32"]["images_per_s"]), _f(r["fp32"]["gflops"], ".0f"),
                         _pct(r["fp32"]["ceiling_fraction"]),
                         _f(b.get("images_per_s")), _f(b.get("gflops"), ".0f"),
                         _pct(b.get("ceiling_fraction")),
                         _f(r.get("bf16_speedup"), ".2f") + ("x" if b else ""),
                         _f(r["fp32"]["pipeline_ratio"], ".0f") + "x",
                         _others(max(r["fp32"].get("others_cpu_share") or 0,
                                  b.get("others_cpu_share") or 0))])
        f = t["fastest"]
        return _table(["arch", "px", "train GFLOP/img", "fp32 img/s", "GFLOP/s", "% ceil",
                       "bf16 img/s", "GFLOP/s", "% ceil", "bf16/fp32", "pipe/train fp32",
                       "others"], rows) + [
            "  img/s: the fastest of 3 equal runs of steps in a ~15 s window (JSON also has the "
            "window mean); GFLOP/img counts conv/dense layers, training = 3x forward",
            f"  fastest: {f['arch']} {f['precision']} {f['images_per_s']:.1f} img/s at "
            f"{f['size']}px; cached pipeline at {f['size']}px {f['pipeline_images_per_s']:.0f} "
            f"img/s -> {f['pipeline_ratio']:.1f}x  (batch {t['batch']}, augment 0 unless noted)"]

    def notebook_body(n: dict) -> list[str]:
        rows = [[name, str(r["batch"]), " / ".join(_f(x) for x in r["epoch_seconds"]),
                 _f(r["vs_notebook"], ".2f"), _f(r["val_accuracy"], ".4f"),
                 _f(r["val_accuracy_delta"], "+.4f"),
                 " / ".join(_others(x) for x in r["epoch_others_cpu_share"])]
                for name, r in n["runs"].items()]
        lines = _table(["run (bn_dropout model, no augmentation)", "batch", "epoch s (1 / 2)",
                        f"epoch {n['epochs']} / notebook", f"val acc @{n['epochs']}",
                        "val acc delta", "others (1 / 2)"], rows)
        lines.append(f"  levers, training throughput only (bn_dropout {n['size']}px, cached "
                     "pipeline, no validation):")
        lines += _table(["precision", "batch", "img/s", "GFLOP/s", "vs fp32 b32", "others"],
                        [[lv["precision"], str(lv["batch"]), _f(lv["images_per_s"]),
                          _f(lv["gflops"], ".0f"), _f(lv["speedup"], ".2f") + "x",
                          _others(lv.get("others_cpu_share"))]
                         for lv in n["levers"]], indent="    ")
        w = n["why"]
        share = w["compute_share_of_notebook_epoch"]
        lines.append(f"  why: training compute alone for {w['train_images']} images takes "
                     + ", ".join(f"{w['compute_seconds'][p]:.0f}s in {p} ({share[p]:.0%} of the "
                                 "notebook's epoch"
                                 + _disturbed(w.get("compute_others_cpu_share", {}).get(p)) + ")"
                                 for p in w["compute_seconds"])
                     + "; the notebook's pipeline alone takes "
                     f"{_f(w['notebook_pipeline_seconds'], '.0f')}s per epoch (train+val); "
                     f"catdog decodes once, {_f(w['catdog_decode_seconds_once'], '.0f')}s, "
                     "before epoch 1")
        return lines

    def sweep_body(sw: dict) -> list[str]:
        rows = [[str(i + 1), t["arch"], t["trial_id"], _f(t["peak_rss_mb"], ".0f"),
                 _f(t.get("rss_mb"), ".0f"), _f(t["fit_seconds"]), _f(t["overhead_seconds"]),
                 _f(100 * t["overhead_fraction"], ".1f") + "%", _f(t["epoch_seconds"]),
                 _f(100 * t["outside_epochs_fraction"], ".1f") + "%"]
                for i, t in enumerate(sw["trials"])]
        return _table(["#", "arch", "trial", "peak RSS MB", "RSS after MB", "fit s",
                       "outside fit s", "outside fit %", "sum epoch s", "outside epochs %"],
                      rows) + [
            "  fit s / outside fit s: the trial's logged metrics (fit s = model.fit alone; outside "
            "fit = build, compile, logging, evaluation); outside epochs % = 1 - sum(epoch_seconds)"
            " / trial time",
            f"  {len(sw['trials'])} trials ({sw['trials_per_arch']} per arch, {sw['epochs']} "
            f"epochs, {sw['size']}px) in {sw['sweep_seconds']:.0f}s; RSS growth trial 2 -> "
            f"last {_f(sw['rss_growth_pct'], '+.1f')}%"
            + "".join(f" ({a} alone {g:+.1f}%)" for a, g in sw.get("rss_growth_within_arch_pct",
                                                                     {}).items())
            + "; mean time outside fit "
            f"{_f(100 * (sw['overhead_fraction_mean'] or 0), '.1f')}% (outside epochs "
            f"{_f(100 * (sw['outside_epochs_fraction_mean'] or 0), '.1f')}%); decodes per image "
            f"{sw['decodes_per_image']:.2f} ({sw['decodes']} / {sw['images']}); others "
            f"{_others(sw.get('others_cpu_share'))}"]

    def scaling_body(sc: dict) -> list[str]:
        rows = [[str(r["size"]), f"{r['fraction']:g}", str(r["images"]), _f(r["epoch_seconds"]),
                 _f(r["ms_per_image"], ".2f"), _f(r["cache_mb"]),
                 _others(r.get("others_cpu_share"))] for r in sc["rows"]]
        return _table(["px", "fraction", "images", "epoch s", "ms/image", "cache MB", "others"],
                      rows)

    section(f"1. Matmul ceiling ({res.get('ceiling', {}).get('n', '?')}^2, tf.linalg.matmul)",
            "ceiling", ceiling_body)
    section("2. Input pipeline alone (batch 32, images/s, train split)", "pipeline",
            pipeline_body)
    section("3. Training throughput (batch 32, images/s after warm-up, from the cached pipeline)",
            "training", training_body)
    section("4. One epoch end to end vs the notebook (training + validation, same seed)",
            "notebook", notebook_body)
    section("5. Sweep (random search, tracked in MLflow)", "sweep", sweep_body)
    section("6. How cost grows (baseline fp32, batch 32, one epoch after warm-up)", "scaling",
            scaling_body)
    out.append("Targets")
    out += _table(["target", "goal", "measured", "result"],
                  [[t["target"], t["goal"], t["shown"], t["result"]] for t in res["targets"]])
    for t in res["targets"]:
        if t["why"]:
            out.append(f"  {t['result']} {t['target']}: {t['why']}")
    return "\n".join(out)


# ------------------------------------------------------------------------------------- main
def machine_info() -> dict:
    import keras
    import tensorflow as tf

    from catdog import runtime

    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpu": cpu, "cores": os.cpu_count(), "cpu_bf16": runtime.cpu_has_bf16(),
            "tensorflow": tf.__version__, "keras": keras.__version__,
            "python": sys.version.split()[0],
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ"),
            "loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg())}


@contextlib.contextmanager
def scratch_workdir() -> Iterator[Path]:
    """A temporary working directory and MLflow store, so the bench never touches the user's."""
    work = Path(tempfile.mkdtemp(prefix="catdog-bench-"))
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
           "CATDOG_CACHE_DIR": str(work / "cache"), "CATDOG_TRANSFER_WEIGHTS": "none"}
    dropped = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")
    saved = {k: os.environ.get(k) for k in (*env, *dropped)}
    cwd = os.getcwd()
    os.environ.update(env)
    for k in dropped:
        os.environ.pop(k, None)
    os.chdir(work)
    try:
        yield work
    finally:
        os.chdir(cwd)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(work, ignore_errors=True)


def quick_subset(root: Path, work: Path, per_class: int) -> Path:
    """A small prepared dataset drawn from ROOT (salader layout -> prepare), for --quick."""
    from catdog.data.images import LABELS
    from catdog.data.prepare import load_manifest, prepare

    manifest = load_manifest(root).sort_values("path")
    raw = work / "quick-raw"
    for splits, dest, k in ((("train", "val"), "train", per_class),
                            (("test",), "test", max(per_class // 5, 4))):
        for label in LABELS:
            rows = manifest[manifest["split"].isin(splits) & (manifest["label"] == label)]
            folder = raw / dest / f"{label}s"
            folder.mkdir(parents=True, exist_ok=True)
            for i, path in enumerate(rows["abspath"].head(k)):
                shutil.copyfile(path, folder / f"{label}.{i}.jpg")
    return prepare(raw, work / "quick-prepared").root


def _attempt(name: str, fn: Callable[..., dict], *args) -> dict:
    log.info("=== bench: %s", name)
    t0 = time.perf_counter()
    try:
        out = fn(*args)
    except Exception as exc:  # one failed item must not lose the others' figures
        log.exception("bench item %s failed", name)
        out = {"error": f"{type(exc).__name__}: {exc}"}
    out["wall_seconds"] = time.perf_counter() - t0
    log.info("=== bench: %s done in %.0fs", name, out["wall_seconds"])
    return out


def run_bench(root: Path, settings: Settings) -> dict:
    """Every item, in an order that keeps each honest (see the module docstring)."""
    res: dict[str, Any] = {}
    res["ceiling"] = _attempt("1. ceiling", ceiling, settings)
    res["sweep"] = _attempt("5. sweep", sweep_costs, root, settings)
    res["pipeline"] = _attempt("2. input pipeline", input_pipeline, root, settings)
    res["training"] = _attempt("3. training throughput", training, root, settings,
                               res["ceiling"], res["pipeline"])
    res["notebook"] = _attempt("4. epoch vs notebook", versus_notebook, root, settings,
                               res["pipeline"])
    res["scaling"] = _attempt("6. scaling", scaling, root, settings)
    # Again at the end: how much the machine's speed drifted while the bench ran.
    res["ceiling_end"] = _attempt("1'. ceiling again", ceiling, settings)
    res["run_order"] = ["ceiling", "sweep", "pipeline", "training", "notebook", "scaling",
                        "ceiling_end"]
    return res


def write_results(res: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(res, indent=2, default=str) + "\n"
    out.write_text(text)
    (out.parent / "latest.json").write_text(text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m catdog.bench", description=__doc__.split("\n")[0])
    p.add_argument("--data", help=f"dataset zip, folder or prepared dataset (default {DEFAULT_DATA})")
    p.add_argument("--out", help="JSON results file (default bench/results/bench-<UTC time>.json; "
                                 "latest.json is written beside it)")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, a few minutes")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    data = Path(args.data) if args.data else DEFAULT_DATA
    if not data.exists():
        log.error("no data at %s: pass --data (or DATA= to make bench) pointing at a "
                  "Dogs-vs-Cats folder, zip or prepared dataset.", data)
        return 2
    settings = QUICK if args.quick else FULL
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out).resolve() if args.out else RESULTS_DIR / f"bench-{stamp}.json"

    from catdog.data.prepare import resolve_data

    t0 = time.perf_counter()
    root = resolve_data(data.resolve()).resolve()  # before leaving the project directory
    with scratch_workdir() as work:
        log.info("bench working directory (deleted at the end): %s", work)
        if settings.quick:
            root = quick_subset(root, work, settings.quick_per_class)
        res: dict[str, Any] = {"machine": machine_info(), "settings": asdict(settings),
                               "data": str(data.resolve()), "prepared": str(root),
                               "splits": _split_sizes(root)}
        res.update(run_bench(root, settings))
        res["machine"]["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        res["targets"] = targets(res)
        res["wall_seconds"] = time.perf_counter() - t0
    write_results(res, out)
    print(render(res), flush=True)
    log.info("results written to %s (and %s)", out, out.parent / "latest.json")
    failed = [k for k, v in res.items() if isinstance(v, dict) and "error" in v]
    if failed:
        log.error("bench items failed: %s", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
