"""Sweeps: KerasTuner over the architecture registry, every trial a nested MLflow run.

MLflow holds three levels: one parent run per sweep, one child per architecture, one nested run
per trial (its hyperparameters as params, per-epoch metrics, its learning curves). Every
architecture gets the same split and image size, and the same share of the time budget (see
`catdog.plan`), or without one the same trial and epoch budget.

After the searches come the repeats and the final fit (`catdog.retrain`): the winner retrained
on train+val, the model `register` promotes, and each best configuration retrained with other
seeds for confidence intervals that `compare` uses.

Resuming: tuner state lives in `.tuner/<sweep key>/<arch>` (git-ignored). Running the same sweep
again reloads it: KerasTuner skips finished trials and re-runs the one that was interrupted; the
interrupted trial's MLflow run is marked KILLED (never left RUNNING) and the parent and
architecture runs are reopened rather than duplicated. `fresh=True` starts over.

The `best` strategy (`strategy = "best"`) races the architectures instead: one Hyperband search
over architecture, image size and hyperparameters (see `catdog.race`). The three levels stay:
each trial is a run under its architecture's run, so `compare`, `report` and `register` read a
race like any sweep, and state that its architectures had unequal budgets.

Distributed: with KERASTUNER_TUNER_ID/ORACLE_IP/ORACLE_PORT set, the chief serves each
architecture's oracle in turn (on ORACLE_PORT + the architecture's index) and owns the parent and
architecture runs; workers run trials and log them to the shared tracking server.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from catdog import metrics, models, pipeline, retrain, runtime, sweepfile, sweepstate
from catdog.data import resolve_data
from catdog.errors import CatdogError
from catdog.log import format_seconds, get_logger
from catdog.plan import Plan
from catdog.tracking import queries, runs, store, tags

log = get_logger(__name__)

TUNER_ROOT = Path(".tuner")
OBJECTIVE = "val_accuracy"


class TimeLimitReached(Exception):
    """Raised before a new trial once an architecture's share of the budget is used."""


# ------------------------------------------------------------------------------ distributed role
def role() -> str:
    """'local', 'chief' or 'worker', from KerasTuner's environment variables."""
    tuner_id = os.environ.get("KERASTUNER_TUNER_ID")
    if not tuner_id or "KERASTUNER_ORACLE_IP" not in os.environ:
        return "local"
    return "chief" if tuner_id == "chief" else "worker"


def _use_oracle_port(index: int, base: int | None) -> None:
    # One port per architecture: the previous oracle's server may still be draining.
    if base is not None:
        os.environ["KERASTUNER_ORACLE_PORT"] = str(base + index)


# ------------------------------------------------------------------------------ the tuner hook
@dataclass
class SizedSplits:
    """The sweep's split at any image size, each decoded once: a race searches the size."""

    data_root: Path
    cfg: sweepfile.SweepConfig
    base: pipeline.Splits | None  # at cfg.image_size
    others: dict[int, pipeline.Splits] = field(default_factory=dict)

    def at(self, size: int) -> pipeline.Splits:
        if size == self.cfg.image_size:
            return self.base
        if size not in self.others:
            self.others[size] = pipeline.load(self.data_root, size, self.cfg.batch_size,
                                              seed=self.cfg.seed)
        return self.others[size]


@dataclass
class SweepContext:
    cfg: sweepfile.SweepConfig
    key: str
    experiment_id: str
    parent_run_id: str
    data_root: Path
    splits: pipeline.Splits | None  # None on a distributed chief, which never touches pixels
    total_trials: int
    arch_index: int = 0
    started: float = field(default_factory=time.monotonic)
    trials_done: int = 0
    trial_seconds: list[float] = field(default_factory=list)
    plan: Plan | None = None  # trials and epochs per architecture, fitted to the budget
    search_started: float = field(default_factory=time.monotonic)
    deadline: float | None = None  # time.monotonic() at which the budget runs out
    sized: SizedSplits | None = None  # the split at other sizes (a race searches the size)
    trial_speeds: dict[str, float] = field(default_factory=dict)  # trial id -> s/epoch, measured

    @property
    def race(self) -> bool:
        return self.cfg.strategy == "best"

    def splits_at(self, size: int) -> pipeline.Splits:
        return self.sized.at(size) if self.sized else self.splits

    def trials_for(self, arch: str) -> int:
        return self.plan.archs[arch].trials if self.plan else self.cfg.trials

    def epochs_for(self, arch: str) -> int:
        if self.race:  # Hyperband's longest fit: every trial's schedule horizon
            return self.plan.max_epochs if self.plan else self.cfg.epochs
        return self.plan.archs[arch].epochs if self.plan else self.cfg.epochs

    def share_used(self, arch: str, first: bool) -> bool:
        """Architecture i may start a trial only if the plan expects it to end before (i+1)/n of
        the search budget has passed (its first trial only needs that point not to have passed
        yet): every one gets its share, time an earlier one did not use flows to the later
        ones, and a trial is not started that would eat the final fit's reserve."""
        budget = self.plan.search_budget if self.plan else None
        if budget is None:
            return False
        p = self.plan.archs[arch]
        expected = 0.0 if first else p.trial_overhead + p.epochs * p.seconds_per_epoch
        searched = time.monotonic() - self.search_started
        return searched + expected > budget * (self.arch_index + 1) / len(self.cfg.archs)

    def eta(self, remaining: int) -> float:
        if self.race and self.plan is not None:
            # A race's trials grow round by round (1 epoch, then 3, 9, 27): their mean so far
            # says little about the rest, the plan does.
            searched = time.monotonic() - self.search_started
            return max(self.plan.search_seconds - searched, 0.0) + self.plan.final_seconds
        if not self.trial_seconds:
            return self.plan.total_seconds if self.plan else float("nan")
        return remaining * float(np.mean(self.trial_seconds)) + (
            self.plan.final_seconds if self.plan else 0.0)


def tuner_classes():
    import keras_tuner as kt

    class ArchHyperModel(kt.HyperModel):
        """One architecture's builder as a HyperModel; `fit` keeps the model for logging."""

        def __init__(self, entry: models.Architecture, image_size: int, pretrained: bool,
                     epochs: int):
            super().__init__(name=entry.name)
            self.entry, self.image_size, self.pretrained = entry, image_size, pretrained
            self.epochs = epochs  # the schedule's horizon: Hyperband's longest fit
            self.last_model, self.fit_seconds = None, 0.0

        def build(self, hp):
            return self.entry.build(hp, image_size=self.image_size, pretrained=self.pretrained)

        def size(self, hp) -> int:
            return self.image_size

        def values(self, hp) -> dict:
            """The trial's hyperparameters under the names the builder uses."""
            return hp.values

        def fit(self, hp, model, *args, **kwargs):
            # Timed here, around model.fit alone, so a trial's overhead counts build and compile.
            self.last_model = model
            kwargs["callbacks"] = list(kwargs.get("callbacks", [])) + \
                models.schedule_callbacks(hp.values, self.epochs)
            t0 = time.monotonic()
            try:
                return model.fit(*args, **kwargs)
            finally:
                self.fit_seconds = time.monotonic() - t0

    class StoreLost(store.StoreUnavailable, kt.errors.FatalError):
        """KerasTuner counts an ordinary exception as a failed trial and moves on; losing the
        store must stop the search instead, leaving the trial to be re-run on resume."""

    class Tracked:
        """Mixed into a KerasTuner tuner: each trial runs inside a nested MLflow run."""

        ctx: SweepContext
        arch: str | None  # None in a race, whose trials each name their architecture
        arch_runs: dict[str, str]

        def arch_of(self, trial) -> str:
            return self.arch or trial.hyperparameters.values["arch"]

        def pre_create_trial(self):
            if self.ctx.plan is None or self.ctx.race:  # a race checks each trial it starts
                return
            first = not any(t.status == "COMPLETED" for t in self.oracle.trials.values())
            if self.ctx.share_used(self.arch, first):
                raise TimeLimitReached(f"{self.arch}'s share of the "
                                       f"{format_seconds(self.ctx.cfg.budget_seconds)} budget "
                                       "is used up")

        def run_trial(self, trial, *args, **kwargs):
            try:
                return self._tracked_trial(trial, *args, **kwargs)
            except store.StoreUnavailable as exc:
                raise StoreLost(str(exc)) from exc

        def _tracked_trial(self, trial, *args, **kwargs):
            import mlflow

            from catdog.tracking.callbacks import fit_callbacks
            from catdog.tracking.record import record_fit

            ctx, hp = self.ctx, trial.hyperparameters
            arch, size = self.arch_of(trial), self.hypermodel.size(hp)
            epochs = hp.values.get("tuner/epochs", kwargs.get("epochs", ctx.epochs_for(arch)))
            initial = hp.values.get("tuner/initial_epoch", 0)
            self._check_time(arch, size, epochs - initial, hp.values.get("tuner/trial_id"))
            self._supersede(arch, trial.trial_id)
            run_tags = {tags.SWEEP_KEY: ctx.key, tags.KIND: tags.KIND_TRIAL,
                        tags.ARCH: arch, tags.TRIAL_ID: trial.trial_id,
                        tags.TUNER_ID: self.tuner_id, **tags.environment_tags()}
            t0 = time.monotonic()
            with runs.active_run(experiment=ctx.cfg.experiment,
                                 parent_run_id=self.arch_runs[arch],
                                 run_name=f"{arch}-trial-{trial.trial_id}",
                                 tags=run_tags) as run:
                mlflow.log_params({**self.hypermodel.values(hp), **self._run_params(arch, size)})
                stop_and_log, logger = fit_callbacks(run.info.run_id,
                                                     f"{arch} t{trial.trial_id}", epochs,
                                                     ctx.cfg.patience, initial)
                kwargs["callbacks"] = list(kwargs.get("callbacks", [])) + stop_and_log
                results = super().run_trial(trial, *args, **kwargs)
                fit_seconds = self.hypermodel.fit_seconds
                ctx.trial_speeds[trial.trial_id] = logger.seconds_per_epoch
                model = self.hypermodel.last_model
                mlflow.log_param("param_count", model.count_params())
                score = metrics.history_summary(logger.history, OBJECTIVE, initial).get(
                    f"best_{OBJECTIVE}", float("nan"))
                best_before = self._best_score(arch)
                # Only a trial that ties or beats its architecture's best logs its model: the
                # final best trial always has one (ties too: whichever tied trial the oracle
                # later calls best), and disk is not spent on models nobody will register.
                keep = best_before is None or score >= best_before
                record_fit(model, logger.history, logger.seconds_per_epoch,
                           splits=ctx.splits_at(size),
                           title=f"{arch} trial {trial.trial_id}", log_model=keep,
                           objective=OBJECTIVE, initial_epoch=initial)
                runtime.release_memory()
                rss, peak = runtime.rss_mb()
                mlflow.log_metrics({
                    "rss_mb": rss,
                    "peak_rss_mb": peak,
                    "fit_seconds": fit_seconds,
                    "overhead_seconds": time.monotonic() - t0 - fit_seconds})
            self._report(arch, trial, hp, score, best_before, time.monotonic() - t0)
            return results

        # -- helpers ----------------------------------------------------------------------
        def _run_params(self, arch: str, size: int) -> dict:
            return retrain.run_params(self.ctx.cfg, arch,
                               self.distribution_strategy or runtime.strategy(),
                               self.ctx.epochs_for(arch), size)

        def _check_time(self, arch: str, size: int, epochs: int, past: str | None) -> None:
            """A race starts a trial only if it is expected to end within the search budget
            (its cost is known only once the oracle has chosen it): at the speed its previous
            round trained (PAST, a trial id), else the plan's, measured at the defaults."""
            ctx = self.ctx
            if not ctx.race or ctx.plan is None or ctx.plan.search_budget is None:
                return
            expected = ctx.plan.trial_seconds(arch, size, epochs)
            if past in ctx.trial_speeds:
                expected += epochs * (ctx.trial_speeds[past] -
                                      ctx.plan.seconds_per_epoch(arch, size))
            if time.monotonic() - ctx.search_started + expected > ctx.plan.search_budget:
                raise RaceTimeLimit(
                    f"the race's share of the {format_seconds(ctx.cfg.budget_seconds)} budget is "
                    f"used up (the next trial, {arch} at {size}px for {epochs} epochs, would "
                    f"take about {format_seconds(expected)})")

        def _supersede(self, arch: str, trial_id: str) -> None:
            """A trial about to (re)run: earlier runs of it were interrupted; close them."""
            queries.retire(self.ctx.experiment_id,
                           {tags.SWEEP_KEY: self.ctx.key, tags.KIND: tags.KIND_TRIAL,
                            tags.ARCH: arch, tags.TRIAL_ID: trial_id},
                           (runs.RUNNING, runs.FINISHED))

        def _best_score(self, arch: str) -> float | None:
            if self.arch is None:  # a race: the best of this architecture's trials
                best = best_trial(self.oracle, arch)
                return best.score if best is not None else None
            best = self.oracle.get_best_trials(1)  # a distributed worker's oracle has no .trials
            return best[0].score if best and best[0].score is not None else None

        def _report(self, arch, trial, hp, score, best_before, seconds) -> None:
            ctx = self.ctx
            ctx.trials_done += 1
            ctx.trial_seconds.append(seconds)
            best = score if best_before is None else max(score, best_before)
            shown = {k: (round(v, 5) if isinstance(v, float) else v)
                     for k, v in self.hypermodel.values(hp).items() if not k.startswith("tuner/")}
            if ctx.race:  # trials come as the budget allows: the plan's count is a guess
                round_ = hp.values.get("tuner/round", 0)
                log.info("[%s] race trial %d (round %d, %d epochs) %s  val_accuracy %.4f  "
                         "best %s %.4f  (%s; about %d planned, ETA %s)", arch,
                         int(trial.trial_id) + 1, round_, hp.values.get("tuner/epochs", 0),
                         shown, score, arch, best, format_seconds(seconds), ctx.total_trials,
                         format_seconds(ctx.eta(0)))
                return
            remaining = max(ctx.total_trials - ctx.trials_done, 0)
            log.info("[%s] trial %d/%d %s  val_accuracy %.4f  best %.4f  (%s; sweep %d/%d, ETA %s)",
                     arch, int(trial.trial_id) + 1, ctx.cfg.trials, shown, score,
                     best,
                     format_seconds(seconds), ctx.trials_done, ctx.total_trials,
                     format_seconds(ctx.eta(remaining)) if remaining else "done")

    class RaceTimeLimit(TimeLimitReached, kt.errors.FatalError):
        """Raised inside a trial, where KerasTuner would count an ordinary exception as a
        failed trial and go on."""

    return ArchHyperModel, Tracked


def best_trial(oracle, arch: str | None = None):
    """The oracle's best completed trial, of ARCH only in a race (None: of any)."""
    done = [t for t in oracle.trials.values() if t.status == "COMPLETED" and t.score is not None
            and (arch is None or t.hyperparameters.values.get("arch") == arch)]
    return max(done, key=lambda t: t.score, default=None)


def make_tuner(kind: str, ctx: SweepContext, arch: str, arch_run_id: str, hyperparameters,
               directory: Path, overwrite: bool):
    """A KerasTuner tuner of KIND for ARCH whose trials are tracked runs, with the epochs the
    plan gives ARCH."""
    import keras_tuner as kt

    ArchHyperModel, Tracked = tuner_classes()
    base = {"hyperband": kt.Hyperband, "random": kt.RandomSearch,
            "bayesian": kt.BayesianOptimization}[kind]
    cls = type(f"Tracked{base.__name__}", (Tracked, base), {})
    epochs = ctx.epochs_for(arch)
    common = dict(hypermodel=ArchHyperModel(models.get(arch), ctx.cfg.image_size,
                                            ctx.cfg.pretrained, epochs),
                  objective=kt.Objective(OBJECTIVE, "max"), seed=ctx.cfg.seed,
                  hyperparameters=hyperparameters, tune_new_entries=True,
                  directory=str(directory), project_name=arch, overwrite=overwrite,
                  distribution_strategy=runtime.strategy() if runtime.gpus() else None)
    if kind == "hyperband":
        tuner = cls(max_epochs=epochs, factor=ctx.cfg.hyperband_factor, **common)
    else:
        tuner = cls(max_trials=ctx.cfg.trials, **common)
    # The sweep file's cap: under a budget, the time left decides how many of them run (the
    # plan's count is what it expects), so time early stopping saves buys more trials.
    tuner.oracle.max_trials = ctx.cfg.trials
    tuner.ctx, tuner.arch, tuner.arch_runs = ctx, arch, {arch: arch_run_id}
    return tuner


# ----------------------------------------------------------------------------------- the sweep
@dataclass
class SweepResult:
    key: str
    parent_run_id: str
    archs: dict[str, dict]
    stopped_early: str | None
    seconds: float
    final: dict | None = None  # the final fit: run id, arch, test accuracy


class NotStarted(CatdogError):
    """A sweep stopped after its plan: asked for (`dry_run`) or declined (`confirm`)."""

    exit_code = 0


def run(cfg: sweepfile.SweepConfig, *, fresh: bool = False, confirm=None) -> SweepResult:
    """Run (or resume) a sweep and return each architecture's best trial.

    On one machine the sweep is planned first (`catdog.plan`): each architecture's speed is
    measured and its trials and epochs fitted to the budget. `confirm(plan)`, if given, may
    decline to start once the plan is known (the CLI asks at a terminal when there is no
    budget)."""
    with contextlib.ExitStack() as held:
        return _run(cfg, fresh, held, confirm)


def _run(cfg: sweepfile.SweepConfig, fresh: bool, held: contextlib.ExitStack,
         confirm) -> SweepResult:
    import mlflow

    from catdog.data.prepare import read_summary

    t0 = time.monotonic()
    who = role()
    store.configure()  # a store that does not answer fails now, not after decoding the data
    runtime.start()
    import keras

    spaces = sweepfile.search_spaces(cfg)  # a bad search space fails before any data is read
    if cfg.strategy == "best" and who != "local":
        raise CatdogError("the best strategy races on one machine (its plan and time checks are "
                          "this machine's); a distributed sweep uses strategy = \"compare\"")
    data_root = resolve_data(cfg.data)

    digest = read_summary(data_root)["digest"]
    key = cfg.key(digest)
    state_dir = TUNER_ROOT / key
    exp_id = store.experiment_id(cfg.experiment)
    client = mlflow.MlflowClient()
    owner = who in ("local", "chief")
    base_port = int(os.environ["KERASTUNER_ORACLE_PORT"]) if who != "local" else None

    if owner:
        held.enter_context(sweepstate.sweep_lock(TUNER_ROOT, key))
    if fresh and owner:
        queries.retire_sweep(exp_id, key)
        shutil.rmtree(state_dir, ignore_errors=True)
    elif owner:
        sweepstate.check_state_matches_store(state_dir, cfg.archs, exp_id, key,
                                             race=cfg.strategy == "best")
    cfg = replace(cfg, precision=runtime.set_precision(cfg.precision))

    splits = None
    if who != "chief":  # the chief only serves the oracle; it never touches pixels
        runtime.announce_devices()
        splits = pipeline.load(data_root, cfg.image_size, cfg.batch_size, seed=cfg.seed)
    sized = SizedSplits(data_root, cfg, splits)
    sweep_plan = None
    if who == "local":  # distributed sweeps run the sweep file's trials as written
        sweep_plan = _plan(cfg, sized.at, spaces, state_dir, time.monotonic() - t0)
        if confirm is not None and not confirm(sweep_plan):
            raise NotStarted("sweep not started; give it a budget (--budget 45m) to plan it "
                             "to the time you have")

    parent = queries.find_or_create(exp_id, {tags.SWEEP_KEY: key, tags.KIND: tags.KIND_SWEEP},
                                    cfg.name, None, create=owner)
    if owner:
        _log_sweep_params(parent, cfg, data_root, digest)
        if sweep_plan:
            client.log_text(parent, sweep_plan.to_json(), "plan.json")
    log.info("sweep %s (%s, %s) on %s: %d architectures, MLflow parent run %s", key, who,
             cfg.tuner, data_root, len(cfg.archs), parent)
    ctx = SweepContext(cfg, key, exp_id, parent, data_root, splits, total_trials=0,
                       plan=sweep_plan, deadline=t0 + cfg.budget_seconds
                       if cfg.budget_seconds and sweep_plan else None, sized=sized)
    ctx.total_trials = sweep_plan.planned_trials if ctx.race else \
        sum(ctx.trials_for(a) + cfg.repeats for a in cfg.archs)
    if cfg.repeats and who != "local":
        log.info("repeats are run by a sweep on one machine; run `catdog sweep` with the same "
                 "file afterwards to add them to this distributed sweep")
    fit_data = (splits.train,) if splits else ()
    fit_kwargs = {"validation_data": splits.val} if splits else {}
    results: dict[str, dict] = {}
    stopped: str | None = None
    current: str | None = None
    try:
        with runs.sigterm_as_exception():
            if ctx.race:
                from catdog import race

                results, stopped = race.search(ctx, spaces, state_dir, client)
            for index, arch in enumerate(() if ctx.race else cfg.archs):
                current = arch_run(exp_id, key, arch, parent, owner)
                if who == "worker" and client.get_run(current).info.status == runs.FINISHED:
                    # The chief is past it (this worker was restarted, or joined late): its
                    # oracle is closed, and waiting on it would hang.
                    log.info("[%s] finished by the chief; going on to the next architecture",
                             arch)
                    current = None
                    continue
                if who == "local":  # alone on this sweep: any RUNNING trial or repeat is
                    n = sum(queries.retire(exp_id, {tags.SWEEP_KEY: key, tags.KIND: kind,
                                                    tags.ARCH: arch})  # an orphan
                            for kind in (tags.KIND_TRIAL, tags.KIND_REPEAT))
                    if n:
                        log.info("marked %d interrupted run(s) of %s as KILLED", n, arch)
                hp = spaces[arch]
                _use_oracle_port(index, base_port)
                keras.utils.set_random_seed(cfg.seed)
                tuner = make_tuner(cfg.tuner, ctx, arch, current, hp, state_dir, overwrite=False)
                done_before = sum(1 for t in tuner.oracle.trials.values()
                                  if t.status == "COMPLETED") if owner else 0
                ctx.trials_done += done_before
                if owner and done_before:
                    log.info("[%s] resuming: %d trial(s) already done", arch, done_before)
                ctx.arch_index = index
                if index == 0:
                    ctx.search_started = time.monotonic()
                try:
                    tuner.search(*fit_data, **fit_kwargs, epochs=ctx.epochs_for(arch),
                                 verbose=0)
                except TimeLimitReached as exc:
                    stopped = str(exc)
                    log.info("%s: no more trials for it", exc)
                    if owner:
                        client.set_tag(current, tags.TIME_LIMITED, tags.TRUE)
                if owner:
                    best = tuner.oracle.get_best_trials(1)
                    results[arch] = finish_arch(
                        client, best[0] if best else None,
                        json.dumps(tuner.oracle.hyperparameters.get_config(), indent=2,
                                   default=str), current, arch, exp_id, key)
                    client.set_terminated(current, runs.FINISHED)
                current = None
            # Repeats come after every search, so the searches are the same with or without
            # them (training consumes TensorFlow's random state).
            for arch in cfg.archs if who == "local" and cfg.repeats else ():
                if results.get(arch):
                    current = arch_run(exp_id, key, arch, parent, owner)  # reopened
                    retrain.run_repeats(ctx, arch, current, results[arch])
                    results[arch].update(retrain.log_repeat_stats(client, current, exp_id, key, arch,
                                                           results[arch]["trial_id"],
                                                           cfg.repeats))
                    client.set_terminated(current, runs.FINISHED)
                    current = None
            final = None
            if who == "local" and cfg.final_fit and any(results.values()):
                final = retrain.final_fit(ctx, client)
    except BaseException as exc:
        status = runs.status_for(exc)
        if owner:
            for run_id in (current, parent):
                if run_id:
                    runs.terminate(client, run_id, status)
        log.info("sweep %s stopped (%s); run the same command again to resume", key, status)
        raise
    seconds = time.monotonic() - t0
    if owner:
        from catdog import compare

        compare.log_to_parent(parent)
        compare.log_anytime(parent)
        if stopped:
            client.set_tag(parent, tags.TIME_LIMITED, tags.TRUE)
        _log_budget(client, ctx, seconds)
        client.set_terminated(parent, runs.FINISHED)
        log.info("sweep %s finished in %s", key, format_seconds(seconds))
    return SweepResult(key, parent, results, stopped, seconds, final)


def _plan(cfg: sweepfile.SweepConfig, splits_at, spaces, state_dir: Path,
          spent: float) -> Plan:
    """Measure each architecture here and fit trials and epochs to the budget; a resumed sweep
    keeps the plan it started with unless its budget changed. Logged before the first trial."""
    from catdog import plan as planning

    def make() -> Plan:
        t0 = time.monotonic()
        if cfg.strategy == "best":
            from catdog import race

            speeds = race.measure_speeds(cfg, spaces, splits_at)
            return planning.make_race_plan(speeds, max_epochs=cfg.epochs,
                                           factor=cfg.hyperband_factor,
                                           budget=cfg.budget_seconds, final_fit=cfg.final_fit,
                                           measured_seconds=spent + time.monotonic() - t0)
        splits = splits_at(cfg.image_size)
        speeds = {}
        for arch in cfg.archs:
            values = {k: v for k, v in spaces[arch].values.items() if not k.startswith("tuner/")}
            speeds[arch] = planning.measure(arch, splits, cfg.image_size, values,
                                            cfg.pretrained, cfg.batch_size)
            log.info("[%s] measured: %.1f s per epoch of %d images at %dpx", arch,
                     speeds[arch][0], splits.sizes["train"], cfg.image_size)
        return planning.make_plan(speeds, trials=cfg.trials, epochs=cfg.epochs,
                                  budget=cfg.budget_seconds, repeats=cfg.repeats,
                                  final_fit=cfg.final_fit,
                                  measured_seconds=spent + time.monotonic() - t0)

    path = state_dir / "plan.json"
    saved, resumed = planning.load_or_make(path, make)
    if resumed and saved.budget != cfg.budget_seconds:
        path.unlink()
        saved, resumed = planning.load_or_make(path, make)
    log.info("%s plan:\n%s", "resumed" if resumed else "the", saved.describe())
    if isinstance(saved, planning.RacePlan):
        if saved.max_epochs < cfg.epochs:
            log.info("the budget holds fits of %d epochs, not the sweep file's %d",
                     saved.max_epochs, cfg.epochs)
        return saved
    short = [a.arch for a in saved.archs.values()
             if a.trials < cfg.trials or a.epochs < cfg.epochs]
    if short:
        log.info("the budget holds fewer trials or epochs than the sweep file asks for %s",
                 ", ".join(short))
    return saved


def _log_budget(client, ctx: SweepContext, seconds: float) -> None:
    """What the budget bought: planned against run, and the shortfall said in words."""
    if ctx.plan is None:
        return
    planned = ctx.plan.planned_trials
    ran = len(queries.sweep_trials(ctx.experiment_id, ctx.key))
    client.log_metric(ctx.parent_run_id, "planned_trials", planned)
    client.log_metric(ctx.parent_run_id, "trials_run", ran)
    client.log_metric(ctx.parent_run_id, "sweep_seconds", seconds)
    if ctx.plan.budget is not None:
        client.log_metric(ctx.parent_run_id, "budget_seconds", ctx.plan.budget)
        log.info("budget %s: used %s; %d trials ran, %d planned%s",
                 format_seconds(ctx.plan.budget), format_seconds(seconds), ran, planned,
                 "" if ran >= planned else
                 f" (the budget ran out {planned - ran} trial(s) short; results are from "
                 "the trials that finished)")


def arch_run(exp_id, key, arch, parent, owner) -> str:
    return queries.find_or_create(exp_id, {tags.SWEEP_KEY: key, tags.KIND: tags.KIND_ARCH,
                                           tags.ARCH: arch}, arch, parent, create=owner)


def _log_sweep_params(parent: str, cfg, data_root: Path, digest: str) -> None:
    import mlflow

    client = mlflow.MlflowClient()
    existing = client.get_run(parent).data.params
    # Repeats and the budget may change when a sweep is resumed, and params cannot: they
    # live in sweep_config.json (rewritten on every run) and, for repeats, on the arch runs.
    params = {"archs": ",".join(cfg.archs), "tuner": cfg.tuner, "trials": cfg.trials,
              "epochs": cfg.epochs, "image_size": cfg.image_size, "batch_size": cfg.batch_size,
              "seed": cfg.seed, "patience": cfg.patience, "precision": cfg.precision,
              "pretrained": cfg.pretrained, "data": str(data_root),
              # compare: every architecture gets the same share of the budget, an equal-budget
              # comparison; best: a race (catdog.race). `compare` and the anytime plot say which.
              "search_strategy": cfg.strategy}
    if cfg.strategy == "best":
        params["image_sizes"] = ",".join(map(str, cfg.sizes))
    new = {k: str(v) for k, v in params.items() if k not in existing}
    if new:
        client.log_batch(parent, params=[mlflow.entities.Param(k, v) for k, v in new.items()])
    client.set_tag(parent, tags.DATASET_DIGEST, digest)
    client.log_text(parent, json.dumps({k: v for k, v in vars(cfg).items()}, indent=2,
                                       default=list), "sweep_config.json")


def finish_arch(client, trial, space: str, arch_run_id: str, arch: str, exp_id: str,
                 key: str) -> dict:
    """Tag the best trial's run (TRIAL, from the tuner's oracle; None if none completed), and
    put the search space (JSON) and best figures on the arch run."""
    client.log_text(arch_run_id, space, "search_space.json")
    if trial is None:
        return {}
    mine = {tags.SWEEP_KEY: key, tags.KIND: tags.KIND_TRIAL, tags.ARCH: arch}
    found = queries.search(exp_id, {**mine, tags.TRIAL_ID: trial.trial_id}, (runs.FINISHED,))
    if not found:
        return {}
    best_run = found[-1]
    for run in queries.search(exp_id, {**mine, tags.BEST_TRIAL: tags.TRUE}):
        client.set_tag(run.info.run_id, tags.BEST_TRIAL, tags.FALSE)
    client.set_tag(best_run.info.run_id, tags.BEST_TRIAL, tags.TRUE)
    client.set_tag(arch_run_id, tags.BEST_RUN_ID, best_run.info.run_id)
    summary = {k: v for k, v in best_run.data.metrics.items()
               if k.startswith(("best_", "gap_", "epochs_run"))}
    for k, v in summary.items():
        client.log_metric(arch_run_id, k, v)
    client.log_metric(arch_run_id, "trials", len(queries.sweep_trials(exp_id, key, arch)))
    return {"run_id": best_run.info.run_id, "trial_id": trial.trial_id, "score": trial.score,
            "hyperparameters": {k: v for k, v in trial.hyperparameters.values.items()
                                if not k.startswith("tuner/")}, **summary}
