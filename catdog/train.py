"""One tracked training run: an architecture, a prepared dataset, one MLflow run."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from catdog import models, pipeline, runtime, tracking
from catdog.data.prepare import resolve_data
from catdog.log import get_logger

log = get_logger(__name__)


@dataclass
class TrainResult:
    run_id: str
    model_uri: str
    arch: str
    params: dict
    summary: dict
    history: dict = field(repr=False)
    seconds: float = 0.0


def fixed_hyperparameters(values: dict | None):
    """A HyperParameters object where the given values are fixed; the rest keep builder defaults."""
    import keras_tuner as kt

    hp = kt.HyperParameters()
    for name, value in (values or {}).items():
        if value is not None:
            hp.Fixed(name, value)
    return hp


def fit_callbacks(run_id: str, label: str, epochs: int, patience: int, initial_epoch: int = 0):
    import keras

    logger = tracking.EpochLogger(run_id, label, epochs, initial_epoch)
    stop = keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=patience,
                                         restore_best_weights=True)
    return [stop, logger], logger


def predict_split(model, splits: pipeline.Splits, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probabilities) for an unshuffled split, in manifest order."""
    dec = splits.decoded(split)
    ds = pipeline.dataset(dec, splits.batch_size, shuffle=False)
    return dec.labels, model.predict(ds, verbose=0).ravel()


def train(arch: str, data: str | Path, *, image_size: int | None = None, batch_size: int = 32,
          epochs: int = 10, lr: float | None = None, seed: int = 1337, patience: int = 3,
          experiment: str = "catdog", precision: str = "fp32", hparams: dict | None = None,
          run_name: str | None = None) -> TrainResult:
    import keras

    entry = models.get(arch)  # unknown names fail before any work
    size = image_size or entry.default_image_size
    root = resolve_data(data)
    tracking.configure()
    runtime.quiet()
    keras.utils.set_random_seed(seed)
    chosen_precision = runtime.set_precision(precision)
    strategy = runtime.strategy()
    splits = pipeline.load(root, size, batch_size, seed=seed)

    hp = fixed_hyperparameters({**(hparams or {}), "lr": lr})
    with strategy.scope():
        model = entry.build(hp, image_size=size)

    params = {**hp.values, "arch": arch, "image_size": size, "batch_size": batch_size,
              "epochs": epochs, "patience": patience, "seed": seed,
              "precision": chosen_precision, "strategy": runtime.strategy_name(strategy),
              "param_count": model.count_params(), "n_train": splits.sizes["train"],
              "n_val": splits.sizes["val"]}
    tags = {**tracking.environment_tags(), "catdog.arch": arch, "catdog.kind": "train"}
    t0 = time.perf_counter()
    with tracking.sigterm_as_exception(), tracking.active_run(
            experiment=experiment, run_name=run_name or arch, tags=tags) as run:
        import mlflow

        run_id = run.info.run_id
        mlflow.log_params(params)
        tracking.log_dataset(root, splits.digest)
        log.info("training %s (%s params) at %dpx on %d images, validating on %d; run %s",
                 arch, f"{params['param_count']:,}", size, splits.sizes["train"],
                 splits.sizes["val"], run_id)
        callbacks, logger = fit_callbacks(run_id, arch, epochs, patience)
        model.fit(splits.train, validation_data=splits.val, epochs=epochs, callbacks=callbacks,
                  verbose=0)
        summary = tracking.history_summary(logger.history)
        summary["seconds_per_epoch"] = float(np.mean(logger.seconds))
        mlflow.log_metrics(summary)
        from catdog import plots

        tracking.log_figure(plots.learning_curves(logger.history, title=f"{arch} learning curves"),
                            "learning_curves.png")
        y, p = predict_split(model, splits, "val")
        tracking.log_evaluation(y, p, "val", arch, headline=False)
        sample = splits.decoded("val").images[:1].astype(np.float32)
        info = tracking.log_keras_model(model, sample)
    seconds = time.perf_counter() - t0
    log.info("run %s finished in %s: best val_accuracy %.4f at epoch %d (train-val gap %+.3f)",
             run_id, tracking.format_seconds(seconds), summary.get("best_val_accuracy", np.nan),
             summary["best_epoch"], summary.get("gap_best", np.nan))
    return TrainResult(run_id, info.model_uri, arch, params, summary, logger.history, seconds)
