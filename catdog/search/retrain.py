"""After the search: a chosen configuration retrained, in runs beside the trials.

- The final fit (`final_fit = true`): the configuration that won on validation is retrained on
  train+val for its best epoch count, at its image size, in a run of kind "final" under the
  sweep's parent, and tested once; `register` promotes it.
- Repeats (`repeats = K`): each architecture's best configuration is trained K more times with
  other seeds, runs of kind "repeat"; the architecture's run then carries the mean, standard
  deviation and 95% confidence interval of their best val accuracy.

`catdog.search.sweep` calls both with its `SweepContext`; which configuration is the winner is
`catdog.choose`'s rule.
"""

from __future__ import annotations

import time

import numpy as np

from catdog import choose, heldout, keys, metrics, models, pipeline, runtime
from catdog.log import format_seconds, get_logger
from catdog.plan import FINAL_COST
from catdog.search import runtree
from catdog.search.context import SweepContext
from catdog.search.tuner import trial_settings
from catdog.tracking import artifacts, queries, runlog, runs, tags
from catdog.tracking.callbacks import EpochLogger, fit_callbacks
from catdog.tracking.fitlog import record_fit

log = get_logger(__name__)

FIRST_STEP = 0  # the step EpochLogger logs a fit's first epoch at (Keras's epoch index)


def final_fit(ctx: SweepContext) -> dict | None:
    """Retrain the winner's configuration on train+val for the epochs at which its trial was
    best (early stopping told us), in a run of kind "final" linked to that trial; evaluate it
    once on the test split. This is the model `register` promotes. A finished final fit of the
    same trial is not repeated on resume."""
    import keras

    cfg = ctx.cfg
    top = choose.table(ctx.parent_run_id, (), ctx.objective, cfg.experiment).iloc[0]
    arch, source = top["arch"], runlog.get(top["run_id"])
    trial_id = source.data.tags.get(tags.TRIAL_ID)
    where = {
        tags.SWEEP_KEY: ctx.key,
        tags.KIND: tags.KIND_FINAL,
        tags.ARCH: arch,
        tags.TRIAL_ID: trial_id,
    }
    done = queries.search(ctx.experiment_id, where, (runs.FINISHED,))
    if done:
        run = done[-1]
        log.info("final fit of %s trial %s already done (run %s)", arch, trial_id, run.info.run_id)
        return {
            "run_id": run.info.run_id,
            "arch": arch,
            keys.TEST_ACCURACY: run.data.metrics.get(keys.TEST_ACCURACY),
        }
    queries.retire(ctx.experiment_id, where)
    values = dict(top["hyperparameters"])
    size = int(source.data.params.get(keys.IMAGE_SIZE, cfg.image_size))  # a race searched it
    epochs = max(int(source.data.metrics.get(keys.BEST_EPOCH, ctx.epochs_for(arch))), 1)
    if not _affordable(ctx, source, arch, size, epochs):
        return None
    t0 = time.monotonic()
    model, run_id = _fit_final(ctx, top, source, where, values, size, epochs)
    run = runlog.get(run_id)
    frame = heldout.test_predictions(run, runlog.get(ctx.parent_run_id), model)
    accuracy = heldout.test_metrics(frame)["accuracy"]
    log.info(
        "final fit done in %s: test accuracy %.4f on %d photos never used for a choice",
        format_seconds(time.monotonic() - t0),
        accuracy,
        len(frame),
    )
    del model
    keras.backend.clear_session()
    runtime.release_memory()
    return {"run_id": run.info.run_id, "arch": arch, keys.TEST_ACCURACY: accuracy}


def _affordable(ctx: SweepContext, source, arch: str, size: int, epochs: int) -> bool:
    """Whether the final fit's EPOCHS on train+val end within the budget, at the speed its trial
    actually trained (the plan's measurement can be optimistic); if not, say so and tag it."""
    if ctx.deadline is None:
        return True
    per_epoch = source.data.metrics.get(keys.SECONDS_PER_EPOCH) or ctx.plan.seconds_per_epoch(
        arch, size
    )
    need = epochs * per_epoch * FINAL_COST
    left = ctx.deadline - time.monotonic()
    if need <= left:
        return True
    log.info(
        "no final fit: %s's %d epochs on train+val would take about %s and the "
        "budget has %s left; `register` will promote its best trial instead",
        arch,
        epochs,
        format_seconds(need),
        format_seconds(max(left, 0)),
    )
    runlog.set_tag(ctx.parent_run_id, tags.TIME_LIMITED, tags.TRUE)
    return False


def _fit_final(ctx: SweepContext, top, source, where: dict, values: dict, size: int, epochs: int):
    """The final fit itself, in its own run: (the trained model, its run id)."""
    import keras

    cfg, arch = ctx.cfg, top["arch"]
    horizon = int(source.data.params.get(keys.EPOCHS, ctx.epochs_for(arch)))
    keras.utils.set_random_seed(cfg.seed)
    train_val = pipeline.combined(
        ctx.data_root, ("train", "val"), size, cfg.batch_size, seed=cfg.seed
    )
    distribution = runtime.strategy()
    ctx.use_precision(arch)
    with distribution.scope():
        model = models.get(arch).build(
            models.fixed_hyperparameters(values),
            image_size=size,
            pretrained=cfg.pretrained,
            num_classes=ctx.num_classes,
        )
    log.info(
        "final fit: %s trial %s (%s %.4f) on train+val (%d images at %dpx) for %d epochs",
        arch,
        where[tags.TRIAL_ID],
        ctx.objective,
        top[ctx.objective],
        train_val.n,
        size,
        epochs,
    )
    with runs.active_run(
        experiment=cfg.experiment,
        parent_run_id=ctx.parent_run_id,
        run_name=f"{arch}-final",
        tags={**where, tags.SOURCE_RUN_ID: source.info.run_id, **tags.environment_tags()},
    ) as run:
        runlog.log_params(
            {
                **values,
                **trial_settings(ctx, arch, distribution, epochs, size),
                **keys.run_settings(
                    trained_on="train+val",
                    n_train=train_val.n,
                    schedule_epochs=horizon,
                    param_count=model.count_params(),
                ),
            }
        )
        logger = EpochLogger(run.info.run_id, f"{arch} final", epochs)
        model.fit(
            train_val.dataset,
            epochs=epochs,
            verbose=0,
            class_weight=ctx.class_weight,
            callbacks=[
                *models.adapt_callbacks(train_val.dataset),
                logger,
                _replayed_rates(source, values, horizon),
            ],
        )
        runlog.log_metrics({keys.SECONDS_PER_EPOCH: logger.seconds_per_epoch})
        artifacts.log_keras_model(
            model, ctx.splits_at(size).decoded("val").images[:1].astype("float32"), ctx.classes
        )
    return model, run.info.run_id


def _replayed_rates(source, values: dict, horizon: int):
    """The learning rates the source trial trained at, epoch by epoch, so the final fit follows
    the trajectory that produced the chosen epoch (a plateau schedule needs val data the final
    fit does not have). A trial whose log does not start at the first epoch (one Hyperband
    continued from an earlier round, or one logged before rates were recorded) falls back to
    its schedule, which for cosine and constant is the same trajectory."""
    import keras

    history = runlog.history(source.info.run_id, keys.LEARNING_RATE)
    rates = [value for _, value in history]
    if not history or history[0][0] > FIRST_STEP:
        fallback = (
            models.schedule_callbacks({**values, "lr_schedule": "cosine"}, horizon)
            if values.get("lr_schedule") == "cosine"
            else []
        )
        return fallback[0] if fallback else keras.callbacks.Callback()
    return keras.callbacks.LearningRateScheduler(
        lambda epoch, lr: rates[min(epoch, len(rates) - 1)]
    )


def run_repeats(ctx: SweepContext, arch: str, arch_run_id: str, best: dict) -> None:
    """Train the architecture's best configuration `repeats` more times with other seeds.

    A repeat already FINISHED (an earlier, interrupted run of this sweep) is not run again; one
    left RUNNING is marked KILLED and run again.
    """
    import keras

    cfg, entry = ctx.cfg, models.get(arch)
    values, trial_id = best["hyperparameters"], best["trial_id"]
    for r in range(cfg.repeats):
        # Tied to the trial they retrain: if a resumed search finds a better configuration,
        # the repeats of the old one are not counted for the new one.
        where = {
            tags.SWEEP_KEY: ctx.key,
            tags.KIND: tags.KIND_REPEAT,
            tags.ARCH: arch,
            tags.TRIAL_ID: trial_id,
            tags.REPEAT: str(r),
        }
        if queries.search(ctx.experiment_id, where, (runs.FINISHED,)):
            continue  # counted when it finished (`progress`)
        queries.retire(ctx.experiment_id, where)
        seed = cfg.seed + 1000 * (r + 1)
        keras.utils.set_random_seed(seed)
        t0 = time.monotonic()
        distribution = runtime.strategy()
        ctx.use_precision(arch)
        with distribution.scope():
            model = entry.build(
                models.fixed_hyperparameters(values),
                image_size=cfg.image_size,
                pretrained=cfg.pretrained,
                num_classes=ctx.num_classes,
            )
        with runs.active_run(
            experiment=cfg.experiment,
            parent_run_id=arch_run_id,
            run_name=f"{arch}-repeat-{r}",
            tags={**where, **tags.environment_tags()},
        ) as run:
            epochs = ctx.epochs_for(arch)
            runlog.log_params(
                {
                    **values,
                    **trial_settings(ctx, arch, distribution, epochs),
                    **keys.run_settings(seed=seed, repeat=r, param_count=model.count_params()),
                }
            )
            callbacks, logger = fit_callbacks(
                run.info.run_id, f"{arch} r{r}", epochs, cfg.patience, monitor=ctx.objective
            )
            model.fit(
                ctx.splits.train,
                validation_data=ctx.splits.val,
                epochs=epochs,
                class_weight=ctx.class_weight,
                callbacks=[
                    *models.adapt_callbacks(ctx.splits.train),
                    *callbacks,
                    *models.schedule_callbacks(values, epochs),
                ],
                verbose=0,
            )
            record = record_fit(
                model,
                logger.history,
                logger.seconds_per_epoch,
                splits=ctx.splits,
                title=f"{arch} repeat {r}",
                log_model=False,
                objective=ctx.objective,
            )
        del model
        keras.backend.clear_session()
        runtime.release_memory()
        seconds = time.monotonic() - t0
        ctx.progress.trial_done(seconds)
        log.info(
            "[%s] repeat %d/%d (seed %d)  %s %.4f  %s  (%s; %s)",
            arch,
            r + 1,
            cfg.repeats,
            seed,
            ctx.objective,
            record.summary.get(keys.best(ctx.objective)),
            record.verdict,
            format_seconds(seconds),
            ctx.progress_line(),
        )


REPEATED = (
    "best_val_accuracy",
    "best_val_loss",
    "best_val_auc",
    keys.best(keys.VAL_BALANCED_ACCURACY),  # an imbalanced dataset's objective
)


def log_repeat_stats(
    arch_run_id: str, exp_id: str, key: str, arch: str, trial_id: str, repeats: int
) -> dict:
    """Mean, std and 95% CI over the best trial's repeats, as metrics of the architecture's
    run (only the repeats asked for now, when an earlier run of the sweep asked for more)."""
    found = [
        r
        for r in queries.search(
            exp_id,
            {
                tags.SWEEP_KEY: key,
                tags.KIND: tags.KIND_REPEAT,
                tags.ARCH: arch,
                tags.TRIAL_ID: trial_id,
            },
            (runs.FINISHED,),
        )
        if int(r.data.tags.get(tags.REPEAT, 0)) < repeats
    ]
    out = {"repeats": len(found)}
    for name in REPEATED:
        stats = metrics.mean_ci([r.data.metrics.get(name) for r in found])
        for stat in ("mean", "std", "ci_low", "ci_high"):
            if not np.isnan(stats[stat]):
                out[f"{name}_{stat}"] = stats[stat]
    runlog.log_metrics(out, arch_run_id)
    return out


def repeat_all(ctx: SweepContext, results: dict[str, dict]) -> None:
    """Each architecture's repeats, after every search, so the searches are the same with or
    without them (training consumes TensorFlow's random state)."""
    for arch in ctx.cfg.archs if ctx.role == "local" and ctx.cfg.repeats else ():
        if not results.get(arch):
            continue
        current = runtree.arch_run(ctx, arch)  # reopened
        try:
            run_repeats(ctx, arch, current, results[arch])
            results[arch].update(
                log_repeat_stats(
                    current,
                    ctx.experiment_id,
                    ctx.key,
                    arch,
                    results[arch]["trial_id"],
                    ctx.cfg.repeats,
                )
            )
        except BaseException as exc:
            runs.terminate(current, runs.status_for(exc))
            raise
        runlog.finish(current)
