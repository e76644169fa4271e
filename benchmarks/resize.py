"""Does keeping the optimizer's state across a resize help the long fit? Both sides in one run.

    python -m benchmarks.resize [--data PATH] [--arch xception] [--sizes 64 96]
                                [--epochs 8 8] [--seeds 1337]

The `focus` long fit trains at the screen's size, then at a larger one
(`catdog.search.strategies.focus.longfit`). This trains the same configuration through the same
phases twice per seed, with one cosine over the whole fit: once carrying the weights and Adam's
state (moments, step count) into the larger model, as the long fit does, and once carrying the
weights with a fresh Adam, as catdog did before. It prints each epoch's val accuracy and the
best of each, and writes them as JSON. Val accuracy does not depend on the machine's load, only
the time it takes does.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dogs-vs-cats-mini"


def fit_through_sizes(
    root,
    arch: str,
    sizes: list[int],
    epochs: list[int],
    seed: int,
    keep_optimizer: bool,
    values: dict,
) -> list[float]:
    """Val accuracy per epoch of ARCH trained EPOCHS[i] epochs at SIZES[i], one cosine over
    the whole fit, the weights (and, if KEEP_OPTIMIZER, Adam's state) carried across sizes."""
    import keras

    from catdog import models, pipeline
    from catdog.search.strategies.focus.checkpoint import Clock, carry

    keras.utils.set_random_seed(seed)
    total, start, model, scores = sum(epochs), 0, None, []
    for size, n in zip(sizes, epochs):
        splits = pipeline.load(root, size, 32, seed=seed)
        new = models.get(arch).build(models.fixed_hyperparameters(values), image_size=size)
        if model is not None:
            carry(model, new, keep_optimizer)
        model = new
        clock = Clock(float(values["lr"]), 1.0, total, time.monotonic(), None, None)
        history = model.fit(
            splits.train,
            validation_data=splits.val,
            initial_epoch=start,
            epochs=start + n,
            verbose=0,
            callbacks=[clock],
        )
        scores += [float(v) for v in history.history["val_accuracy"]]
        start += n
    keras.backend.clear_session()
    return scores


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--arch", default="xception")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 96])
    parser.add_argument("--epochs", type=int, nargs="+", default=[8, 8])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1337])
    parser.add_argument("--out", default="benchmarks/results/resize.json")
    args = parser.parse_args(argv)
    from catdog.data import resolve_data
    from catdog.log import setup

    setup()
    root = resolve_data(args.data)
    values = {
        "width": 16,
        "lr": 0.002,
        "optimizer": "adam",
        "lr_schedule": "constant",
        "augment": 0.15,
    }
    out = {
        "arch": args.arch,
        "sizes": args.sizes,
        "epochs": args.epochs,
        "values": values,
        "runs": [],
    }
    for seed in args.seeds:
        for keep in (True, False):
            t0 = time.monotonic()
            scores = fit_through_sizes(root, args.arch, args.sizes, args.epochs, seed, keep, values)
            out["runs"].append(
                {
                    "seed": seed,
                    "keep_optimizer": keep,
                    "val_accuracy": scores,
                    "best": max(scores),
                    "last": scores[-1],
                    "seconds": time.monotonic() - t0,
                }
            )
            print(
                f"seed {seed} keep_optimizer={keep}: best {max(scores):.4f} last "
                f"{scores[-1]:.4f}  per epoch {np.round(scores, 4).tolist()}",
                flush=True,
            )
    for keep in (True, False):
        best = [r["best"] for r in out["runs"] if r["keep_optimizer"] == keep]
        print(
            f"keep_optimizer={keep}: mean best val accuracy {np.mean(best):.4f} over "
            f"{len(best)} seed(s)"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
