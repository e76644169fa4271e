"""The measurements of items 1-3, 5 and 6 (item 4 is in `notebook`), each a function returning
a dict of plain figures for JSON and table.

Their order of execution (and why) lives in `benchmarks.run.run_bench`."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.probes import (
    CpuShare,
    _build,
    _cached_rate,
    _clock,
    _notebook_dataset,
    _split_sizes,
    precision,
    train_throughput,
    training_flops,
)
from benchmarks.settings import BATCH, NO_AUGMENT, SEED, WARMUP_STEPS, Settings
from catdog.log import get_logger

log = get_logger(__name__)


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
    for name, dtype in (
        ("float32", tf.float32),
        ("bfloat16", tf.bfloat16),
        ("float16", tf.float16),
    ):
        a, b = tf.cast(base, dtype), tf.cast(tf.transpose(base), dtype)
        t0 = time.perf_counter()
        float(tf.linalg.matmul(a, b)[0, 0])  # first call: kernel selection, primitive creation
        first = time.perf_counter() - t0
        if fp32_rep is not None and first > max(2.0, 50 * fp32_rep):
            out[name] = {
                "gflops": flop / first / 1e9,
                "reps": 1,
                "skipped": f"one {n}x{n} matmul took {first:.1f}s "
                f"({first / fp32_rep:.0f}x float32)",
            }
            log.info(
                "ceiling %s: %.1f GFLOP/s from one call; too slow to repeat",
                name,
                out[name]["gflops"],
            )
            continue
        float(tf.linalg.matmul(a, b)[0, 0])
        times: list[float] = []
        cpu, t_start = CpuShare(), time.perf_counter()
        while len(times) < settings.matmul_reps and (
            len(times) < 3 or time.perf_counter() - t_start < settings.matmul_budget_seconds
        ):
            t0 = time.perf_counter()
            float(tf.linalg.matmul(a, b)[0, 0])
            times.append(time.perf_counter() - t0)
        out[name] = {
            "gflops": flop / min(times) / 1e9,
            "gflops_mean": flop / np.mean(times) / 1e9,
            "reps": len(times),
            "others_cpu_share": cpu.others(),
        }
        if name == "float32":
            fp32_rep = float(np.mean(times))
        log.info(
            "ceiling %s: %.1f GFLOP/s best, %.1f mean (%d reps)",
            name,
            out[name]["gflops"],
            out[name]["gflops_mean"],
            len(times),
        )
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
        row = {
            "size": size,
            "images": n,
            "cache_mb": dec.nbytes / 1e6,
            "first_pass_seconds": first,
            "first_pass_images_per_s": n / first,
            "cached_images_per_s": cached["images_per_s"],
            "cached_passes": cached["passes"],
            "cached_others_cpu_share": cached["others_cpu_share"],
        }
        if size == settings.notebook_size:
            ds = _notebook_dataset(root, "train", size)
            cpu, t0, seen = CpuShare(), time.perf_counter(), 0
            for x, _y in ds:
                seen += int(x.shape[0])
            row["notebook_images_per_s"] = seen / (time.perf_counter() - t0)
            row["notebook_others_cpu_share"] = cpu.others()
            row["cached_vs_notebook"] = row["cached_images_per_s"] / row["notebook_images_per_s"]
            row["first_pass_vs_notebook"] = (
                row["first_pass_images_per_s"] / row["notebook_images_per_s"]
            )
        log.info(
            "pipeline %dpx: first pass %.0f images/s, cached %.0f images/s%s",
            size,
            row["first_pass_images_per_s"],
            row["cached_images_per_s"],
            f", notebook {row['notebook_images_per_s']:.0f} images/s"
            if "notebook_images_per_s" in row
            else "",
        )
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
        row: dict[str, Any] = {
            "arch": label,
            "family": entry.family,
            "size": size,
            "pipeline_images_per_s": pipe_rates[size],
        }
        precisions = ("fp32", "bf16") if hparams is not None else ("fp32",)
        for prec in precisions:
            with precision(prec):
                model = _build(arch, size, hparams)
                if prec == "fp32":
                    row.update(training_flops(model), params=int(model.count_params()))
                m = train_throughput(model, ds, BATCH, settings)
            gflops = row["train_gflop"] * m["images_per_s"]
            dtype = "float32" if prec == "fp32" else "bfloat16"
            row[prec] = {
                **m,
                "gflops": gflops,
                "ceiling_fraction": gflops / ceil[dtype]["gflops"] if dtype in ceil else None,
                "pipeline_ratio": pipe_rates[size] / m["images_per_s"],
            }
            log.info(
                "training %s %dpx %s: %.1f images/s, %.1f GFLOP/s",
                label,
                size,
                prec,
                m["images_per_s"],
                gflops,
            )
        if "bf16" in row:
            row["bf16_speedup"] = row["bf16"]["images_per_s"] / row["fp32"]["images_per_s"]
        rows.append(row)
    main_rows = [r for r in rows if "bf16" in r]
    fastest = max(
        ((r, p) for r in main_rows for p in ("fp32", "bf16")),
        key=lambda rp: rp[0][rp[1]]["images_per_s"],
    )
    r, p = fastest
    return {
        "batch": BATCH,
        "rows": rows,
        "pipeline_images_per_s": pipe_rates,
        "fastest": {
            "arch": r["arch"],
            "precision": p,
            "size": r["size"],
            "images_per_s": r[p]["images_per_s"],
            "pipeline_images_per_s": r["pipeline_images_per_s"],
            "pipeline_ratio": r[p]["pipeline_ratio"],
        },
    }


# ------------------------------------------------------------------------------- 5. sweep
def sweep_costs(root: Path, settings: Settings) -> dict:
    """A tracked random-search sweep; per-trial RSS, time outside fit, and decodes per image."""
    from catdog import pipeline, sweepfile
    from catdog.data.prepare import read_summary
    from catdog.search import sweep
    from catdog.tracking import queries, runlog, store, tags

    archs = ["baseline", "bn_dropout"]
    cfg = sweepfile.load(
        None,
        archs=archs,
        tuner="random",
        trials=settings.sweep_trials,
        epochs=settings.sweep_epochs,
        image_size=settings.sweep_size,
        data=str(root),
    )
    sizes = _split_sizes(root)
    digest = read_summary(root)["digest"]
    pipeline.clear_cache()
    before = {s: pipeline.DECODES[(digest, s, cfg.image_size)] for s in ("train", "val")}
    cpu = CpuShare()
    result = sweep.run(cfg, fresh=True)
    others = cpu.others()
    decodes = sum(pipeline.DECODES[(digest, s, cfg.image_size)] - before[s] for s in before)

    store.configure()
    runs = queries.search(
        store.experiment_id(result.experiment),
        {tags.SWEEP_KEY: result.key, tags.KIND: tags.KIND_TRIAL},
    )
    trials = []
    for run in (r for r in runs if r.info.status == "FINISHED"):
        m = run.data.metrics
        fit, overhead = m.get("fit_seconds", float("nan")), m.get("overhead_seconds", float("nan"))
        # fit_seconds wraps KerasTuner's run_trial, which also builds and compiles the model;
        # the epochs themselves (training + validation) are what EpochLogger timed.
        epochs = sum(v for _, v in runlog.history(run.info.run_id, "epoch_seconds"))
        trials.append(
            {
                "arch": run.data.tags.get(tags.ARCH),
                "trial_id": run.data.tags.get(tags.TRIAL_ID),
                "peak_rss_mb": m.get("peak_rss_mb", float("nan")),
                "rss_mb": m.get("rss_mb"),  # current RSS after the trial, if logged
                "fit_seconds": fit,
                "overhead_seconds": overhead,
                "overhead_fraction": overhead / (fit + overhead),
                "epoch_seconds": epochs,
                "outside_epochs_fraction": 1 - epochs / (fit + overhead),
                "epochs_run": m.get("epochs_run"),
            }
        )
    rss = [t["peak_rss_mb"] for t in trials]
    fit_per_epoch = (
        float(np.mean([t["fit_seconds"] / max(t["epochs_run"] or 1, 1) for t in trials]))
        if trials
        else float("nan")
    )
    overhead_mean = float(np.mean([t["overhead_seconds"] for t in trials])) if trials else 0.0
    return {
        "key": result.key,
        "archs": archs,
        "trials_per_arch": cfg.trials,
        "epochs": cfg.epochs,
        "size": cfg.image_size,
        "sweep_seconds": result.seconds,
        "others_cpu_share": others,
        "trials": trials,
        "rss_growth_pct": 100 * (rss[-1] - rss[1]) / rss[1] if len(rss) >= 3 else None,
        "rss_growth_within_arch_pct": _rss_growth_within_arch(trials),
        "overhead_fraction_mean": float(np.mean([t["overhead_fraction"] for t in trials]))
        if trials
        else None,
        "outside_epochs_fraction_mean": float(
            np.mean([t["outside_epochs_fraction"] for t in trials])
        )
        if trials
        else None,
        "overhead_seconds_mean": overhead_mean,
        "fit_seconds_per_epoch_mean": fit_per_epoch,
        # epochs per trial that would bring the mean time outside fit under 10%
        "epochs_for_10pct_overhead": math.ceil(9 * overhead_mean / fit_per_epoch)
        if trials
        else None,
        "decodes": decodes,
        "images": sizes["train"] + sizes["val"],
        "decodes_per_image": decodes / (sizes["train"] + sizes["val"]),
    }


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
        model.fit(
            pipeline.dataset(dec, BATCH, shuffle=True, seed=SEED).take(WARMUP_STEPS),
            epochs=1,
            verbose=0,
        )
        for fraction in settings.scaling_fractions:
            n = int(round(total * fraction))
            idx = np.sort(order[:n])
            sub = pipeline.Decoded(
                dec.images[idx], dec.labels[idx], tuple(dec.paths[i] for i in idx), False
            )
            clock = _clock()
            model.fit(
                pipeline.dataset(sub, BATCH, shuffle=True, seed=SEED),
                epochs=1,
                verbose=0,
                callbacks=[clock],
            )
            seconds = clock.epoch_seconds[-1]
            rows.append(
                {
                    "size": size,
                    "fraction": fraction,
                    "images": n,
                    "epoch_seconds": seconds,
                    "ms_per_image": 1000 * seconds / n,
                    "others_cpu_share": clock.epoch_others[-1],
                    "cache_mb": sub.nbytes / 1e6,
                }
            )
            log.info(
                "scaling %dpx x%.2f (%d images): epoch %.1fs, cache %.0f MB",
                size,
                fraction,
                n,
                seconds,
                sub.nbytes / 1e6,
            )
    return {
        "arch": "baseline",
        "batch": BATCH,
        "rows": rows,
        "cache_mb_per_1000_images": {s: 1000 * s * s * 3 / 1e6 for s in settings.scaling_sizes},
    }
