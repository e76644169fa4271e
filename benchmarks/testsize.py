"""Would a model score better tested at a larger size than it was trained at? Measured on
validation.

    python -m benchmarks.testsize [--model models:/catdog@champion] --data PREPARED
                                  [--sizes 96 112 128 144] [--split val] [--out FILE]

The FixRes effect (Touvron et al., 2019): a network trained on random crops sees objects larger
than a test photo shows them, so testing at a higher resolution than training can add accuracy.
A catdog model ends in global pooling, so its weights run at any size: the model is cloned with
the input size in turn, given the same weights, and scored on the prepared split (decoded at
that size as training decodes it) plain and with flip TTA. The first size should be the one the
model was trained at. The test split is read only when `--split test` asks for it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def at_size(model, size: int):
    """MODEL with a SIZE x SIZE input and the same weights."""
    import keras

    try:
        resized = keras.models.clone_model(model, input_tensors=keras.Input((size, size, 3)))
        resized.set_weights(model.get_weights())
    except ValueError as exc:
        raise ValueError(
            f"this model's weights hold at {model.input_shape[1]} px only (it flattens its "
            f"features rather than pooling them), so it cannot be tested at {size} px"
        ) from exc
    return resized


def accuracies(model, root, sizes: list[int], split: str = "val", batch: int = 64) -> list[dict]:
    """MODEL's accuracy on SPLIT of the prepared set at ROOT, at each size: plain and flip TTA."""
    from catdog import metrics, pipeline

    rows = []
    for size in sizes:
        start = time.monotonic()
        resized = at_size(model, size)
        dec = pipeline.decoded(root, split, size)
        labels = np.asarray(dec.labels).astype(int)
        plain = metrics.predicted(pipeline.predict(resized, dec, batch))
        flipped = metrics.predicted(pipeline.predict(resized, dec, batch, tta=True))
        rows.append(
            {
                "size": size,
                "plain": float(np.mean(plain == labels)),
                "flip_tta": float(np.mean(flipped == labels)),
                "n": len(labels),
                "seconds": time.monotonic() - start,
            }
        )
        print(
            f"{split} at {size} px: plain {rows[-1]['plain']:.4f}, flip TTA "
            f"{rows[-1]['flip_tta']:.4f} ({len(labels)} photos)",
            flush=True,
        )
    return rows


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models:/catdog@champion")
    parser.add_argument("--data", required=True, help="a prepared dataset (data/prepared/NAME)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[96, 112, 128, 144])
    parser.add_argument("--split", default="val", choices=["val", "test"])
    parser.add_argument("--out", default=None, help="also write the rows here, as JSON")
    args = parser.parse_args(argv)

    from catdog.inference import load_classifier

    model = load_classifier(args.model).model
    print(f"{args.model}: trained at {model.input_shape[1]} px", flush=True)
    try:
        rows = accuracies(model, Path(args.data), args.sizes, args.split)
    except ValueError as exc:  # a Flatten-headed model: one sentence, not a traceback
        raise SystemExit(f"benchmarks.testsize: {exc}") from None
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
