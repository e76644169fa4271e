"""Which test-time views would a served model afford? Each set's accuracy on validation, and
what each number of views costs the model per photo, in one run.

    python -m benchmarks.ttaviews [--model models:/catdog@champion] --data PREPARED
                                  [--split val] [--out FILE]

catdog ships flip TTA (the photo and its mirror) when it helps on validation. Ten views (each of
the two also shifted up, down, left and right, `benchmarks.tricks.views`) read higher in most of
the tricks' runs, but the served rate has a target, so this scores the cheaper sets too:
- plain (1 view), flip (2);
- flip + vertical shifts, flip + horizontal shifts (6 each), all ten;
- flip at the trained size and at 32 px more (4 views at two sizes: the weights run at any size,
  `benchmarks.testsize.at_size`).
The views' class probabilities are averaged, as `catdog.inference.probabilities` averages flip.

The cost side: `predict_on_batch` on one photo's 1, 2, 4, 6 and 10 views at the trained size,
the median of STEPS calls after a warm-up: the floor a served photo cannot go under with that
many views (`benchmarks --only serving` measures the server against the 1- and 2-view floors).
The test split is read only when `--split test` asks for it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.probes import median_ms
from benchmarks.tricks import TTA_SHIFT, views

STEPS = 60
VIEW_COUNTS = (1, 2, 4, 6, 10)
# Index sets into `views`: the photo, its mirror, the photo shifted down, up, right, left, then
# the mirror shifted the same ways.
SETS = {
    "plain": [0],
    "flip": [0, 1],
    "flip + vertical shifts": [0, 1, 2, 3, 6, 7],
    "flip + horizontal shifts": [0, 1, 4, 5, 8, 9],
    "flip + all shifts": list(range(10)),
}


def per_view_outputs(model, images: np.ndarray, shift: int, batch: int = 64) -> list[np.ndarray]:
    """MODEL's outputs for each of the ten `views` of IMAGES, view by view."""
    outs = []
    for i in range(0, len(images), batch):
        x = np.asarray(images[i : i + batch], np.float32)
        outs.append([np.asarray(model.predict_on_batch(v)) for v in views(x, shift)])
    return [np.concatenate(column) for column in zip(*outs)]


def accuracies(model, root: Path, split: str = "val") -> dict[str, float]:
    from benchmarks.testsize import at_size
    from catdog import metrics, pipeline

    size = int(model.input_shape[1])
    dec = pipeline.decoded(root, split, size)
    outs = per_view_outputs(model, dec.images, max(1, round(TTA_SHIFT * size)))

    def accuracy(probabilities) -> float:
        probs = metrics.probability_matrix(np.mean(probabilities, axis=0))
        return float(np.mean(metrics.predicted(probs) == dec.labels))

    scores = {name: accuracy([outs[i] for i in idx]) for name, idx in SETS.items()}
    larger = size + 32
    big = pipeline.decoded(root, split, larger)
    resized = at_size(model, larger)
    pixels = np.asarray(big.images, np.float32)
    more = [resized.predict(pixels, verbose=0), resized.predict(pixels[:, :, ::-1], verbose=0)]
    scores[f"flip at {size} and {larger} px"] = accuracy([outs[0], outs[1], *more])
    return scores


def floor_ms(model, steps: int = STEPS) -> dict[int, float]:
    """Milliseconds of `predict_on_batch` for one photo's N views, for each N in VIEW_COUNTS."""
    size = int(model.input_shape[1])
    photo = np.random.default_rng(0).uniform(0, 255, (1, size, size, 3)).astype(np.float32)
    costs = {}
    for n in VIEW_COUNTS:
        batch = np.repeat(photo, n, axis=0)
        costs[n] = median_ms(lambda b=batch: model.predict_on_batch(b), steps, warmup=5)
    return costs


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models:/catdog@champion")
    parser.add_argument("--data", required=True, help="a prepared dataset (data/prepared/NAME)")
    parser.add_argument("--split", default="val", choices=["val", "test"])
    parser.add_argument("--out", default=None, help="also write the result here, as JSON")
    args = parser.parse_args(argv)

    from catdog.inference import load_classifier

    model = load_classifier(args.model).model
    scores = accuracies(model, Path(args.data), args.split)
    for name, value in scores.items():
        print(f"{args.split} {name:28s} {value:.4f}", flush=True)
    costs = floor_ms(model)
    for n, ms in costs.items():
        print(f"{n:2d} views of one photo: {ms:5.1f} ms ({1000 / ms:.0f} photos/s)", flush=True)
    result = {"model": args.model, "split": args.split, "accuracy": scores, "floor_ms": costs}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
