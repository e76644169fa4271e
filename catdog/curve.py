"""Would more photos help? The data curve: the champion's configuration (the sweep's top row as
`catdog.choose` ranks it: its architecture, hyperparameters, image size and epochs) trained again
on nested, class-stratified fractions of the training split (25%, 50% and 100% by default; each
smaller subset inside the larger, drawn with a fixed seed), each validated on the whole
validation split. The trend through the points, the gain at twice the training split's photos
with its intervals, and the sentence are `catdog.curvefit`'s (pure numbers, no training).

Each fraction is its own run of kind "curve" under the sweep's parent run, logged as every fit
is (params, per-epoch metrics, learning curves). The plot, the points (`data_curve.json`), the
gain with its interval and the sentence (tag `catdog.curve_verdict`) go on the parent run, where
`catdog report` finds them.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from catdog import choose, keys, models, pipeline, plots, runtime, speed
from catdog.curvefit import (
    BOOTSTRAP_DRAWS,
    FLAT,
    HELPS,
    LEVEL,
    MIN_GAIN,
    Backtest,
    DataCurve,
    Point,
    Trend,
    backtest,
    fit_trend,
)
from catdog.errors import CatdogError
from catdog.log import format_seconds, get_logger
from catdog.tracking import runlog, runs, tags

# The curve's numbers live in catdog.curvefit; they stay importable from here, where the
# curve's callers look for them.
__all__ = [
    "BOOTSTRAP_DRAWS",
    "Backtest",
    "DEFAULT_FRACTIONS",
    "FLAT",
    "HELPS",
    "JSON",
    "LEVEL",
    "MIN_GAIN",
    "PNG",
    "DataCurve",
    "Point",
    "Recipe",
    "Trend",
    "backtest",
    "fit_trend",
    "learning_curve",
    "log_curve",
    "logged",
    "nested_subsets",
    "parse_fractions",
    "recipe_of",
    "train_fractions",
]

log = get_logger(__name__)

DEFAULT_FRACTIONS = (0.25, 0.5, 1.0)
PNG, JSON = "data_curve.png", "data_curve.json"  # on the sweep's parent run


def parse_fractions(text: str) -> tuple[float, ...]:
    """ "25%,50%,100%" or "0.25,0.5,1" -> (0.25, 0.5, 1.0): at least two, each in (0, 1]."""
    try:
        values = [
            float(v.strip().rstrip("%")) / (100 if v.strip().endswith("%") else 1)
            for v in text.split(",")
            if v.strip()
        ]
    except ValueError:
        raise CatdogError(
            f"fractions {text!r} are not numbers; write them like 25%,50%,100% or 0.25,0.5,1"
        ) from None
    if len(set(values)) < 2 or not all(0 < v <= 1 for v in values):
        raise CatdogError(
            f"fractions {text!r} must be at least two different shares of the "
            "training split, each more than 0 and at most 1 (100%)"
        )
    return tuple(sorted(set(values)))


def nested_subsets(labels: np.ndarray, fractions, seed: int) -> dict[float, np.ndarray]:
    """Indices (sorted) of each fraction of LABELS, stratified by class and nested: one fixed
    shuffle per class, and each fraction takes the first share of it (at least one photo)."""
    rng = np.random.default_rng(seed)
    order = {c: rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)}
    return {
        f: np.sort(np.concatenate([idx[: max(1, round(f * len(idx)))] for idx in order.values()]))
        for f in fractions
    }


@dataclass(frozen=True)
class Recipe:
    """A configuration to train again: what the champion's trial ran with."""

    arch: str
    values: dict  # its hyperparameters
    image_size: int
    epochs: int
    batch_size: int = 32
    patience: int = 3
    seed: int = 1337
    precision: str = "fp32"
    pretrained: bool = False


def recipe_of(row, trial, parent, epochs: int | None = None) -> Recipe:
    """The recipe of a row of `choose.table` (its hyperparameters) and its trial's run."""
    p, sweep = trial.data.params, parent.data.params
    return Recipe(
        row["arch"],
        dict(row["hyperparameters"]),
        int(p[keys.IMAGE_SIZE]),
        epochs or int(p.get(keys.EPOCHS, sweep.get(keys.EPOCHS, 10))),
        int(p.get("batch_size", sweep.get("batch_size", 32))),
        int(sweep.get("patience", 3)),
        int(p.get("seed", sweep.get("seed", 1337))),
        p.get("precision", "fp32"),
        p.get("pretrained") == "True",
    )


def train_fractions(
    root: str | Path,
    recipe: Recipe,
    fractions=DEFAULT_FRACTIONS,
    *,
    budget_seconds: float | None = None,
    seconds_per_epoch: float | None = None,
    experiment: str | None = None,
    parent_run_id: str | None = None,
    run_tags: dict | None = None,
) -> DataCurve:
    """Train RECIPE on each fraction of ROOT's training split, smallest first, each in a run of
    kind "curve" (under PARENT_RUN_ID), and return the curve. A fraction whose estimated time
    (from SECONDS_PER_EPOCH on the whole split, then from the fractions already run) does not
    fit what is left of BUDGET_SECONDS is skipped, with a sentence saying so."""
    splits = pipeline.load(root, recipe.image_size, recipe.batch_size, seed=recipe.seed)
    train = splits.decoded("train")
    n_full, n_val = len(train.labels), splits.sizes["val"]
    # Seconds per photo-epoch (training plus the whole validation split): the epoch's time grows
    # with the photos trained on, plus the validation pass every fraction makes.
    rate = seconds_per_epoch / (n_full + n_val) if seconds_per_epoch else None
    subsets = nested_subsets(train.labels, sorted(fractions), recipe.seed)
    points, skipped, t0 = [], [], time.monotonic()
    try:
        runtime.set_precision(recipe.precision)
        for fraction, idx in subsets.items():
            need = (
                rate * (len(idx) + n_val) * recipe.epochs + speed.TRIAL_OVERHEAD_S if rate else 0.0
            )
            left = budget_seconds - (time.monotonic() - t0) if budget_seconds else math.inf
            if need > left:
                skipped.append(
                    f"skipped {fraction:.0%} ({len(idx):,} photos): it would take "
                    f"about {format_seconds(need)} and {format_seconds(max(left, 0))}"
                    " of the budget is left"
                )
                log.info("%s", skipped[-1])
                continue
            point, per_epoch = _fit_fraction(
                recipe, splits, idx, fraction, experiment, parent_run_id, run_tags or {}
            )
            points.append(point)
            rate = per_epoch / (len(idx) + n_val)
    finally:
        runtime.set_precision("fp32")
    return DataCurve(recipe.arch, recipe.image_size, recipe.epochs, n_full, points, skipped)


def _fit_fraction(
    recipe: Recipe,
    splits,
    idx: np.ndarray,
    fraction: float,
    experiment: str,
    parent_run_id: str | None,
    run_tags: dict,
) -> tuple[Point, float]:
    """One fraction in its own run: the point, and the fit's seconds per epoch."""
    import keras

    from catdog.tracking.callbacks import fit_callbacks
    from catdog.tracking.fitlog import record_fit

    full = splits.decoded("train")
    subset = pipeline.Decoded(
        full.images[idx], full.labels[idx], tuple(full.paths[i] for i in idx), False
    )
    model, strategy = _build(recipe, splits.num_classes)
    label = f"{recipe.arch} {fraction:.0%}"
    t0 = time.monotonic()
    with runs.active_run(
        experiment=experiment,
        parent_run_id=parent_run_id,
        run_name=f"{recipe.arch}-curve-{fraction:.0%}",
        tags={
            **run_tags,
            tags.KIND: tags.KIND_CURVE,
            tags.ARCH: recipe.arch,
            **tags.environment_tags(),
        },
    ) as run:
        runlog.log_params(_params(recipe, fraction, len(idx), splits.sizes["val"], model, strategy))
        callbacks, logger = fit_callbacks(run.info.run_id, label, recipe.epochs, recipe.patience)
        train = pipeline.dataset(subset, recipe.batch_size, shuffle=True, seed=recipe.seed)
        model.fit(
            train,
            validation_data=splits.val,
            epochs=recipe.epochs,
            verbose=0,
            callbacks=[
                *models.adapt_callbacks(train),
                *callbacks,
                *models.schedule_callbacks(recipe.values, recipe.epochs),
            ],
        )
        record_fit(
            model,
            logger.history,
            logger.seconds_per_epoch,
            splits=splits,
            title=f"{recipe.arch} on {fraction:.0%} of the training photos",
            log_model=False,
        )
        labels, probs = splits.predict(model, "val")  # at its best epoch (restored)
    point = Point(
        fraction,
        len(idx),
        probs.argmax(axis=1) == labels.astype(int),
        run.info.run_id,
        time.monotonic() - t0,
    )
    log.info(
        "[%s] %d photos: val accuracy %.4f (%s)",
        label,
        len(idx),
        point.accuracy,
        format_seconds(point.seconds),
    )
    del model
    keras.backend.clear_session()
    runtime.release_memory()
    return point, logger.seconds_per_epoch


def _build(recipe: Recipe, num_classes: int):
    """RECIPE's model, built from the same seed for every fraction (so every fraction starts
    from the same weights) in the distribution strategy's scope; and that strategy."""
    import keras

    keras.utils.set_random_seed(recipe.seed)
    strategy = runtime.strategy()
    with strategy.scope():
        model = models.get(recipe.arch).build(
            models.fixed_hyperparameters(recipe.values),
            image_size=recipe.image_size,
            pretrained=recipe.pretrained,
            num_classes=num_classes,
        )
    return model, strategy


def _params(recipe: Recipe, fraction: float, n_train: int, n_val: int, model, strategy) -> dict:
    """A fraction's run params: the recipe's hyperparameters and how the fit ran."""
    return {
        **recipe.values,
        **keys.run_settings(
            arch=recipe.arch,
            image_size=recipe.image_size,
            batch_size=recipe.batch_size,
            epochs=recipe.epochs,
            patience=recipe.patience,
            seed=recipe.seed,
            precision=recipe.precision,
            fraction=fraction,
            n_train=n_train,
            n_val=n_val,
            param_count=model.count_params(),
            strategy=runtime.strategy_name(strategy),
            pretrained=recipe.pretrained if models.get(recipe.arch).pretrained else None,
        ),
    }


def learning_curve(
    sweep: str = "latest",
    *,
    experiment: str | None = None,
    fractions=DEFAULT_FRACTIONS,
    budget_seconds: float | None = None,
    epochs: int | None = None,
    plot_path: str | Path | None = None,
) -> DataCurve:
    """`catdog curve`: the data curve of SWEEP's champion configuration (see the module's
    docstring), logged to the sweep's parent run; its plot also written to PLOT_PATH if given.
    EPOCHS overrides the epochs its trial was given."""
    chosen = choose.champion(choose.table(sweep, (), None, experiment))  # on its objective
    parent, trial = chosen.parent, runlog.get(chosen.row["run_id"])
    root = Path(parent.data.params[keys.DATA])
    if not root.is_dir():
        raise CatdogError(
            f"the prepared dataset of sweep {parent.info.run_id} is gone from "
            f"{root}; prepare it there again to draw its curve"
        )
    recipe = recipe_of(chosen.row, trial, parent, epochs)
    log.info(
        "data curve of %s at %dpx, %d epochs, on %s of the training photos",
        recipe.arch,
        recipe.image_size,
        recipe.epochs,
        ", ".join(f"{f:.0%}" for f in sorted(fractions)),
    )
    curve = train_fractions(
        root,
        recipe,
        fractions,
        budget_seconds=budget_seconds,
        seconds_per_epoch=trial.data.metrics.get(keys.SECONDS_PER_EPOCH),
        experiment=experiment,
        parent_run_id=parent.info.run_id,
        run_tags={tags.SWEEP_KEY: parent.data.tags.get(tags.SWEEP_KEY, "")},
    )
    curve.sweep_run_id = parent.info.run_id
    log_curve(curve, plot_path)
    log.info("data curve: %s", curve.sentence)
    if curve.backtest:
        log.info("data curve: %s", curve.backtest.sentence)
    return curve


def log_curve(curve: DataCurve, plot_path: str | Path | None = None) -> None:
    """The curve's plot, points and sentence on its sweep's parent run (and the plot at
    PLOT_PATH)."""
    with tempfile.TemporaryDirectory() as tmp:
        png, data = Path(tmp) / PNG, Path(tmp) / JSON
        plots.save(curve.figure(), png)
        data.write_text(curve.to_json())
        runlog.log_file(png, curve.sweep_run_id)
        runlog.log_file(data, curve.sweep_run_id)
        if plot_path:
            curve.plot = Path(plot_path)
            curve.plot.parent.mkdir(parents=True, exist_ok=True)
            curve.plot.write_bytes(png.read_bytes())
    runlog.set_tag(curve.sweep_run_id, tags.CURVE_VERDICT, curve.sentence)
    if curve.trend:
        low, high = curve.gain_interval
        runlog.log_metrics(
            {keys.CURVE_GAIN: curve.gain, keys.CURVE_GAIN_LOW: low, keys.CURVE_GAIN_HIGH: high},
            curve.sweep_run_id,
        )
    if curve.backtest:
        runlog.log_metrics(
            {
                keys.CURVE_BACKTEST_PREDICTED: curve.backtest.predicted,
                keys.CURVE_BACKTEST_MEASURED: curve.backtest.measured,
            },
            curve.sweep_run_id,
        )


def logged(sweep_run_id: str) -> DataCurve | None:
    """The curve logged to a sweep's parent run, or None if none was drawn."""
    if not runlog.has_file(sweep_run_id, JSON):
        return None
    return DataCurve.from_json(runlog.read_text(sweep_run_id, JSON), sweep_run_id)
