"""One tracked training run: an architecture, a prepared dataset, one MLflow run."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from catdog import keys, models, pipeline, runtime
from catdog.data import class_weights, is_imbalanced, objective, resolve_data, resolve_name
from catdog.log import format_seconds, get_logger
from catdog.settings import default
from catdog.tracking import artifacts, runlog, runs, store, tags
from catdog.tracking.fitlog import record_fit

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
    verdict: str | None = None


def train(
    arch: str,
    data: str | Path | None = None,
    *,
    image_size: int | None = None,
    batch_size: int = default("batch_size"),
    epochs: int = default("epochs"),
    lr: float | None = None,
    seed: int = default("seed"),
    patience: int = default("patience"),
    experiment: str | None = default("experiment"),
    precision: str = default("precision"),
    pretrained: bool = default("pretrained"),
    hparams: dict | None = None,
    run_name: str | None = None,
) -> TrainResult:
    """Train ARCH on DATA (see `catdog.data.resolve` for what DATA may be) in one MLflow run."""
    entry = models.get(arch)  # unknown names fail before any work
    size = image_size or entry.default_image_size
    store.configure()  # a store that does not answer fails now, not after decoding the data
    root = resolve_data(data)
    experiment = experiment or resolve_name(None, root)  # one per dataset unless given
    runtime.start()
    import keras

    from catdog.tracking.callbacks import fit_callbacks

    keras.utils.set_random_seed(seed)
    chosen_precision = runtime.set_precision(precision)
    runtime.announce_devices()
    strategy = runtime.strategy()
    splits = pipeline.load(root, size, batch_size, seed=seed)

    hp = models.fixed_hyperparameters({**(hparams or {}), "lr": lr})
    with strategy.scope():
        model = entry.build(
            hp, image_size=size, pretrained=pretrained, num_classes=splits.num_classes
        )

    params = {
        **hp.values,
        **keys.run_settings(
            arch=arch, image_size=size, batch_size=batch_size, epochs=epochs, patience=patience,
            seed=seed, precision=chosen_precision, distribution=runtime.strategy_name(strategy),
            param_count=model.count_params(), n_train=splits.sizes["train"],
            n_val=splits.sizes["val"], pretrained=pretrained if entry.pretrained else None,
        ),
    }  # fmt: skip
    run_tags = {**tags.environment_tags(), tags.ARCH: arch, tags.KIND: tags.KIND_TRAIN}
    t0 = time.perf_counter()
    with (
        runs.sigterm_as_exception(),
        runs.active_run(experiment=experiment, run_name=run_name or arch, tags=run_tags) as run,
    ):
        run_id = run.info.run_id
        runlog.log_params(params)
        artifacts.log_dataset(root, splits.digest)
        log.info(
            "training %s (%s params) at %dpx on %d images, validating on %d; run %s",
            arch,
            f"{params['param_count']:,}",
            size,
            splits.sizes["train"],
            splits.sizes["val"],
            run_id,
        )
        callbacks, logger = fit_callbacks(run_id, arch, epochs, patience, monitor=objective(root))
        callbacks += models.schedule_callbacks(hp.values, epochs)
        model.fit(
            splits.train,
            validation_data=splits.val,
            epochs=epochs,
            callbacks=callbacks + models.adapt_callbacks(splits.train),
            class_weight=class_weights(root) if is_imbalanced(root) else None,
            verbose=0,
        )
        record = record_fit(
            model,
            logger.history,
            logger.seconds_per_epoch,
            splits=splits,
            title=arch,
            log_model=True,
            objective=logger.objective,
        )
    seconds = time.perf_counter() - t0
    summary = record.summary
    log.info(
        "run %s finished in %s: best %s %.4f at epoch %d (train-val gap %+.3f); %s",
        run_id,
        format_seconds(seconds),
        logger.objective,
        summary.get(keys.best(logger.objective), np.nan),
        summary[keys.BEST_EPOCH],
        summary.get("gap_best", np.nan),
        record.verdict,
    )
    return TrainResult(
        run_id, record.model_uri, arch, params, summary, logger.history, seconds, record.verdict
    )
