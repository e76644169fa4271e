"""Sweeps: KerasTuner over the architecture registry, every trial a nested MLflow run.

MLflow holds three levels: one parent run per sweep, one child per architecture, one nested run
per trial (its hyperparameters as params, per-epoch metrics, its learning curves). Every
architecture gets the same split, image size, epoch budget and trial budget.

Resuming: tuner state lives in `.tuner/<sweep key>/<arch>` (git-ignored). Running the same sweep
again reloads it: KerasTuner skips finished trials and re-runs the one that was interrupted; the
interrupted trial's MLflow run is marked KILLED (never left RUNNING) and the parent and
architecture runs are reopened rather than duplicated. `fresh=True` starts over.

Distributed: with KERASTUNER_TUNER_ID/ORACLE_IP/ORACLE_PORT set, the chief serves each
architecture's oracle in turn (on ORACLE_PORT + the architecture's index) and owns the parent and
architecture runs; workers run trials and log them to the shared tracking server.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from catdog import experiment as experiment_mod
from catdog import models, pipeline, runtime, tracking
from catdog.errors import CatdogError
from catdog.log import get_logger
from catdog.train import fit_callbacks

log = get_logger(__name__)

TUNER_ROOT = Path(".tuner")
OBJECTIVE = "val_accuracy"
PARENT_POLL_SECONDS = 600


class TimeLimitReached(Exception):
    """Raised before a new trial once an architecture's share of the time limit is used."""


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


# --------------------------------------------------------------------------------- MLflow runs
def _search(filter_string: str, experiment_id: str, statuses: tuple[str, ...] | None = None):
    import mlflow

    runs = mlflow.MlflowClient().search_runs([experiment_id], filter_string, max_results=5000,
                                             order_by=["attributes.start_time ASC"])
    return [r for r in runs if statuses is None or r.info.status in statuses]


def _find_or_create(experiment_id: str, tags: dict, run_name: str, parent: str | None,
                    create: bool) -> str:
    """The run carrying these tags, reopened if it exists; created if allowed, else awaited."""
    import mlflow

    client = mlflow.MlflowClient()
    filt = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    deadline = time.monotonic() + PARENT_POLL_SECONDS
    while True:
        found = _search(filt, experiment_id)
        if found:
            run_id = found[-1].info.run_id
            if create:  # the owner reopens it; workers only log under it
                client.update_run(run_id, status="RUNNING")
            return run_id
        if create:
            all_tags = {**tags, **tracking.environment_tags()}
            if parent:
                all_tags["mlflow.parentRunId"] = parent
            return client.create_run(experiment_id, tags=all_tags, run_name=run_name).info.run_id
        if time.monotonic() > deadline:
            raise CatdogError(f"no run tagged {tags} appeared on the tracking server within "
                              f"{PARENT_POLL_SECONDS}s; is the chief running?")
        time.sleep(2)


def _kill_orphans(experiment_id: str, sweep_key: str, arch: str | None = None) -> int:
    """Mark trial runs of this sweep left RUNNING by a dead process as KILLED."""
    import mlflow

    client = mlflow.MlflowClient()
    filt = f"tags.`catdog.sweep_key` = '{sweep_key}' and tags.`catdog.kind` = 'trial'"
    if arch:
        filt += f" and tags.`catdog.arch` = '{arch}'"
    orphans = _search(filt, experiment_id, ("RUNNING",))
    for run in orphans:
        client.set_tag(run.info.run_id, "catdog.orphaned", "true")
        client.set_terminated(run.info.run_id, "KILLED")
    if orphans:
        log.info("marked %d interrupted trial run(s) of %s as KILLED", len(orphans),
                 arch or sweep_key)
    return len(orphans)


# ------------------------------------------------------------------------------ the tuner hook
@dataclass
class SweepContext:
    cfg: experiment_mod.SweepConfig
    key: str
    experiment_id: str
    parent_run_id: str
    data_root: Path
    sample: np.ndarray | None
    val_labels: np.ndarray | None
    total_trials: int
    arch_index: int = 0
    started: float = field(default_factory=time.monotonic)
    trials_done: int = 0
    trial_seconds: list[float] = field(default_factory=list)

    def eta(self, remaining: int) -> float:
        if not self.trial_seconds:
            return float("nan")
        eta = remaining * float(np.mean(self.trial_seconds))
        if self.cfg.time_limit_minutes:
            left = self.cfg.time_limit_minutes * 60 - (time.monotonic() - self.started)
            eta = min(eta, max(left, 0.0))
        return eta


def _tuner_classes():
    import keras_tuner as kt

    class ArchHyperModel(kt.HyperModel):
        """One architecture's builder as a HyperModel; `fit` keeps the model for logging."""

        def __init__(self, entry: models.Architecture, image_size: int):
            super().__init__(name=entry.name)
            self.entry, self.image_size = entry, image_size
            self.last_model, self.fit_seconds = None, 0.0

        def build(self, hp):
            return self.entry.build(hp, image_size=self.image_size)

        def fit(self, hp, model, *args, **kwargs):
            # Timed here, around model.fit alone, so a trial's overhead counts build and compile.
            self.last_model = model
            t0 = time.monotonic()
            try:
                return model.fit(*args, **kwargs)
            finally:
                self.fit_seconds = time.monotonic() - t0

    class Tracked:
        """Mixed into a KerasTuner tuner: each trial runs inside a nested MLflow run."""

        ctx: SweepContext
        arch: str
        arch_run_id: str

        def pre_create_trial(self):
            # Architecture i may start trials until (i+1)/n of the limit has passed: every one
            # gets its share, and time an earlier one did not use flows to the later ones.
            limit, n = self.ctx.cfg.time_limit_minutes, len(self.ctx.cfg.archs)
            if limit and time.monotonic() - self.ctx.started > limit * 60 * (self.ctx.arch_index + 1) / n:
                raise TimeLimitReached(f"{self.arch}'s share of the {limit}-minute time limit is used up")

        def run_trial(self, trial, *args, **kwargs):
            import mlflow

            ctx, hp = self.ctx, trial.hyperparameters
            self._supersede(trial.trial_id)
            epochs = hp.values.get("tuner/epochs", kwargs.get("epochs", ctx.cfg.epochs))
            initial = hp.values.get("tuner/initial_epoch", 0)
            tags = {"catdog.sweep_key": ctx.key, "catdog.kind": "trial", "catdog.arch": self.arch,
                    "catdog.trial_id": trial.trial_id, "catdog.tuner_id": self.tuner_id,
                    **tracking.environment_tags()}
            t0 = time.monotonic()
            with tracking.active_run(experiment=ctx.cfg.experiment, parent_run_id=self.arch_run_id,
                                     run_name=f"{self.arch}-trial-{trial.trial_id}",
                                     tags=tags) as run:
                run_id = run.info.run_id
                mlflow.log_params({**hp.values, **self._run_params()})
                stop_and_log, _ = fit_callbacks(run_id, f"{self.arch} t{trial.trial_id}",
                                                epochs, ctx.cfg.patience, initial)
                kwargs["callbacks"] = list(kwargs.get("callbacks", [])) + stop_and_log
                results = super().run_trial(trial, *args, **kwargs)
                fit_seconds = self.hypermodel.fit_seconds
                mlflow.log_param("param_count", self.hypermodel.last_model.count_params())
                history = results[0].history if isinstance(results, list) else results.history
                summary = tracking.history_summary(history, OBJECTIVE, initial)
                mlflow.log_metrics(summary)
                from catdog import plots

                tracking.log_figure(plots.learning_curves(
                    history, title=f"{self.arch} trial {trial.trial_id}"), "learning_curves.png")
                score = summary.get(f"best_{OBJECTIVE}", float("nan"))
                best_before = self._best_score()
                # Ties too: whichever tied trial the oracle later calls best has a model.
                if best_before is None or score >= best_before:
                    self._log_model(summary)
                runtime.release_memory()
                rss, peak = runtime.rss_mb()
                mlflow.log_metrics({
                    "rss_mb": rss,
                    "peak_rss_mb": peak,
                    "fit_seconds": fit_seconds,
                    "seconds_per_epoch": fit_seconds / max(summary["epochs_run"], 1),
                    "overhead_seconds": time.monotonic() - t0 - fit_seconds})
            self._report(trial, hp, score, best_before, time.monotonic() - t0)
            return results

        # -- helpers ----------------------------------------------------------------------
        def _run_params(self) -> dict:
            c = self.ctx.cfg
            return {"arch": self.arch, "tuner": c.tuner, "image_size": c.image_size,
                    "batch_size": c.batch_size, "max_epochs": c.epochs, "seed": c.seed,
                    "precision": c.precision, "strategy": runtime.strategy_name(
                        self.distribution_strategy or runtime.strategy())}

        def _supersede(self, trial_id: str) -> None:
            """A trial about to (re)run: earlier runs of it were interrupted; close them."""
            import mlflow

            client = mlflow.MlflowClient()
            filt = (f"tags.`catdog.sweep_key` = '{self.ctx.key}' and tags.`catdog.arch` = "
                    f"'{self.arch}' and tags.`catdog.trial_id` = '{trial_id}'")
            for old in _search(filt, self.ctx.experiment_id, ("RUNNING", "FINISHED")):
                client.set_tag(old.info.run_id, "catdog.orphaned", "true")
                client.set_terminated(old.info.run_id, "KILLED")

        def _best_score(self) -> float | None:
            best = self.oracle.get_best_trials(1)
            return best[0].score if best and best[0].score is not None else None

        def _log_model(self, summary: dict) -> None:
            """Log the model only when the trial beats the architecture's best so far: the final
            best trial always has one, and disk is not spent on trials nobody will register."""
            model = self.hypermodel.last_model
            probs = model.predict(pipeline.dataset(
                pipeline.decoded(self.ctx.data_root, "val", self.ctx.cfg.image_size),
                self.ctx.cfg.batch_size, shuffle=False), verbose=0).ravel()
            tracking.log_evaluation(self.ctx.val_labels, probs, "val", self.arch, headline=False)
            tracking.log_keras_model(model, self.ctx.sample)

        def _report(self, trial, hp, score, best_before, seconds) -> None:
            ctx = self.ctx
            ctx.trials_done += 1
            ctx.trial_seconds.append(seconds)
            best = score if best_before is None else max(score, best_before)
            shown = {k: (round(v, 5) if isinstance(v, float) else v)
                     for k, v in hp.values.items() if not k.startswith("tuner/")}
            remaining = max(ctx.total_trials - ctx.trials_done, 0)
            log.info("[%s] trial %d/%d %s  val_accuracy %.4f  best %.4f  (%s; sweep %d/%d, ETA %s)",
                     self.arch, int(trial.trial_id) + 1, ctx.cfg.trials, shown, score, best,
                     tracking.format_seconds(seconds), ctx.trials_done, ctx.total_trials,
                     tracking.format_seconds(ctx.eta(remaining)) if remaining else "done")

    return ArchHyperModel, Tracked


def make_tuner(kind: str, ctx: SweepContext, arch: str, arch_run_id: str, hyperparameters,
               directory: Path, overwrite: bool):
    import keras_tuner as kt

    ArchHyperModel, Tracked = _tuner_classes()
    base = {"hyperband": kt.Hyperband, "random": kt.RandomSearch,
            "bayesian": kt.BayesianOptimization}[kind]
    cls = type(f"Tracked{base.__name__}", (Tracked, base), {})
    common = dict(hypermodel=ArchHyperModel(models.get(arch), ctx.cfg.image_size),
                  objective=kt.Objective(OBJECTIVE, "max"), seed=ctx.cfg.seed,
                  hyperparameters=hyperparameters, tune_new_entries=True,
                  directory=str(directory), project_name=arch, overwrite=overwrite,
                  distribution_strategy=runtime.strategy() if runtime.gpus() else None)
    if kind == "hyperband":
        tuner = cls(max_epochs=ctx.cfg.epochs, factor=ctx.cfg.hyperband_factor, **common)
        tuner.oracle.max_trials = ctx.cfg.trials  # same trial budget for every architecture
    else:
        tuner = cls(max_trials=ctx.cfg.trials, **common)
    tuner.ctx, tuner.arch, tuner.arch_run_id = ctx, arch, arch_run_id
    return tuner


# ----------------------------------------------------------------------------------- the sweep
@dataclass
class SweepResult:
    key: str
    parent_run_id: str
    archs: dict[str, dict]
    stopped_early: str | None
    seconds: float


def run(cfg: experiment_mod.SweepConfig, *, fresh: bool = False) -> SweepResult:
    """Run (or resume) a sweep and return each architecture's best trial."""
    import keras
    import keras_tuner as kt
    import mlflow

    from catdog.data.prepare import read_summary

    t0 = time.monotonic()
    runtime.quiet()
    who = role()
    data_root = resolve_sweep_data(cfg.data)
    digest = read_summary(data_root)["digest"]
    key = cfg.key(digest)
    state_dir = TUNER_ROOT / key
    tracking.configure()
    exp_id = tracking.experiment_id(cfg.experiment)
    client = mlflow.MlflowClient()
    owner = who in ("local", "chief")
    base_port = int(os.environ["KERASTUNER_ORACLE_PORT"]) if who != "local" else None

    if fresh and owner:
        _retire(exp_id, key)
        shutil.rmtree(state_dir, ignore_errors=True)
    cfg = replace(cfg, precision=runtime.set_precision(cfg.precision))

    parent = _find_or_create(exp_id, {"catdog.sweep_key": key, "catdog.kind": "sweep"},
                             cfg.name, None, create=owner)
    if owner:
        _log_sweep_params(parent, cfg, key, data_root, digest)
    log.info("sweep %s (%s, %s) on %s: %d architectures x %d trials, up to %d epochs each; "
             "MLflow parent run %s", key, who, cfg.tuner, data_root, len(cfg.archs), cfg.trials,
             cfg.epochs, parent)

    ctx = SweepContext(cfg, key, exp_id, parent, data_root, None, None,
                       total_trials=len(cfg.archs) * cfg.trials)
    fit_data: tuple = ()
    fit_kwargs: dict = {}
    if who != "chief":  # the chief only serves the oracle; it never touches pixels
        val = pipeline.decoded(data_root, "val", cfg.image_size)
        ctx.sample, ctx.val_labels = val.images[:1].astype(np.float32), val.labels
        splits = pipeline.load(data_root, cfg.image_size, cfg.batch_size, seed=cfg.seed)
        fit_data, fit_kwargs = (splits.train,), {"validation_data": splits.val}
    results: dict[str, dict] = {}
    stopped: str | None = None
    current: str | None = None
    try:
        with tracking.sigterm_as_exception():
            for index, arch in enumerate(cfg.archs):
                current = _arch_run(exp_id, key, arch, parent, owner)
                if who == "local":  # alone on this sweep: any RUNNING trial run is an orphan
                    _kill_orphans(exp_id, key, arch)
                entry = models.get(arch)
                declared = entry.search_space(cfg.image_size).values
                hp = kt.HyperParameters()
                experiment_mod.apply_hp(hp, cfg.hp_for(arch, declared), declared)
                _use_oracle_port(index, base_port)
                keras.utils.set_random_seed(cfg.seed)
                tuner = make_tuner(cfg.tuner, ctx, arch, current, hp, state_dir, overwrite=False)
                done_before = sum(1 for t in tuner.oracle.trials.values()
                                  if t.status == "COMPLETED") if owner else 0
                ctx.trials_done += done_before
                if owner and done_before:
                    log.info("[%s] resuming: %d trial(s) already done", arch, done_before)
                ctx.arch_index = index
                try:
                    tuner.search(*fit_data, **fit_kwargs, epochs=cfg.epochs, verbose=0)
                except TimeLimitReached as exc:
                    stopped = str(exc)
                    log.info("%s: no more trials for it", exc)
                    if owner:
                        client.set_tag(current, "catdog.time_limited", "true")
                if owner:
                    results[arch] = _finish_arch(client, tuner, current, arch, exp_id, key)
                    client.set_terminated(current, "FINISHED")
                current = None
    except BaseException as exc:
        status = tracking.status_for(exc)
        if owner:
            for run_id in (current, parent):
                if run_id:
                    client.set_terminated(run_id, status)
        log.info("sweep %s stopped (%s); run the same command again to resume", key, status)
        raise
    if owner:
        _log_summary(parent)
        if stopped:
            client.set_tag(parent, "catdog.time_limited", "true")
        client.set_terminated(parent, "FINISHED")
    seconds = time.monotonic() - t0
    if owner:
        log.info("sweep %s finished in %s", key, tracking.format_seconds(seconds))
    return SweepResult(key, parent, results, stopped, seconds)


def _arch_run(exp_id, key, arch, parent, owner) -> str:
    return _find_or_create(exp_id, {"catdog.sweep_key": key, "catdog.kind": "arch",
                                    "catdog.arch": arch}, arch, parent, create=owner)


def _retire(exp_id: str, key: str) -> None:
    """--fresh: earlier runs of this sweep stay in MLflow for the record but are not resumed."""
    import mlflow

    client = mlflow.MlflowClient()
    for run in _search(f"tags.`catdog.sweep_key` = '{key}'", exp_id):
        client.set_tag(run.info.run_id, "catdog.sweep_key", f"{key}-retired-{int(time.time())}")
        if run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, "KILLED")


def _log_sweep_params(parent: str, cfg, key: str, data_root: Path, digest: str) -> None:
    import mlflow

    client = mlflow.MlflowClient()
    existing = client.get_run(parent).data.params
    params = {"archs": ",".join(cfg.archs), "tuner": cfg.tuner, "trials": cfg.trials,
              "epochs": cfg.epochs, "image_size": cfg.image_size, "batch_size": cfg.batch_size,
              "seed": cfg.seed, "patience": cfg.patience, "precision": cfg.precision,
              "time_limit_minutes": cfg.time_limit_minutes, "data": str(data_root)}
    new = {k: str(v) for k, v in params.items() if k not in existing}
    if new:
        client.log_batch(parent, params=[mlflow.entities.Param(k, v) for k, v in new.items()])
    client.set_tag(parent, "catdog.dataset_digest", digest)
    client.log_text(parent, json.dumps({k: v for k, v in vars(cfg).items()}, indent=2,
                                       default=list), "sweep_config.json")


def _finish_arch(client, tuner, arch_run_id: str, arch: str, exp_id: str, key: str) -> dict:
    """Tag the best trial's run, and put the search space and best figures on the arch run."""
    client.log_text(arch_run_id, json.dumps(tuner.oracle.hyperparameters.get_config(), indent=2,
                                            default=str), "search_space.json")
    best = tuner.oracle.get_best_trials(1)
    if not best:
        return {}
    trial = best[0]
    runs = _search(f"tags.`catdog.sweep_key` = '{key}' and tags.`catdog.arch` = '{arch}' and "
                   f"tags.`catdog.trial_id` = '{trial.trial_id}'", exp_id, ("FINISHED",))
    if not runs:
        return {}
    best_run = runs[-1]
    for run in _search(f"tags.`catdog.sweep_key` = '{key}' and tags.`catdog.arch` = '{arch}' "
                       f"and tags.`catdog.best_trial` = 'true'", exp_id):
        client.set_tag(run.info.run_id, "catdog.best_trial", "false")
    client.set_tag(best_run.info.run_id, "catdog.best_trial", "true")
    client.set_tag(arch_run_id, "catdog.best_run_id", best_run.info.run_id)
    metrics = {k: v for k, v in best_run.data.metrics.items()
               if k.startswith(("best_", "gap_", "epochs_run"))}
    for k, v in metrics.items():
        client.log_metric(arch_run_id, k, v)
    n_trials = len(_search(f"tags.`catdog.sweep_key` = '{key}' and tags.`catdog.arch` = "
                           f"'{arch}' and tags.`catdog.kind` = 'trial'", exp_id, ("FINISHED",)))
    client.log_metric(arch_run_id, "trials", n_trials)
    return {"run_id": best_run.info.run_id, "trial_id": trial.trial_id, "score": trial.score,
            "hyperparameters": {k: v for k, v in trial.hyperparameters.values.items()
                                if not k.startswith("tuner/")}, **metrics}


def _log_summary(parent: str) -> None:
    from catdog import compare

    compare.log_to_parent(parent)


def resolve_sweep_data(data: str | None) -> Path:
    """The sweep's data: as given; else the latest prepared set; else download and prepare."""
    from catdog.data.download import download
    from catdog.data.prepare import latest_prepared, prepare, resolve_data

    if data:
        return resolve_data(data)
    found = latest_prepared()
    if found is not None:
        log.info("no data given; using the latest prepared dataset %s", found)
        return found
    try:
        archive = download()
    except CatdogError as exc:
        reason = str(exc).split("; pass DATA=")[0]  # say the remedy once
        raise CatdogError(f"no data given and none could be downloaded: {reason}; pass "
                          "DATA=path/to/zip-or-folder (make sweep DATA=...) or --data") from None
    return prepare(archive, Path("data") / "prepared" / Path(archive).stem).root
