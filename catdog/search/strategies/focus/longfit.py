"""The `focus` strategy's long fit: the screen's winner trained for the time left, in phases.

A phase is (image size, epochs, hyperparameter overrides, learning-rate scale). From scratch:
the screen's size, then the finish size; the weights and the optimizer's state (Adam's moments
and step count) carry over, since global-pooling models do not depend on the input size. A
pretrained backbone: frozen, then its top layers fine-tuned at a tenth of the rate, with a fresh
optimizer (its trainable variables changed). One cosine schedule runs over all phases; every
epoch is validated and logged to one trial run (trial id `long`) under the architecture's run.

The model that ships is the best validated epoch's weights, at the size they were validated at,
whichever phase they came from: the best score and epoch logged are that model's. Flip TTA is
part of the model unless it is worse than the plain model on validation beyond chance
(`tta.keep_tta`). Every epoch is checkpointed
(`checkpoint.Checkpoint`): a resumed sweep continues the same fit from its last epoch, on its
original schedule.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import keras
import numpy as np

from catdog import choose, keys, models, runtime
from catdog.log import format_seconds, get_logger
from catdog.search import runtree
from catdog.search.context import TUNER_ROOT, SweepContext
from catdog.search.strategies.base import measure
from catdog.search.strategies.focus.checkpoint import BestWeights, Checkpoint, Clock, Saver, carry
from catdog.search.strategies.focus.finish import SMALL_FRACTION, finish_epochs, long_schedule
from catdog.search.strategies.focus.plan import LONG_FACTOR
from catdog.search.strategies.focus.tta import keep_tta
from catdog.search.tuner import trial_settings
from catdog.tracking import queries, runlog, runs, tags
from catdog.tracking.callbacks import EpochLogger
from catdog.tracking.fitlog import record_fit

log = get_logger(__name__)

TRIAL_ID = "long"
RESERVE_S = 60.0  # kept back for evaluating and logging the long fit's model...
RESERVE_FRACTION = 0.1  # ...or this share of a short budget, whichever is less
FROZEN_FRACTION = 0.25  # of a pretrained long fit's epochs, with the backbone frozen
OVERRUN = 4  # under a budget, a phase may train up to this many times its planned epochs
FINE_TUNE_LAYERS = 40  # of a pretrained backbone, unfrozen after its frozen phase
FINE_TUNE_SCALE = 0.1
KEEP_OPTIMIZER = True  # carry Adam's state across a resize (docs/budget.md has the measurement)


@dataclass
class Phase:
    size: int
    epochs: int
    overrides: dict
    lr_scale: float = 1.0


@dataclass
class Schedule:
    """What a long fit was started with, saved in its checkpoint so a resume keeps to it."""

    arch: str
    values: dict
    source: str  # the screen's trial run it continues
    epochs: int
    phases: list[Phase]
    seconds: float | None  # the fit's length on its own clock (None: no budget, EPOCHS rule)
    ends: list[float] | None  # each phase's end, in seconds from the fit's start
    run_id: str = ""

    @classmethod
    def from_dict(cls, raw: dict) -> Schedule:
        return cls(**{**raw, "phases": [Phase(**p) for p in raw["phases"]]})


def phases_for(
    entry, values: dict, screen: int, size: int, epochs: int, early: int, pretrained: bool
) -> list[Phase]:
    if pretrained:
        frozen = max(1, round(epochs * FROZEN_FRACTION))
        return [
            Phase(size, frozen, {"fine_tune": 0}),
            Phase(
                size,
                max(epochs - frozen, 1),
                {"fine_tune": values.get("fine_tune") or FINE_TUNE_LAYERS},
                FINE_TUNE_SCALE,
            ),
        ]
    if early and size != screen:
        return [Phase(screen, early, {}), Phase(size, epochs - early, {})]
    return [Phase(size, epochs, {})]


def run(ctx: SweepContext) -> tuple[str, dict | None]:
    """Train the screen's winner for the time left, or go on with the long fit a killed run of
    this sweep left; (its arch, its result as `runtree.finish_arch` gives it). A finished long
    fit is not run again, whichever architecture it trained."""
    where = {tags.SWEEP_KEY: ctx.key, tags.KIND: tags.KIND_TRIAL, tags.TRIAL_ID: TRIAL_ID}
    done = queries.search(ctx.experiment_id, where, (runs.FINISHED,))
    if done:
        arch = done[-1].data.tags[tags.ARCH]
        log.info("the long fit of %s is already done (run %s)", arch, done[-1].info.run_id)
        return arch, _result(done[-1], ctx.objective)
    checkpoint = Checkpoint(TUNER_ROOT / ctx.key / TRIAL_ID)
    saved = checkpoint.state()
    schedule = Schedule.from_dict(saved["schedule"]) if saved else _schedule(ctx)
    if schedule is None:
        return "", None
    arch_run = runtree.arch_run(ctx, schedule.arch)  # reopened: it ends FINISHED, or with why
    t0 = time.monotonic()
    try:
        run_id, best = _tracked_fit(ctx, schedule, checkpoint, saved, arch_run)
        if best > _screen_best(ctx, schedule.arch):
            runtree.tag_best(ctx, schedule.arch, run_id, arch_run)
        runlog.finish(arch_run)
    except BaseException as exc:
        runs.terminate(arch_run, runs.status_for(exc))
        raise
    ctx.progress.trial_done(time.monotonic() - t0)
    checkpoint.clear()
    runtime.release_memory()
    return schedule.arch, _result(runlog.get(run_id), ctx.objective)


def _schedule(ctx: SweepContext) -> Schedule | None:
    """The long fit of the screen's winner that the time left holds (None: none does)."""
    top = choose.table(ctx.parent_run_id, (), ctx.objective, ctx.cfg.experiment).iloc[0]
    arch, values = top["arch"], dict(top["hyperparameters"])
    entry = models.get(arch)
    pretrained = bool(entry.pretrained and ctx.cfg.pretrained)
    if ctx.deadline is None:  # no budget: LONG_FACTOR screens long, at the largest size
        size = max(int(s) for s in ctx.plan.long_speeds[arch])
        epochs = LONG_FACTOR * ctx.cfg.epochs
        early = 0 if pretrained or size == ctx.cfg.image_size else round(epochs * SMALL_FRACTION)
        phases = phases_for(entry, values, ctx.cfg.image_size, size, epochs, early, pretrained)
        return Schedule(arch, values, top["run_id"], epochs, phases, None, None)
    measure_finish_sizes(ctx, arch, values, pretrained)
    seconds = ctx.deadline - time.monotonic() - reserve(ctx)
    small = ctx.plan.long_speeds[arch][str(ctx.cfg.image_size)]
    if seconds < small:
        log.info(
            "no long fit: the screen used the budget (%s left, and an epoch of %s takes "
            "about %s); its best trial is the sweep's model",
            format_seconds(max(seconds, 0)),
            arch,
            format_seconds(small),
        )
        return None
    size, epochs, early = long_schedule(ctx.plan, arch, ctx.cfg.image_size, seconds, pretrained)
    phases = phases_for(entry, values, ctx.cfg.image_size, size, epochs, early, pretrained)
    log.info(
        "long fit: %s (screen %s %.4f) for about %d epochs in %s: %s",
        arch,
        ctx.objective,
        top[ctx.objective],
        epochs,
        format_seconds(seconds),
        ", ".join(
            f"{p.epochs} at {p.size}px" + (f" {p.overrides}" if p.overrides else "") for p in phases
        ),
    )
    return Schedule(
        arch,
        values,
        top["run_id"],
        epochs,
        phases,
        seconds,
        phase_ends(ctx.plan.long_speeds[arch], phases, seconds),
    )


def _tracked_fit(
    ctx, schedule: Schedule, checkpoint: Checkpoint, saved: dict | None, arch_run: str
) -> tuple[str, float]:
    """The long fit in its own trial run under ARCH_RUN (reopened when resumed); its run id and
    its best score, which is its kept model's."""
    arch = schedule.arch
    where = {
        tags.SWEEP_KEY: ctx.key,
        tags.KIND: tags.KIND_TRIAL,
        tags.ARCH: arch,
        tags.TRIAL_ID: TRIAL_ID,
    }
    if saved is None:
        queries.retire(ctx.experiment_id, where)
    opened = (
        dict(run_id=schedule.run_id)
        if saved
        else dict(
            experiment=ctx.cfg.experiment,
            parent_run_id=arch_run,
            run_name=f"{arch}-long",
            tags={**where, **tags.environment_tags(), tags.SOURCE_RUN_ID: schedule.source},
        )
    )
    with runs.active_run(**opened) as run:
        schedule.run_id = run.info.run_id
        if saved is None:
            settings = trial_settings(ctx, arch, runtime.strategy(), schedule.epochs)
            settings.pop(keys.IMAGE_SIZE)  # the kept model's, logged once it is known
            runlog.log_params(
                {
                    **schedule.values,
                    **settings,
                    "phases": "; ".join(
                        f"{p.epochs}@{p.size}px x{p.lr_scale:g} {p.overrides or ''}"
                        for p in schedule.phases
                    ),
                }
            )
        else:
            log.info("[%s long] resuming at epoch %d from its checkpoint", arch, saved["epoch"] + 1)
        model, history, per_epoch, best = _fit(ctx, schedule, checkpoint, saved)
        splits = ctx.splits_at(best.size)
        runlog.log_params({keys.IMAGE_SIZE: best.size, keys.PARAM_COUNT: model.count_params()})
        record_fit(
            model,
            history,
            per_epoch,
            splits=splits,
            title=f"{arch} long fit",
            log_model=True,
            objective=ctx.objective,
        )
        tta = _decide_tta(model, splits)
    log.info(
        "long fit done: best %s %.4f at epoch %d (%d px, the model kept); flip TTA %s",
        ctx.objective,
        best.score,
        best.epoch + 1,
        best.size,
        "part of it" if tta else "not part of it",
    )
    return run.info.run_id, best.score


def reserve(ctx) -> float:
    """Seconds kept back from the long fit for evaluating and logging its model: a minute, or a
    tenth of a budget shorter than ten minutes (a tiny model logs in seconds; a fixed minute
    would leave a third of a short budget unused)."""
    return min(RESERVE_S, RESERVE_FRACTION * (ctx.cfg.budget_seconds or 0.0))


def _fit(ctx, schedule: Schedule, checkpoint: Checkpoint, saved: dict | None):
    """Train through the phases (each within its end time, when there is a budget), from the
    checkpoint's epoch when resumed; the model of the best validated epoch at its size, the
    whole history, the mean seconds per epoch, and the best epoch's record."""
    entry = models.get(schedule.arch)
    keras.utils.set_random_seed(ctx.cfg.seed + (saved["epoch"] if saved else 0))
    saved = saved or {
        "phase": 0,
        "epoch": 0,
        "phase_start": 0,
        "history": {},
        "seconds": [],
        "elapsed": 0.0,
        "best": None,
    }
    history, seconds = saved["history"], saved["seconds"]
    t0 = time.monotonic() - saved["elapsed"]  # the fit's own clock, across restarts
    best = BestWeights(checkpoint, saved["best"], ctx.objective)
    model, start = None, saved["epoch"]
    for i in range(saved["phase"], len(schedule.phases)):
        phase = schedule.phases[i]
        resumed = i == saved["phase"] and saved["epoch"] > 0
        phase_start = saved["phase_start"] if resumed else start
        planned = phase.epochs if schedule.ends is None else phase.epochs * OVERRUN
        if schedule.ends is not None and time.monotonic() > t0 + schedule.ends[-1] - 1:
            log.info("[%s long] no time left for phase %d", schedule.arch, i + 1)
            break
        if resumed and start >= phase_start + planned:  # killed after the phase's last epoch
            model = _loaded(checkpoint, start)
            continue
        model = _phase_model(ctx, entry, schedule, phase, model, checkpoint, start, resumed)
        logger = EpochLogger(
            runlog.active_id(),
            f"{schedule.arch} long",
            schedule.epochs,
            start,
            eta=_eta(schedule, t0),
            epochs_left=_epochs_left(schedule, t0, i),
        )
        best.phase_size = phase.size

        def state(
            epoch, i=i, phase_start=phase_start, logger=logger, before=history, spent=seconds
        ):
            return {
                "schedule": asdict(schedule),
                "phase": i,
                "epoch": epoch + 1,
                "phase_start": phase_start,
                "elapsed": time.monotonic() - t0,
                "history": _joined(before, logger.history),
                "seconds": spent + logger.seconds,
                "best": best.state(),
            }

        clock = Clock(
            float(schedule.values.get("lr", 1e-3)),
            phase.lr_scale,
            schedule.epochs,
            t0,
            schedule.seconds,
            t0 + schedule.ends[i] if schedule.ends else None,
        )
        splits = ctx.splits_at(phase.size)
        model.fit(
            splits.train,
            validation_data=splits.val,
            initial_epoch=start,
            epochs=max(phase_start + planned, start + 1),
            verbose=0,
            class_weight=ctx.class_weight,
            callbacks=[
                *models.adapt_callbacks(splits.train),
                *models.common.ema_callbacks(schedule.values),
                clock,
                logger,
                best,
                Saver(checkpoint, state, ctx.progress),
            ],
        )
        history = _joined(history, logger.history)
        seconds = seconds + logger.seconds
        start += len(logger.seconds)
        log.info(
            "[%s long] phase %d at %dpx: %d epochs (%d planned)",
            schedule.arch,
            i + 1,
            phase.size,
            start - phase_start,
            phase.epochs,
        )
    return (
        _kept(ctx, entry, schedule, model, best),
        history,
        float(np.mean(seconds)) if seconds else float("nan"),
        best,
    )


def _phase_model(ctx, entry, schedule, phase, previous, checkpoint, epoch, resumed):
    """The phase's model: the checkpoint's (optimizer included) when resumed mid-phase, else
    built at the phase's size carrying the previous phase's weights and optimizer state."""
    ctx.use_precision(entry.name)
    if resumed:
        return _loaded(checkpoint, epoch)
    if previous is None and epoch > 0:  # resumed at a phase's first epoch
        previous = _loaded(checkpoint, epoch)
    with runtime.strategy().scope():
        model = entry.build(
            models.fixed_hyperparameters({**schedule.values, **phase.overrides}),
            image_size=phase.size,
            pretrained=ctx.cfg.pretrained,
            num_classes=ctx.num_classes,
        )
    if previous is not None:
        kept = carry(previous, model, KEEP_OPTIMIZER)
        log.info(
            "[%s long] at %d px: weights carried%s",
            entry.name,
            phase.size,
            ", optimizer state too" if kept else "; a fresh optimizer",
        )
    return model


def _loaded(checkpoint: Checkpoint, epoch: int):
    """The checkpoint's model before EPOCH, with its optimizer's state."""
    with runtime.strategy().scope():
        return keras.models.load_model(checkpoint.model_path(epoch))


def _kept(ctx, entry, schedule, model, best: BestWeights):
    """The model that ships: the best epoch's weights, at the size they were validated at."""
    if best.weights is None:
        return model
    if model is None or best.size != model.input_shape[1]:
        ctx.use_precision(entry.name)
        with runtime.strategy().scope():
            model = entry.build(
                models.fixed_hyperparameters(schedule.values),
                image_size=best.size,
                pretrained=False,
                num_classes=ctx.num_classes,
            )
    model.set_weights(best.weights)
    return model


def _joined(history: dict, more: dict) -> dict:
    return {k: list(history.get(k, [])) + list(more.get(k, [])) for k in {*history, *more}}


def _eta(schedule: Schedule, t0: float):
    """Seconds left of the fit, for its progress line (None: count epochs instead)."""
    if schedule.ends is None:
        return None
    return lambda: max(t0 + schedule.ends[-1] - time.monotonic(), 0.0)


def _epochs_left(schedule: Schedule, t0: float, i: int):
    """Epochs still to come, given phase I's mean seconds per epoch, for the progress line: as
    many as the rest of phase I's time holds at that pace, then the later phases' planned epochs
    (at 96 px the fit's pace alone would promise half again the epochs a 128 px finish allows)."""
    if schedule.ends is None:
        return None
    later = sum(p.epochs for p in schedule.phases[i + 1 :])
    return lambda mean: int(max(t0 + schedule.ends[i] - time.monotonic(), 0.0) // mean) + later


def phase_ends(speeds: dict[str, float], phases: list[Phase], seconds: float) -> list[float]:
    """When each phase must end, in seconds from the fit's start: the fit's SECONDS shared out
    as the plan's speeds say the phases' epochs cost."""
    costs = [p.epochs * speeds[str(p.size)] for p in phases]
    ends, done = [], 0.0
    for cost in costs:
        done += cost
        ends.append(seconds * done / sum(costs))
    return ends


def _decide_tta(model, splits) -> bool:
    """Whether flip TTA is part of the model (`keep_tta`), with both validation figures logged."""
    labels, plain = splits.predict(model, "val")
    _, flipped = splits.predict(model, "val", tta=True)
    keep, why = keep_tta(labels, plain, flipped)
    runlog.log_metrics({keys.VAL_ACCURACY_PLAIN: why["plain"], keys.VAL_ACCURACY_TTA: why["tta"]})
    runlog.set_tag(runlog.active_id(), tags.TTA, tags.TRUE if keep else tags.FALSE)
    log.info(
        "flip TTA %s: val accuracy %.4f plain, %.4f with TTA (McNemar p = %.2f on %d photos "
        "where they differ)",
        "kept" if keep else "dropped: worse beyond chance",
        why["plain"],
        why["tta"],
        why["p_value"],
        why["disagreements"],
    )
    return keep


def _screen_best(ctx, arch: str) -> float:
    """ARCH's best screening score in this sweep."""
    trials = queries.search(
        ctx.experiment_id,
        {tags.SWEEP_KEY: ctx.key, tags.KIND: tags.KIND_TRIAL, tags.ARCH: arch},
        (runs.FINISHED,),
    )
    return max(
        (
            r.data.metrics.get(keys.best(ctx.objective), -1.0)
            for r in trials
            if r.data.tags.get(tags.TRIAL_ID) != TRIAL_ID
        ),
        default=-1.0,
    )


def _result(run, objective: str) -> dict:
    summary = runtree.summary(run)
    return {
        "run_id": run.info.run_id,
        "trial_id": TRIAL_ID,
        "hyperparameters": choose.parsed_hyperparameters(run.data.params),
        "score": summary.get(keys.best(objective)),
        **summary,
    }


def measure_finish_sizes(ctx: SweepContext, arch: str, values: dict, pretrained: bool) -> None:
    """The winner's real seconds per epoch at each larger size it may finish at, with its own
    hyperparameters, in place of the plan's estimates (only the winner is measured there). A
    size the time left could not finish at (`finish_epochs`), even by the estimate, is not
    measured, nor any size after one that holds only a short finish: measuring them would only
    spend the fit's time. A measured size corrects the larger sizes' estimates by its own
    reading's ratio to its estimate (pixel count undercounts a larger size's cost on a CPU: 128
    px read 1.13-1.21x its estimate and 160 px 1.35x in two sweeps, and measuring 160 px took
    40 s of fits that could not finish there)."""
    speeds = ctx.plan.long_speeds[arch]
    screen = ctx.cfg.image_size
    larger = sorted(int(s) for s in speeds if int(s) > screen)
    for size in larger:
        left = ctx.deadline - time.monotonic() - reserve(ctx)
        by_size = {int(s): v for s, v in speeds.items()}
        if finish_epochs(by_size, screen, size, left, pretrained, short=size == larger[0]):
            estimate = speeds[str(size)]
            speeds[str(size)], _, _ = measure(
                ctx.cfg, arch, ctx.splits_at(size), size, values, ctx.precision(arch)
            )
            for later in (s for s in larger if s > size):  # estimated alike: wrong alike
                speeds[str(later)] *= speeds[str(size)] / estimate
        by_size[size] = speeds[str(size)]
        if not finish_epochs(by_size, screen, size, left, pretrained):
            break
