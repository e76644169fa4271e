"""Whole training epochs through catdog's pipeline as it ships, against the same pipeline with
tf.data's autotuner on (`pipeline.dataset(..., autotune=True)`, catdog's setting before).

    python -m benchmarks.epochtime [--data ../shared/data/dogs-vs-cats-mini] [--size 128]
                                   [--epochs 5] [--out benchmarks/results/epochtime.json]

The model is the long fit's usual winner as `experiments/cpu.toml` builds it (the `stem_pool`
variant of `benchmarks.tricks`, as `benchmarks.stepcost` uses). One model trains on the real
training split, one epoch at a time, alternating between the two pipelines (EPOCHS each, after
one warm-up epoch that traces the model): a `fit` per epoch, as Keras's own epochs do, so each
epoch gets a fresh iterator and its own autotuning, and a slow spell of the machine falls on both
sides alike. Every epoch's seconds are kept; the table gives each side's median, mean and range
and the ratio of the means, from the same run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks import tricks
from benchmarks.stepcost import HPARAMS

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "dogs-vs-cats-mini"
SIDES = ("shipped", "autotuned")


def epoch_times(root: Path, size: int, epochs: int) -> dict:
    """Seconds per training epoch of the long fit's model at SIZE px, per pipeline side."""
    from benchmarks.probes import _build
    from catdog import pipeline

    dec = pipeline.decoded(root, "train", size)
    model = _build(tricks.ARCH, size, HPARAMS)
    data = {
        side: pipeline.dataset(dec, tricks.BATCH, shuffle=True, autotune=side == "autotuned")
        for side in SIDES
    }
    model.fit(data["shipped"], epochs=1, verbose=0)  # traces the model: not timed
    seconds: dict[str, list[float]] = {side: [] for side in SIDES}
    for epoch in range(epochs):
        for side in SIDES if epoch % 2 == 0 else SIDES[::-1]:
            start = time.perf_counter()
            model.fit(data[side], epochs=1, verbose=0)
            seconds[side].append(time.perf_counter() - start)
            print(f"{side:>9} epoch {len(seconds[side])}: {seconds[side][-1]:.1f} s", flush=True)
    row: dict = {"arch": tricks.ARCH, "size": size, "images": len(dec.labels), "seconds": seconds}
    for side in SIDES:
        row[f"{side}_median_s"] = float(np.median(seconds[side]))
        row[f"{side}_mean_s"] = float(np.mean(seconds[side]))
    row["autotuned_over_shipped"] = row["autotuned_mean_s"] / row["shipped_mean_s"]
    return row


def report(row: dict) -> str:
    lines = [
        f"{row['arch']} at {row['size']} px, {row['images']} training photos a epoch, "
        f"{len(row['seconds']['shipped'])} epochs a side, alternating:"
    ]
    for side in SIDES:
        s = row["seconds"][side]
        lines.append(
            f"  {side:>9}: median {row[f'{side}_median_s']:.1f} s, mean "
            f"{row[f'{side}_mean_s']:.1f} s, range {min(s):.1f}-{max(s):.1f} s"
        )
    lines.append(f"  autotuned / shipped, mean epoch: {row['autotuned_over_shipped']:.2f}x")
    return "\n".join(lines).replace("a epoch", "an epoch")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs per side")
    parser.add_argument("--out", default="benchmarks/results/epochtime.json")
    args = parser.parse_args(argv)

    from benchmarks.probes import save_result
    from catdog.data import resolve_data
    from catdog.log import setup

    setup()
    root = resolve_data(args.data)
    row = epoch_times(root, args.size, args.epochs)
    print(report(row), flush=True)
    save_result(args.out, row=row)
    return row


if __name__ == "__main__":
    main()
