"""A sweep, top to bottom: guards, data, plan, search, repeats, final fit.

MLflow holds three levels: one parent run per sweep, one child per architecture, one nested run
per trial (its hyperparameters as params, per-epoch metrics, its learning curves). The strategy
(`catdog.search.strategies`) decides how the budget is spent: a screen then one long fit
(`focus`), equal shares per architecture (`compare`) or a race (`best`). After the search come
the repeats and the final fit (`catdog.search.retrain`): the winner retrained on train+val, the
model `register` promotes.

Resuming: tuner state lives in `.tuner/<sweep key>/` (git-ignored), with the sweep's plan and
its progress (`catdog.search.progress`: trials done, the budget's clock). Running the same sweep
again reloads them: KerasTuner skips finished trials and re-runs the one that was interrupted;
the interrupted trial's MLflow run is marked KILLED (never left RUNNING) and the parent and
architecture runs are reopened rather than duplicated; the budget goes on from what the earlier
runs spent. `fresh=True` starts over.

Distributed: with KERASTUNER_TUNER_ID/ORACLE_IP/ORACLE_PORT set, the chief plans the sweep to
the budget as a sweep on one machine does, owns the budget's clock, the parent and architecture
runs, serves each architecture's oracle (which stops handing out trials when its share of the
budget is used) and runs the final fit; workers read the chief's plan, run trials, log them to
the shared tracking server, and stop a trial at the search's deadline. Only a distributable
strategy runs so (see `context.role`).
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
from dataclasses import dataclass, replace

from catdog import pipeline, runtime, sweepfile
from catdog.data import resolve_data, resolve_name
from catdog.data.prepare import read_summary
from catdog.errors import CatdogError
from catdog.log import format_seconds, get_logger
from catdog.plan import load_or_make
from catdog.search import resume, retrain, runtree, strategies
from catdog.search.context import TUNER_ROOT, SizedSplits, SweepContext, role
from catdog.search.progress import SweepProgress
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
    plan: object = None  # the plan it ran to (or would have: see `started`)
    experiment: str = ""  # the MLflow experiment that holds its runs
    started: bool = True  # False: stopped after its plan (a dry run, or declined)


def run(
    cfg: sweepfile.SweepConfig, *, fresh: bool = False, confirm=None, dry_run: bool = False
) -> SweepResult:
    """Run (or resume) a sweep and return each architecture's best trial.

    On one machine the sweep is planned first: its strategy measures this machine and fits
    trials and epochs to the budget. DRY_RUN stops there; `confirm(plan)`, if given, may decline
    to start once the plan is known (the CLI asks at a terminal when there is no budget). The
    budget's clock starts once the data is ready, and a resumed sweep goes on with the time its
    earlier runs left (`progress`)."""
    cfg, strategy, spaces = _guards(cfg)
    with contextlib.ExitStack() as held:
        ctx = _open(cfg, strategy, fresh, held)
        ctx = replace(ctx, plan=_plan(ctx, spaces))
        if ctx.role == "local" and (dry_run or (confirm is not None and not confirm(ctx.plan))):
            return SweepResult(
                ctx.key,
                "",
                {},
                None,
                0.0,
                plan=ctx.plan,
                started=False,
                experiment=ctx.cfg.experiment,
            )
        ctx = _start(ctx)
        try:
            with runs.sigterm_as_exception():
                results, stopped = strategy.search(ctx, spaces, TUNER_ROOT / ctx.key)
                retrain.repeat_all(ctx, results)
                final = (
                    retrain.final_fit(ctx)
                    if ctx.owner and cfg.final_fit and strategy.final_fit and any(results.values())
                    else None
                )
                seconds = _finish(ctx, stopped)
        except BaseException as exc:
            if ctx.owner:
                ctx.progress.save()
                runs.terminate(ctx.parent_run_id, runs.status_for(exc))
            log.info(
                "sweep %s stopped (%s); run the same command again to resume",
                ctx.key,
                runs.status_for(exc),
            )
            raise
    return SweepResult(
        ctx.key,
        ctx.parent_run_id,
        results,
        stopped,
        seconds,
        final,
        ctx.plan,
        experiment=ctx.cfg.experiment,
    )


def _guards(cfg):
    """What fails before any data is read: the store, the strategy's settings, the spaces; and
    the pretrained families whose weights cannot be had, left out with a sentence saying why."""
    store.configure()  # a store that does not answer fails now, not after decoding the data
    runtime.start()
    runtime.require_gpu(cfg.device, cfg.name)  # a distributed chief measures and final-fits
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
        sizes = entry.sizes_within(sorted({cfg.image_size, *cfg.sizes})) or [
            entry.default_image_size
        ]
        found = [entry.weights_available(size) for size in sizes] if entry.pretrained else []
        ok, why = next(((o, w) for o, w in found if not o), (True, ""))
        if ok:
            kept.append(arch)
        else:
            log.info("leaving %s out of this sweep: %s; the others train from scratch", arch, why)
    if not kept:
        raise CatdogError(
            f"no architecture of {', '.join(cfg.archs)} can run here: their "
            "pretrained weights cannot be had; add one that trains from scratch"
        )
    return replace(cfg, archs=tuple(kept)) if len(kept) < len(cfg.archs) else cfg


def _open(cfg, strategy, fresh: bool, held: contextlib.ExitStack) -> SweepContext:
    """The sweep's identity, its lock and resume checks, its data at the sweep's size, and its
    progress (restored when resumed), whose clock starts once the data is ready."""
    who = role()
    data_root = resolve_data(cfg.data)
    if cfg.experiment is None:  # one experiment per dataset, named as the dataset is
        cfg = replace(cfg, experiment=resolve_name(None, data_root))
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
            resume.check_state_matches_store(state_dir, strategy.state_folders(cfg), exp_id, key)
    progress = (  # the budget's clock is the owner's: a worker's is only for its own lines
        SweepProgress.load(state_dir, cfg.budget_seconds)
        if who != "worker"
        else SweepProgress(cfg.budget_seconds)
    )
    runtime.set_precision(cfg.precision)  # per architecture once planned (ctx.precision)
    runtime.announce_devices()
    splits = pipeline.load(data_root, cfg.image_size, cfg.batch_size, seed=cfg.seed)
    port = int(os.environ["KERASTUNER_ORACLE_PORT"]) if who != "local" else None
    return SweepContext(
        cfg,
        strategy,
        key,
        exp_id,
        data_root,
        splits,
        progress,
        role=who,
        digest=digest,
        oracle_port=port,
        sized=SizedSplits(data_root, cfg, splits),
    )


def _plan(ctx: SweepContext, spaces: dict):
    """Measure this machine and fit the search to the budget; a resumed sweep keeps the plan it
    started with unless its budget changed, and says what its earlier runs spent. A distributed
    sweep's chief plans it so; its workers read that plan once the chief has made it
    (`_start`)."""
    if ctx.role == "worker":
        return None
    cfg, progress = ctx.cfg, ctx.progress
    path = TUNER_ROOT / ctx.key / "plan.json"
    make = lambda: ctx.strategy.plan(cfg, ctx.sized.at, spaces, progress.elapsed())  # noqa: E731
    if not progress.resumed:  # a plan no run started under (a dry run's): measure again
        path.unlink(missing_ok=True)
    saved, resumed = load_or_make(path, make, ctx.strategy.plan_type)
    if resumed and saved.budget != cfg.budget_seconds:
        path.unlink()
        saved, resumed = load_or_make(path, make, ctx.strategy.plan_type)
    log.info(
        "%s plan:\n%s\n(the budget's clock started once the data was ready: downloading "
        "and preparing photos are not counted)",
        "resumed" if resumed else "the",
        saved.describe(),
    )
    if resumed and progress.spent_before and progress.budget is not None:
        log.info(
            "resuming: earlier runs of this sweep spent %s of its %s budget; %s left, "
            "after this run's own set-up",
            format_seconds(progress.spent_before),
            format_seconds(progress.budget),
            format_seconds(max(progress.left() or 0, 0)),
        )
    if saved.budget is not None and saved.budget < saved.minimum_seconds:
        path.unlink()
        raise CatdogError(
            f"a budget of {format_seconds(saved.budget)} cannot hold one trial "
            "here (setting up and the cheapest 1-epoch trial take about "
            f"{format_seconds(saved.minimum_seconds)}); give it at least "
            f"--budget {math.ceil(saved.minimum_seconds / 60)}m"
        )
    ctx.strategy.explain(saved, cfg)
    return saved


def _start(ctx: SweepContext) -> SweepContext:
    """The parent run (created, reopened, or awaited by a worker), its params and plan; the
    budget's clock, which a resumed sweep starts where its earlier runs left it."""
    cfg = ctx.cfg
    ctx = replace(
        ctx,
        parent_run_id=queries.find_or_create(
            ctx.experiment_id,
            {tags.SWEEP_KEY: ctx.key, tags.KIND: tags.KIND_SWEEP},
            cfg.name,
            None,
            create=ctx.owner,
        ),
    )
    if ctx.owner:
        runtree.log_sweep_params(ctx.parent_run_id, cfg, ctx.strategy, ctx.data_root, ctx.digest)
        if ctx.plan:
            runlog.log_text(ctx.parent_run_id, ctx.plan.to_json(), "plan.json")
    else:  # the chief saved its plan before it created the parent run found above
        ctx = replace(ctx, plan=_chiefs_plan(ctx))
    log.info(
        "sweep %s (%s, %s) on %s: %d architectures, MLflow parent run %s",
        ctx.key,
        ctx.role,
        cfg.tuner,
        ctx.data_root,
        len(cfg.archs),
        ctx.parent_run_id,
    )
    if ctx.progress.resumed:
        # A restart's own set-up (starting TensorFlow, decoding the photos) is not the budget's:
        # the clock goes on from what the earlier runs spent.
        ctx.progress.restart_clock()
    ctx.progress.save()
    if cfg.repeats and ctx.role != "local":
        log.info(
            "repeats are run by a sweep on one machine; run `catdog sweep` with the same "
            "file afterwards to add them to this distributed sweep"
        )
    return ctx


def _chiefs_plan(ctx: SweepContext):
    """A worker's copy of the plan its chief made: the trials' epochs and precisions. Every
    process of a distributed sweep shares the tuner state's folder (docs/distributed.md)."""
    path = TUNER_ROOT / ctx.key / "plan.json"
    if not path.is_file():
        log.warning(
            "no plan from the chief at %s (is .tuner/ shared?); this worker runs the sweep "
            "file's epochs as written",
            path,
        )
        return None
    return ctx.strategy.plan_type.from_json(path.read_text())


def _finish(ctx: SweepContext, stopped: str | None) -> float:
    """The comparison, the anytime plot and the budget's account on the parent run."""
    from catdog import compare

    seconds = ctx.progress.elapsed()
    if not ctx.owner:
        return seconds
    ctx.progress.save()
    compare.log_to_parent(ctx.parent_run_id)
    compare.log_anytime(ctx.parent_run_id)
    if stopped:
        runlog.set_tag(ctx.parent_run_id, tags.TIME_LIMITED, tags.TRUE)
    runtree.log_budget(ctx, seconds)
    runlog.finish(ctx.parent_run_id)
    log.info("sweep %s finished in %s", ctx.key, format_seconds(seconds))
    return seconds
