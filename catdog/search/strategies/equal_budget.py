"""The `compare` strategy: every architecture gets the same share of the budget.

One KerasTuner search per architecture, one after the other, each with the trials and epochs
its measured speed buys in its share (`catdog.plan.make_plan`): an equal-budget comparison,
which is what "which architecture is best here?" needs. It is also the strategy that runs
distributed: a chief serves each architecture's oracle in turn (on ORACLE_PORT + the
architecture's index) and owns the runs; workers run trials.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from catdog.log import format_seconds, get_logger
from catdog.search import records
from catdog.search.context import TimeLimitReached
from catdog.search.strategies import register
from catdog.search.strategies.base import Strategy, measure
from catdog.tracking import queries, runlog, runs, tags

log = get_logger(__name__)


@register
class EqualBudget(Strategy):
    name = "compare"
    note = "every architecture had the same share of the budget: an equal-budget comparison"
    distributable = True

    def plan(self, cfg, splits_at, spaces: dict, spent: float):
        from catdog import plan as planning

        t0 = time.monotonic()
        splits = splits_at(cfg.image_size)
        speeds, precisions = {}, {}
        for arch in cfg.archs:
            values = {k: v for k, v in spaces[arch].values.items() if not k.startswith("tuner/")}
            per_epoch, overhead, precisions[arch] = measure(cfg, arch, splits, cfg.image_size,
                                                            values)
            speeds[arch] = (per_epoch, overhead)
        plan = planning.make_plan(speeds, trials=cfg.trials, epochs=cfg.epochs,
                                  budget=cfg.budget_seconds, repeats=cfg.repeats,
                                  final_fit=cfg.final_fit,
                                  measured_seconds=spent + time.monotonic() - t0)
        plan.precisions = precisions
        return plan

    def explain(self, plan, cfg) -> None:
        short = [a.arch for a in plan.archs.values()
                 if a.trials < cfg.trials or a.epochs < cfg.epochs]
        if short:
            log.info("the budget holds fewer trials or epochs than the sweep file asks for %s",
                     ", ".join(short))

    def before_trial(self, tuner) -> None:
        ctx = tuner.ctx
        if ctx.plan is None:
            return
        first = not any(t.status == "COMPLETED" for t in tuner.oracle.trials.values())
        if share_used(ctx, tuner.arch, first):
            raise TimeLimitReached(f"{tuner.arch}'s share of the "
                                   f"{format_seconds(ctx.cfg.budget_seconds)} budget "
                                   "is used up")

    def search(self, ctx, spaces: dict, state_dir: Path):
        results: dict[str, dict] = {}
        stopped = None
        for index, arch in enumerate(ctx.cfg.archs):
            current = records.arch_run(ctx, arch)
            if ctx.role == "worker" and runlog.status(current) == runs.FINISHED:
                # The chief is past it (this worker was restarted, or joined late): its oracle
                # is closed, and waiting on it would hang.
                log.info("[%s] finished by the chief; going on to the next architecture", arch)
                continue
            try:
                found, why = self._search_arch(ctx, index, arch, current, spaces[arch],
                                               state_dir)
            except BaseException as exc:
                if ctx.owner:
                    runs.terminate(current, runs.status_for(exc))
                raise
            stopped = why or stopped
            if ctx.owner:
                results[arch] = found
        return results, stopped

    def _search_arch(self, ctx, index: int, arch: str, current: str, hp, state_dir: Path):
        import keras

        if ctx.role == "local":  # alone on this sweep: any RUNNING trial or repeat is an orphan
            n = sum(queries.retire(ctx.experiment_id, {tags.SWEEP_KEY: ctx.key, tags.KIND: kind,
                                                       tags.ARCH: arch})
                    for kind in (tags.KIND_TRIAL, tags.KIND_REPEAT))
            if n:
                log.info("marked %d interrupted run(s) of %s as KILLED", n, arch)
        if ctx.role != "local":  # one oracle port per architecture: the last may be draining
            os.environ["KERASTUNER_ORACLE_PORT"] = str(ctx.oracle_port + index)
        keras.utils.set_random_seed(ctx.cfg.seed)
        tuner = make_tuner(ctx, arch, current, hp, state_dir)
        done_before = sum(1 for t in tuner.oracle.trials.values()
                          if t.status == "COMPLETED") if ctx.owner else 0
        ctx.trials_done += done_before
        if ctx.owner and done_before:
            log.info("[%s] resuming: %d trial(s) already done", arch, done_before)
        ctx.arch_index = index
        if index == 0:
            ctx.search_started = time.monotonic()
        fit = ((ctx.splits.train,), {"validation_data": ctx.splits.val}) if ctx.splits \
            else ((), {})
        stopped = None
        try:
            tuner.search(*fit[0], **fit[1], epochs=ctx.epochs_for(arch), verbose=0)
        except TimeLimitReached as exc:
            stopped = str(exc)
            log.info("%s: no more trials for it", exc)
            if ctx.owner:
                runlog.set_tag(current, tags.TIME_LIMITED, tags.TRUE)
        if not ctx.owner:
            return {}, stopped
        best = tuner.oracle.get_best_trials(1)
        space = json.dumps(tuner.oracle.hyperparameters.get_config(), indent=2, default=str)
        found = records.finish_arch(ctx, best[0] if best else None, space, current, arch)
        runlog.finish(current)
        return found, stopped


def share_used(ctx, arch: str, first: bool) -> bool:
    """Architecture i may start a trial only if the plan expects it to end before (i+1)/n of
    the search budget has passed (its first trial only needs that point not to have passed
    yet): every one gets its share, time an earlier one did not use flows to the later ones,
    and a trial is not started that would eat the final fit's reserve."""
    budget = ctx.plan.search_budget if ctx.plan else None
    if budget is None:
        return False
    p = ctx.plan.archs[arch]
    expected = 0.0 if first else p.trial_overhead + p.epochs * p.seconds_per_epoch
    searched = time.monotonic() - ctx.search_started
    return searched + expected > budget * (ctx.arch_index + 1) / len(ctx.cfg.archs)


def make_tuner(ctx, arch: str, arch_run_id: str, hyperparameters, directory: Path,
               overwrite: bool = False):
    """A tracked KerasTuner tuner of the sweep's kind for ARCH, with the epochs the plan gives
    it."""
    from catdog import models
    from catdog.search import tuner as tuning

    cls = tuning.TUNERS[ctx.cfg.tuner]
    epochs = ctx.epochs_for(arch)
    common = dict(hypermodel=tuning.ArchHyperModel(models.get(arch), ctx.cfg.image_size,
                                                   ctx.cfg.pretrained, epochs, ctx.num_classes,
                                                   ctx.precision(arch)),
                  objective=tuning.objective(), seed=ctx.cfg.seed,
                  hyperparameters=hyperparameters, tune_new_entries=True,
                  directory=str(directory), project_name=arch, overwrite=overwrite,
                  distribution_strategy=tuning.distribution())
    if ctx.cfg.tuner == "hyperband":
        tuner = cls(max_epochs=epochs, factor=ctx.cfg.hyperband_factor, **common)
    else:
        tuner = cls(max_trials=ctx.cfg.trials, **common)
    # The sweep file's cap: under a budget, the time left decides how many of them run (the
    # plan's count is what it expects), so time early stopping saves buys more trials.
    tuner.oracle.max_trials = ctx.cfg.trials
    tuner.ctx, tuner.arch, tuner.arch_runs = ctx, arch, {arch: arch_run_id}
    return tuner
