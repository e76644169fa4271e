"""The tracked tuner: KerasTuner's tuners with every trial a nested MLflow run, and the
hypermodel that builds one architecture.

KerasTuner's documented hooks are where catdog hooks in: `pre_create_trial` (may a trial start
within the budget?), `run_trial` (the trial inside its own run, its fit logged epoch by epoch),
and the hypermodel's `build`/`fit`. A strategy picks the tuner class (`TUNERS`) and may subclass
the hypermodel (the race's builds whichever architecture the oracle drew).
"""

from __future__ import annotations

import time

import keras
import keras_tuner as kt

from catdog import keys, metrics, models, runtime
from catdog.keys import OBJECTIVE
from catdog.log import get_logger
from catdog.search.context import SweepContext, TimeLimitReached
from catdog.tracking import queries, runlog, runs, store, tags
from catdog.tracking.callbacks import fit_callbacks
from catdog.tracking.fitlog import record_fit

log = get_logger(__name__)


class ArchHyperModel(kt.HyperModel):
    """One architecture's builder as a HyperModel; `fit` keeps the model for logging."""

    def __init__(
        self,
        entry: models.Architecture,
        image_size: int,
        pretrained: bool,
        epochs: int,
        num_classes: int = 2,
        precision: str = "fp32",
    ):
        super().__init__(name=entry.name)
        self.entry, self.image_size, self.pretrained = entry, image_size, pretrained
        self.epochs = epochs  # the schedule's horizon: Hyperband's longest fit
        self.num_classes = num_classes  # the dataset's (SweepContext.num_classes)
        self.precision = precision  # the plan's choice for this architecture
        self.last_model, self.fit_seconds = None, 0.0

    def build(self, hp):
        runtime.set_precision(self.precision)
        return self.entry.build(
            hp, image_size=self.image_size, pretrained=self.pretrained, num_classes=self.num_classes
        )

    def size(self, hp) -> int:
        return self.image_size

    def values(self, hp) -> dict:
        """The trial's hyperparameters under the names the builder uses."""
        return hp.values

    def fit(self, hp, model, *args, **kwargs):
        # Timed here, around model.fit alone, so a trial's overhead counts build and compile.
        self.last_model = model
        train = args[0] if args else kwargs.get("x")
        kwargs["callbacks"] = [
            *models.adapt_callbacks(train),
            *kwargs.get("callbacks", []),
            *models.schedule_callbacks(hp.values, self.epochs),
        ]
        t0 = time.monotonic()
        try:
            return model.fit(*args, **kwargs)
        finally:
            self.fit_seconds = time.monotonic() - t0


def plain(values: dict) -> dict:
    """A joint search's trial values under the builder's names: its architecture's, unscoped
    (see `JointHyperModel`)."""
    prefix = f"{values['arch']}/"
    return {
        "arch": values["arch"],
        **{k[len(prefix) :]: v for k, v in values.items() if k.startswith(prefix)},
        **{k: v for k, v in values.items() if k.startswith("tuner/")},
    }


class JointHyperModel(ArchHyperModel):
    """A search over architectures and image sizes at once: `arch` is a hyperparameter, and each
    architecture's own (its `image_size` among them) live under its name scope, active only when
    it is drawn. Every trial builds the drawn architecture and trains on the split at the size
    it drew."""

    def __init__(self, ctx: SweepContext, epochs: int):
        super().__init__(
            models.get(ctx.cfg.archs[0]),
            ctx.cfg.image_size,
            ctx.cfg.pretrained,
            epochs,
            ctx.num_classes,
        )
        self.ctx = ctx

    def build(self, hp):
        arch = hp.get("arch")
        self.ctx.use_precision(arch)
        with hp.conditional_scope("arch", [arch]), hp.name_scope(arch):
            return models.get(arch).build(
                hp,
                image_size=hp.get("image_size"),
                pretrained=self.pretrained,
                num_classes=self.num_classes,
            )

    def size(self, hp) -> int:
        return int(self.values(hp)["image_size"])

    def values(self, hp) -> dict:
        return plain(hp.values)

    def fit(self, hp, model, *args, **kwargs):
        splits = self.ctx.splits_at(self.size(hp))
        kwargs.pop("validation_data", None)
        return super().fit(hp, model, splits.train, validation_data=splits.val, **kwargs)


class StopAtDeadline(keras.callbacks.Callback):
    """Ends a fit at the first batch that passes DEADLINE, a Unix time: Keras then validates
    what it has and stops, so a trial that started before the deadline ends within a batch of
    it, however long its epochs are."""

    def __init__(self, deadline: float, label: str):
        super().__init__()
        self.deadline, self.label = deadline, label

    def on_train_batch_end(self, batch, logs=None):
        if time.time() >= self.deadline and not self.model.stop_training:
            log.info("[%s] the search's time is up: this trial ends now", self.label)
            self.model.stop_training = True


def hand_out_within_budget(tuner) -> None:
    """On a distributed chief: its oracle stops handing out trials once the strategy's budget
    check (`Strategy.before_trial`, on the chief's clock) says so. The oracle's own way of
    ending a search does it: asked for a new trial, it answers STOPPED, so each worker that asks
    next moves on, and the chief's server ends once they all have and no trial runs."""
    oracle, populate = tuner.oracle, tuner.oracle.populate_space

    def populate_space(trial_id):  # called under the oracle's lock, for a new trial only
        if tuner.time_limited is None:
            try:
                tuner.ctx.strategy.before_trial(tuner)
            except TimeLimitReached as exc:
                tuner.time_limited = str(exc)
                log.info("%s: no more trials for %s", exc, tuner.arch or "the search")
        if tuner.time_limited is not None:
            return {"status": kt.engine.trial.TrialStatus.STOPPED, "values": None}
        return populate(trial_id)

    tuner.time_limited = None
    oracle.populate_space = populate_space


class StoreLost(store.StoreUnavailable, kt.errors.FatalError):
    """KerasTuner counts an ordinary exception as a failed trial and moves on; losing the store
    must stop the search instead, leaving the trial to be re-run on resume."""


class TrialTimeLimit(TimeLimitReached, kt.errors.FatalError):
    """Raised inside a trial, where KerasTuner would count an ordinary exception as a failed
    trial and go on."""


def best_trial(oracle, arch: str | None = None):
    """The oracle's best completed trial, of ARCH only in a joint search (None: of any)."""
    done = [
        t
        for t in oracle.trials.values()
        if t.status == "COMPLETED"
        and t.score is not None
        and (arch is None or t.hyperparameters.values.get("arch") == arch)
    ]
    return max(done, key=lambda t: t.score, default=None)


def best_of(tuner, arch: str):
    """ARCH's best trial in TUNER's search (the oracle's own choice where it searches ARCH
    alone), or None."""
    if tuner.arch is None:
        return best_trial(tuner.oracle, arch)
    best = tuner.oracle.get_best_trials(1)
    return best[0] if best else None


def single(group: tuple[str, ...]) -> str | None:
    """The one architecture a search covers, or None for a search over several."""
    return group[0] if len(group) == 1 else None


def link(tuner, ctx: SweepContext, group: tuple[str, ...], arch_runs: dict[str, str]) -> None:
    """Tie a tracked tuner to its sweep: its context, its architecture (None: the trial says),
    and the runs its trials nest under."""
    tuner.ctx, tuner.arch, tuner.arch_runs = ctx, single(group), arch_runs


class Tracked:
    """Mixed into a KerasTuner tuner: each trial runs inside a nested MLflow run."""

    ctx: SweepContext
    arch: str | None  # None in a joint search, whose trials each name their architecture
    arch_runs: dict[str, str]

    def arch_of(self, trial) -> str:
        return self.arch or trial.hyperparameters.values["arch"]

    def pre_create_trial(self):
        if self.ctx.role == "local":  # distributed, the chief's oracle decides (see below)
            self.ctx.strategy.before_trial(self)

    def run_trial(self, trial, *args, **kwargs):
        try:
            return self._tracked_trial(trial, *args, **kwargs)
        except store.StoreUnavailable as exc:
            raise StoreLost(str(exc)) from exc

    def _tracked_trial(self, trial, *args, **kwargs):
        ctx, hp = self.ctx, trial.hyperparameters
        arch, size = self.arch_of(trial), self.hypermodel.size(hp)
        epochs = hp.values.get("tuner/epochs", kwargs.get("epochs", ctx.epochs_for(arch)))
        initial = hp.values.get("tuner/initial_epoch", 0)
        ctx.strategy.check_trial(ctx, arch, size, epochs - initial, hp.values.get("tuner/trial_id"))
        self._supersede(arch, trial.trial_id)
        run_tags = {
            tags.SWEEP_KEY: ctx.key,
            tags.KIND: tags.KIND_TRIAL,
            tags.ARCH: arch,
            tags.TRIAL_ID: trial.trial_id,
            tags.TUNER_ID: self.tuner_id,
            **tags.environment_tags(),
        }
        t0 = time.monotonic()
        with runs.active_run(
            experiment=ctx.cfg.experiment,
            parent_run_id=self.arch_runs[arch],
            run_name=f"{arch}-trial-{trial.trial_id}",
            tags=run_tags,
        ) as run:
            runlog.log_params({**self.hypermodel.values(hp), **self._run_params(arch, size)})
            stop_and_log, logger = fit_callbacks(
                run.info.run_id,
                f"{arch} t{trial.trial_id}",
                epochs,
                ctx.cfg.patience,
                initial,
                monitor=ctx.objective,
            )
            kwargs["callbacks"] = list(kwargs.get("callbacks", [])) + stop_and_log
            kwargs["callbacks"] += self._deadline(f"{arch} t{trial.trial_id}")
            if ctx.class_weight:
                kwargs["class_weight"] = ctx.class_weight
            results = super().run_trial(trial, *args, **kwargs)
            fit_seconds = self.hypermodel.fit_seconds
            model = self.hypermodel.last_model
            runlog.log_params({keys.PARAM_COUNT: model.count_params()})
            score = metrics.history_summary(logger.history, ctx.objective, initial).get(
                keys.best(ctx.objective), float("nan")
            )
            best_before = self._best_score(arch)
            # Only a trial that ties or beats its architecture's best logs its model: the
            # final best trial always has one (ties too: whichever tied trial the oracle later
            # calls best), and disk is not spent on models nobody will register.
            keep = best_before is None or score >= best_before
            record_fit(
                model,
                logger.history,
                logger.seconds_per_epoch,
                splits=ctx.splits_at(size),
                title=f"{arch} trial {trial.trial_id}",
                log_model=keep,
                objective=ctx.objective,
                initial_epoch=initial,
            )
            runtime.release_memory()
            rss, peak = runtime.rss_mb()
            runlog.log_metrics(
                {
                    "rss_mb": rss,
                    "peak_rss_mb": peak,
                    "fit_seconds": fit_seconds,
                    "overhead_seconds": time.monotonic() - t0 - fit_seconds,
                }
            )
        self._report(
            arch, trial, hp, score, best_before, time.monotonic() - t0, logger.seconds_per_epoch
        )
        return results

    def _deadline(self, label: str) -> list:
        """A distributed worker stops its trial after the epoch that passes the search's end,
        as its chief published it (none before the chief has planned to a budget)."""
        if self.ctx.role != "worker":
            return []
        ends = runlog.get(self.ctx.parent_run_id).data.tags.get(tags.SEARCH_DEADLINE)
        return [StopAtDeadline(float(ends), label)] if ends else []

    def on_epoch_end(self, trial, model, epoch, logs=None):
        super().on_epoch_end(trial, model, epoch, logs)
        self.ctx.progress.save()  # the time spent, so a kill costs the budget at most an epoch

    def _run_params(self, arch: str, size: int) -> dict:
        return trial_settings(
            self.ctx,
            arch,
            self.distribution_strategy or runtime.strategy(),
            self.ctx.epochs_for(arch),
            size,
        )

    def _supersede(self, arch: str, trial_id: str) -> None:
        """A trial about to (re)run: earlier runs of it were interrupted; close them."""
        queries.retire(
            self.ctx.experiment_id,
            {
                tags.SWEEP_KEY: self.ctx.key,
                tags.KIND: tags.KIND_TRIAL,
                tags.ARCH: arch,
                tags.TRIAL_ID: trial_id,
            },
            (runs.RUNNING, runs.FINISHED),
        )

    def _best_score(self, arch: str) -> float | None:
        if self.arch is None:  # a joint search: the best of this architecture's trials
            best = best_trial(self.oracle, arch)
            return best.score if best is not None else None
        best = self.oracle.get_best_trials(1)  # a distributed worker's oracle has no .trials
        return best[0].score if best and best[0].score is not None else None

    def _report(self, arch, trial, hp, score, best_before, seconds, per_epoch) -> None:
        ctx = self.ctx
        ctx.progress.trial_done(seconds, trial.trial_id, per_epoch)
        best = score if best_before is None else max(score, best_before)
        shown = {
            k: (round(v, 5) if isinstance(v, float) else v)
            for k, v in self.hypermodel.values(hp).items()
            if not k.startswith("tuner/")
        }
        ctx.strategy.report_trial(ctx, arch, trial, hp, shown, score, best, seconds)


class TrackedRandomSearch(Tracked, kt.RandomSearch):
    pass


class TrackedBayesianOptimization(Tracked, kt.BayesianOptimization):
    pass


class TrackedHyperband(Tracked, kt.Hyperband):
    def _build_hypermodel(self, hp):
        """A promoted configuration continues from its checkpoint, optimizer state included.

        KerasTuner's Hyperband loads the checkpoint into a model whose optimizer is not built
        yet, so Keras skips the saved optimizer variables (and warns "Skipping variable loading
        for optimizer") and Adam restarts its moments mid-fit. Building the optimizer first
        lets `load_weights` restore them."""
        from keras_tuner.src import backend as kt_backend
        from keras_tuner.src import utils as kt_utils

        model = kt.Tuner._build_hypermodel(self, hp)  # built and compiled, nothing loaded
        if "tuner/trial_id" in hp.values:
            trial_id = hp.values["tuner/trial_id"]
            if kt_backend.config.multi_backend():
                model.build_from_config(kt_utils.load_json(self._get_build_config_fname(trial_id)))
            model.optimizer.build(model.trainable_variables)
            model.load_weights(self._get_checkpoint_fname(trial_id))
        return model


TUNERS = {
    "random": TrackedRandomSearch,
    "bayesian": TrackedBayesianOptimization,
    "hyperband": TrackedHyperband,
}


def objective(name: str = OBJECTIVE):
    """KerasTuner's objective: maximise NAME, the sweep's (`SweepContext.objective`)."""
    return kt.Objective(name, "max")


def distribution():
    """The tf.distribute strategy a tuner trains under: MirroredStrategy on GPUs, else none."""
    return runtime.strategy() if runtime.gpus() else None


def trial_settings(
    ctx, arch: str, distribution, epochs: int, image_size: int | None = None
) -> dict:
    """How a trial, repeat, long fit or final fit of ARCH ran, as params (`keys.RUN_PARAMS`):
    its precision is the one the plan chose for ARCH."""
    cfg = ctx.cfg
    return keys.run_settings(
        arch=arch,
        tuner=cfg.tuner,
        image_size=image_size or cfg.image_size,
        batch_size=cfg.batch_size,
        epochs=epochs,
        seed=cfg.seed,
        precision=ctx.precision(arch),
        distribution=runtime.strategy_name(distribution),
        pretrained=cfg.pretrained if models.get(arch).pretrained else None,
    )
