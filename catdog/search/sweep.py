"""A sweep, top to bottom: guards, data, plan, search, repeats, final fit.

MLflow holds three levels: one parent run per sweep, one child per architecture, one nested run
per trial (its hyperparameters as params, per-epoch metrics, its learning curves). The strategy
(`catdog.search.strategies`) decides how the budget is spent: a screen then one long fit
(`focus`), equal shares per architecture (`compare`) or a race (`best`). After the search come the repeats and the final fit
(`catdog.search.retrain`): the winner retrained on train+val, the model `register` promotes.

Resuming: tuner state lives in `.tuner/<sweep key>/` (git-ignored). Running the same sweep again
reloads it: KerasTuner skips finished trials and re-runs the one that was interrupted; the
interrupted trial's MLflow run is marked KILLED (never left RUNNING) and the parent and
architecture runs are reopened rather than duplicated. `fresh=True` starts over.

Distributed: with KERASTUNER_TUNER_ID/ORACLE_IP/ORACLE_PORT set, the chief serves the oracle
and owns the parent and architecture runs; workers run trials and log them to the shared
tracking server. Only a distributable strategy runs so (see `context.role`).
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import time
from dataclasses import dataclass, replace

from catdog import pipeline, runtime, sweepfile
from catdog.data import resolve_data
from catdog.data.prepare import read_summary
from catdog.errors import CatdogError
from catdog.log import format_seconds, get_logger
from catdog.search import records, resume, retrain, strategies
from catdog.search.context import TUNER_ROOT, SizedSplits, SweepContext, role
from catdog.tracking import queries, runlog, runs, store, tags

log = get_logger(__name__)


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

    On one machine the sweep is planned first: its strategy measures this machine and fits
    trials and epochs to the budget. `confirm(plan)`, if given, may decline to start once the
    plan is known (the CLI asks at a terminal when there is no budget)."""
    t0 = time.monotonic()
    cfg, strategy, spaces = _guards(cfg)
    with contextlib.ExitStack() as held:
        ctx = _open(cfg, strategy, fresh, held)
        ctx.plan = _plan(ctx, spaces, confirm, time.monotonic() - t0)
        _start(ctx, t0)
        try:
            with runs.sigterm_as_exception():
                results, stopped = strategy.search(ctx, spaces, TUNER_ROOT / ctx.key)
                retrain.repeat_all(ctx, results)
                final = retrain.final_fit(ctx) if ctx.role == "local" and cfg.final_fit \
                    and strategy.final_fit and any(results.values()) else None
                seconds = _finish(ctx, stopped, t0)
        except BaseException as exc:
            if ctx.owner:
                runs.terminate(ctx.parent_run_id, runs.status_for(exc))
            log.info("sweep %s stopped (%s); run the same command again to resume", ctx.key,
                     runs.status_for(exc))
            raise
    return SweepResult(ctx.key, ctx.parent_run_id, results, stopped, seconds, final)


def _guards(cfg):
    """What fails before any data is read: the store, the strategy's settings, the spaces; and
    the pretrained families whose weights cannot be had, left out with a sentence saying why."""
    store.configure()  # a store that does not answer fails now, not after decoding the data
    runtime.start()
    if role() != "chief":  # the chief serves the oracle; it trains nothing
        runtime.require_gpu(cfg.device, cfg.name)
    strategy = strategies.validate(cfg, role())
    cfg = _with_weights(cfg)
    return cfg, strategy, sweepfile.search_spaces(cfg)


def _with_weights(cfg):
    """CFG without the pretrained architectures whose weights are neither cached nor
    downloadable: training them from random weights would not be what they promise."""
    from catdog import models

    if not cfg.pretrained:
        return cfg
    kept = []
    for arch in cfg.archs:
        entry = models.get(arch)
        sizes = entry.sizes_within(sorted({cfg.image_size, *cfg.sizes})) or \
            [entry.default_image_size]
        found = [entry.weights_available(size) for size in sizes] if entry.pretrained else []
        ok, why = next(((o, w) for o, w in found if not o), (True, ""))
        if ok:
            kept.append(arch)
        else:
            log.info("leaving %s out of this sweep: %s; the others train from scratch", arch,
                     why)
    if not kept:
        raise CatdogError(f"no architecture of {', '.join(cfg.archs)} can run here: their "
                          "pretrained weights cannot be had; add one that trains from scratch")
    return replace(cfg, archs=tuple(kept)) if len(kept) < len(cfg.archs) else cfg


def _open(cfg, strategy, fresh: bool, held: contextlib.ExitStack) -> SweepContext:
    """The sweep's identity, its lock and resume checks, and its data at the sweep's size."""
    who = role()
    data_root = resolve_data(cfg.data)
    digest = read_summary(data_root)["digest"]
    key = cfg.key(digest)
    exp_id = store.experiment_id(cfg.experiment)
    state_dir = TUNER_ROOT / key
    if who != "worker":
        held.enter_context(resume.sweep_lock(TUNER_ROOT, key))
        if fresh:
            queries.retire_sweep(exp_id, key)
            shutil.rmtree(state_dir, ignore_errors=True)
        else:
            resume.check_state_matches_store(state_dir, strategy.state_folders(cfg),
                                                 exp_id, key)
    runtime.set_precision(cfg.precision)  # per architecture once planned (ctx.precision)
    splits = None
    if who != "chief":  # the chief only serves the oracle; it never touches pixels
        runtime.announce_devices()
        splits = pipeline.load(data_root, cfg.image_size, cfg.batch_size, seed=cfg.seed)
    port = int(os.environ["KERASTUNER_ORACLE_PORT"]) if who != "local" else None
    return SweepContext(cfg, strategy, key, exp_id, "", data_root, splits, role=who,
                        digest=digest, oracle_port=port,
                        sized=SizedSplits(data_root, cfg, splits))


def _plan(ctx: SweepContext, spaces: dict, confirm, spent: float):
    """Measure this machine and fit the search to the budget; a resumed sweep keeps the plan it
    started with unless its budget changed. Distributed sweeps run the file as written."""
    from catdog import plan as planning

    if ctx.role != "local":
        return None
    cfg = ctx.cfg
    path = TUNER_ROOT / ctx.key / "plan.json"
    make = lambda: ctx.strategy.plan(cfg, ctx.sized.at, spaces, spent)  # noqa: E731
    saved, resumed = planning.load_or_make(path, make, ctx.strategy.plan_type)
    if resumed and saved.budget != cfg.budget_seconds:
        path.unlink()
        saved, resumed = planning.load_or_make(path, make, ctx.strategy.plan_type)
    log.info("%s plan:\n%s", "resumed" if resumed else "the", saved.describe())
    if saved.budget is not None and saved.budget < saved.minimum_seconds:
        path.unlink()
        raise CatdogError(f"a budget of {format_seconds(saved.budget)} cannot hold one trial "
                          "here (setting up and the cheapest 1-epoch trial take about "
                          f"{format_seconds(saved.minimum_seconds)}); give it at least "
                          f"--budget {math.ceil(saved.minimum_seconds / 60)}m")
    ctx.strategy.explain(saved, cfg)
    if confirm is not None and not confirm(saved):
        raise NotStarted("sweep not started; give it a budget (--budget 45m) to plan it to the "
                         "time you have")
    return saved


def _start(ctx: SweepContext, t0: float) -> None:
    """The parent run (created, reopened, or awaited by a worker), its params and plan."""
    cfg = ctx.cfg
    ctx.parent_run_id = queries.find_or_create(
        ctx.experiment_id, {tags.SWEEP_KEY: ctx.key, tags.KIND: tags.KIND_SWEEP}, cfg.name,
        None, create=ctx.owner)
    if ctx.owner:
        records.log_sweep_params(ctx.parent_run_id, cfg, ctx.strategy, ctx.data_root,
                                 ctx.digest)
        if ctx.plan:
            runlog.log_text(ctx.parent_run_id, ctx.plan.to_json(), "plan.json")
    log.info("sweep %s (%s, %s) on %s: %d architectures, MLflow parent run %s", ctx.key,
             ctx.role, cfg.tuner, ctx.data_root, len(cfg.archs), ctx.parent_run_id)
    if cfg.budget_seconds and ctx.plan:
        ctx.deadline = t0 + cfg.budget_seconds
    ctx.total_trials = ctx.strategy.total_trials(ctx)
    if cfg.repeats and ctx.role != "local":
        log.info("repeats are run by a sweep on one machine; run `catdog sweep` with the same "
                 "file afterwards to add them to this distributed sweep")


def _finish(ctx: SweepContext, stopped: str | None, t0: float) -> float:
    """The comparison, the anytime plot and the budget's account on the parent run."""
    from catdog import compare

    seconds = time.monotonic() - t0
    if not ctx.owner:
        return seconds
    compare.log_to_parent(ctx.parent_run_id)
    compare.log_anytime(ctx.parent_run_id)
    if stopped:
        runlog.set_tag(ctx.parent_run_id, tags.TIME_LIMITED, tags.TRUE)
    records.log_budget(ctx, seconds)
    runlog.finish(ctx.parent_run_id)
    log.info("sweep %s finished in %s", ctx.key, format_seconds(seconds))
    return seconds
