"""A sweep's own runs in MLflow: the parent's params, each architecture's run and its best
trial, and what the budget bought. Trials log themselves (`catdog.search.tuner`)."""

from __future__ import annotations

import json
from pathlib import Path

from catdog import keys
from catdog.data import balance
from catdog.log import format_seconds, get_logger
from catdog.tracking import queries, runlog, runs, tags

log = get_logger(__name__)


def arch_run(ctx, arch: str) -> str:
    """ARCH's run under the sweep's parent: created (or reopened) by the owner, awaited by a
    distributed worker."""
    return queries.find_or_create(
        ctx.experiment_id,
        {tags.SWEEP_KEY: ctx.key, tags.KIND: tags.KIND_ARCH, tags.ARCH: arch},
        arch,
        ctx.parent_run_id,
        create=ctx.owner,
    )


def finish_arch(ctx, trial, space: str, arch_run_id: str, arch: str) -> dict:
    """Tag the best trial's run (TRIAL, from the tuner's oracle; None if none completed), and
    put the search space (JSON) and best figures on the arch run."""
    runlog.log_text(arch_run_id, space, "search_space.json")
    if trial is None:
        return {}
    mine = {tags.SWEEP_KEY: ctx.key, tags.KIND: tags.KIND_TRIAL, tags.ARCH: arch}
    found = queries.search(
        ctx.experiment_id, {**mine, tags.TRIAL_ID: trial.trial_id}, (runs.FINISHED,)
    )
    if not found:
        return {}
    best_run = found[-1]
    tag_best(ctx, arch, best_run.info.run_id, arch_run_id)
    best = summary(best_run)
    runlog.log_metrics(best, arch_run_id)
    runlog.log_metrics(
        {"trials": len(queries.sweep_trials(ctx.experiment_id, ctx.key, arch))}, arch_run_id
    )
    return {
        "run_id": best_run.info.run_id,
        "trial_id": trial.trial_id,
        "score": trial.score,
        "hyperparameters": keys.hyperparameters(trial.hyperparameters.values),
        **best,
    }


def tag_best(ctx, arch: str, run_id: str, arch_run_id: str) -> None:
    """RUN_ID is ARCH's best trial in this sweep: tagged so, the others not, and named on the
    architecture's run."""
    mine = {tags.SWEEP_KEY: ctx.key, tags.KIND: tags.KIND_TRIAL, tags.ARCH: arch}
    for run in queries.search(ctx.experiment_id, {**mine, tags.BEST_TRIAL: tags.TRUE}):
        if run.info.run_id != run_id:
            runlog.set_tag(run.info.run_id, tags.BEST_TRIAL, tags.FALSE)
    runlog.set_tag(run_id, tags.BEST_TRIAL, tags.TRUE)
    runlog.set_tag(arch_run_id, tags.BEST_RUN_ID, run_id)


def summary(run) -> dict:
    """A trial run's best figures (best_*, gap_*, epochs_run), as `finish_arch` returns them."""
    return {
        k: v for k, v in run.data.metrics.items() if k.startswith(("best_", "gap_", "epochs_run"))
    }


def retire_orphans(ctx, archs) -> int:
    """Mark the trials and repeats of ARCHS left RUNNING by an interrupted run KILLED; how many.
    Only a sweep alone on its runs may (see `resume.sweep_lock`)."""
    return sum(
        queries.retire(
            ctx.experiment_id, {tags.SWEEP_KEY: ctx.key, tags.KIND: kind, tags.ARCH: arch}
        )
        for arch in archs
        for kind in (tags.KIND_TRIAL, tags.KIND_REPEAT)
    )


def log_sweep_params(parent: str, cfg, strategy, data_root: Path, digest: str) -> None:
    # Repeats and the budget may change when a sweep is resumed, and params cannot: they live
    # in sweep_config.json (rewritten on every run) and, for repeats, on the arch runs.
    # `data` is logged as the prepared dataset it resolved to, not as written. The objective is
    # logged only where it is not val accuracy (an imbalanced dataset): a balanced dataset's
    # params are what they always were, and `choose.objective` reads its absence as accuracy.
    params = {**cfg.params(searches_size=strategy.searches_size), keys.DATA: str(data_root)}
    if (chosen_by := balance.objective(data_root)) != keys.OBJECTIVE:
        params[keys.SWEEP_OBJECTIVE] = chosen_by
        log.info("%s", balance.sweep_line(data_root))
    runlog.log_params(params, parent, only_new=True)
    runlog.set_tag(parent, tags.DATASET_DIGEST, digest)
    runlog.log_text(
        parent, json.dumps(dict(vars(cfg)), indent=2, default=list), "sweep_config.json"
    )


def log_budget(ctx, seconds: float) -> None:
    """What the budget bought: planned against run, and the shortfall said in words."""
    if ctx.plan is None:
        return
    planned = ctx.plan.planned_trials
    ran = len(queries.sweep_trials(ctx.experiment_id, ctx.key))
    runlog.log_metrics(
        {keys.PLANNED_TRIALS: planned, keys.TRIALS_RUN: ran, keys.SWEEP_SECONDS: seconds},
        ctx.parent_run_id,
    )
    if ctx.plan.budget is not None:
        runlog.log_metrics({keys.BUDGET_SECONDS: ctx.plan.budget}, ctx.parent_run_id)
        log.info(
            "budget %s: used %s; %d trials ran, %d planned%s",
            format_seconds(ctx.plan.budget),
            format_seconds(seconds),
            ran,
            planned,
            ""
            if ran >= planned
            else f" (the budget ran out {planned - ran} trial(s) short; results are from "
            "the trials that finished)",
        )
