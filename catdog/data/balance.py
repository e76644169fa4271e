"""Class balance: whether a prepared dataset is imbalanced, how many of each class its held-out
splits keep, and the class weights and objective that training on it should use.

A dataset is imbalanced when its largest class has more than IMBALANCE_RATIO times the usable
images of its smallest. Plain accuracy then rewards a model that favours the large class (150
photos of one class and 12 of another: 93% for always answering the first), and a split drawn
in proportion leaves the small class 2 photos in test. So `prepare` warns with the counts,
records the balance in summary.json (`balance`), and gives every class at least
`held_out_floor` images in val and in test; training weighs each class by `class_weights` and
chooses by `objective`: balanced accuracy, the mean of the per-class recalls.

Balanced datasets are split in proportion, as they always were, so their splits and digests do
not change.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from catdog import keys
from catdog.data.prepared import classes, load_manifest, read_summary
from catdog.errors import CatdogError

IMBALANCE_RATIO = 3.0
MIN_HELD_OUT = 10  # of each class, in val and in test, where the class has the images
BALANCE = "balance"  # its key in summary.json
# What an imbalanced dataset's model is chosen by: the mean per-class recall on validation.
BALANCED_OBJECTIVE = keys.VAL_BALANCED_ACCURACY


def describe(counts: dict[str, int]) -> dict:
    """The balance of a dataset with COUNTS usable images per class (the summary's `balance`)."""
    ratio = max(counts.values()) / max(1, min(counts.values()))
    return {
        "counts": dict(counts),
        "ratio": round(ratio, 2),
        "imbalanced": ratio > IMBALANCE_RATIO,
        "threshold": IMBALANCE_RATIO,
        "min_held_out_per_class": MIN_HELD_OUT,
    }


def held_out_floor(n: int) -> int:
    """The fewest images of a class of N that val and test each keep in an imbalanced dataset:
    MIN_HELD_OUT, or a quarter of the class when it is small, so at least half of it trains."""
    return min(MIN_HELD_OUT, n // 4)


def warning(source: str | Path, balance: dict) -> str:
    """The one line `prepare` warns with."""
    counts = sorted(balance["counts"].items(), key=lambda item: -item[1])
    listed = ", ".join(f"{c} {n}" for c, n in counts)
    smallest = counts[-1]
    return (
        f"imbalanced classes in {source}: {listed} (the largest is {balance['ratio']:g}x the "
        f"smallest); val and test each keep at least {held_out_floor(smallest[1])} "
        f"{smallest[0]} photos, and training weighs the classes and chooses by balanced "
        f"accuracy (docs/data.md)"
    )


def sweep_line(root: str | Path) -> str:
    """The one line a sweep of the imbalanced dataset at ROOT says: what it searches and chooses
    on, and why."""
    counts = sorted(balance(root)["counts"].items(), key=lambda item: -item[1])
    listed = ", ".join(f"{c} {n}" for c, n in counts)
    largest, share = counts[0][0], counts[0][1] / max(1, sum(n for _, n in counts))
    return (
        f"imbalanced classes ({listed}): the sweep searches, stops early and chooses on "
        f"{BALANCED_OBJECTIVE} (the mean per-class recall) rather than val accuracy, which a "
        f"model always answering {largest} would score about {share:.2f} on, and every fit "
        f"weighs the classes so each counts the same in the loss (docs/data.md)"
    )


def balance(root: str | Path) -> dict:
    """The balance of the prepared dataset at ROOT: recorded at preparing, else counted from
    its manifest (datasets prepared before it was recorded)."""
    recorded = read_summary(root).get(BALANCE)
    if recorded:
        return recorded
    counts = load_manifest(root)["label"].astype(str).value_counts()
    return describe({c: int(counts.get(c, 0)) for c in classes(root)})


def is_imbalanced(root: str | Path) -> bool:
    return bool(balance(root)["imbalanced"])


def class_weights(root: str | Path) -> dict[int, float]:
    """Balanced class weights over the train split, {class index: weight} as Keras's
    `fit(class_weight=...)` takes them: n_train / (n_classes * n_train of the class), so every
    class weighs the same in the loss (scikit-learn's `compute_class_weight("balanced")`)."""
    from sklearn.utils.class_weight import compute_class_weight

    names = classes(root)
    manifest = load_manifest(root)
    train = manifest.loc[manifest["split"] == "train", "label"].astype(str)
    missing = sorted(set(names) - set(train))
    if missing:
        raise CatdogError(
            f"class {missing[0]!r} has no training images in {root}; prepare the "
            f"dataset again with more of its photos"
        )
    index = {c: i for i, c in enumerate(names)}
    y = np.array([index[c] for c in train])
    weights = compute_class_weight("balanced", classes=np.arange(len(names)), y=y)
    return {i: float(w) for i, w in enumerate(weights)}


def objective(root: str | Path) -> str:
    """The validation metric a sweep of the dataset at ROOT should choose by: balanced accuracy
    when it is imbalanced, else accuracy (keys.OBJECTIVE)."""
    return BALANCED_OBJECTIVE if is_imbalanced(root) else keys.OBJECTIVE
