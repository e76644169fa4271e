"""Does the data curve's reading at twice the photos hold? Checked on real photos, in one run.

    python -m benchmarks.curve [--data PATH] [--arch xception] [--size 96] [--epochs 6]
                               [--fractions 0.25,0.5,1] [--out benchmarks/results/curve.json]

`catdog curve` fits `accuracy = a + b·ln(photos)` through the champion's configuration trained on
nested fractions of the training split and reads it at twice the photos. Twice the sample's
photos are not there to check that reading against, but half of them are: this trains the long
fit's usual winner (`benchmarks.tricks`'s configuration, one cosine over EPOCHS) on each fraction
exactly as `catdog curve` does (`catdog.curve.train_fractions`, in the bench's scratch store),
then fits the trend on 25% and 50% alone, reads it at 100% (twice 50%) and sets it against what
100% measured (`catdog.curvefit.Backtest`). Validation only; the test split is never read.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks.resize import DEFAULT_DATA
from benchmarks.run import scratch_workdir
from benchmarks.tricks import VALUES


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--arch", default="xception")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--fractions", default="0.25,0.5,1")
    parser.add_argument("--out", default="benchmarks/results/curve.json")
    args = parser.parse_args(argv)

    from catdog import curve
    from catdog.data import resolve_data
    from catdog.log import setup

    setup()
    root = Path(resolve_data(args.data)).resolve()  # absolute: the scratch folder is the cwd
    values = {**VALUES, "lr_schedule": "cosine"}
    recipe = curve.Recipe(args.arch, values, image_size=args.size, epochs=args.epochs)
    t0 = time.monotonic()
    with scratch_workdir():
        result = curve.train_fractions(root, recipe, curve.parse_fractions(args.fractions))
    check = result.backtest
    record = {
        "data": str(root),
        "recipe": {"arch": args.arch, "image_size": args.size, "epochs": args.epochs, **values},
        "points": [
            {"fraction": p.fraction, "n_train": p.n_train, "val_accuracy": p.accuracy}
            for p in result.points
        ],
        "sentence": result.sentence,
        "gain_2x": result.gain,
        "gain_interval": result.gain_interval,
        "backtest": check.as_dict() if check else None,
        "seconds": time.monotonic() - t0,
    }
    for p in result.points:
        print(f"{p.fraction:>6.0%}  {p.n_train:>6,} photos  val accuracy {p.accuracy:.4f}")
    print(result.sentence)
    print(check.sentence if check else "too few fractions at or below half the largest to check")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    return record


if __name__ == "__main__":
    main()
