"""The `focus` strategy's long fit: the screen's winner trained for the time left, in phases.

A phase is (image size, epochs, hyperparameter overrides, learning-rate scale). From scratch:
the screen's size, then the finish size, the weights carried over (global-pooling heads do not
depend on the input size). A pretrained backbone: frozen, then its top layers fine-tuned at a
tenth of the rate. One cosine schedule runs over all phases; every epoch is validated and logged
to one trial run (trial id `long`) under the architecture's run, and the best epoch's weights
are the model that is kept. Flip TTA is kept only if it beats the plain model on validation.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import keras
import numpy as np

from catdog import choose, keys, metrics, models, runtime
from catdog.log import format_seconds, get_logger
from catdog.search import records
from catdog.search.context import SweepContext
from catdog.search.strategies.base import measure, trial_settings
from catdog.tracking import queries, runlog, runs, tags
from catdog.tracking.callbacks import EpochLogger
from catdog.tracking.record import record_fit

log = get_logger(__name__)

TRIAL_ID = "long"
RESERVE_S = 60.0  # kept back for evaluating and logging the long fit's model
MIN_LONG_EPOCHS = 30  # a long fit finishes at the largest size that holds this many epochs
SMALL_FRACTION = 0.5  # of a from-scratch long fit's epochs, at the screen's size
FROZEN_FRACTION = 0.25  # of a pretrained long fit's epochs, with the backbone frozen
LONG_FACTOR = 8  # without a budget, a long fit is this many screening trials long
OVERRUN = 4  # under a budget, a phase may train up to this many times its planned epochs
FINE_TUNE_LAYERS = 40  # of a pretrained backbone, unfrozen after its frozen phase
FINE_TUNE_SCALE = 0.1


@dataclass
class Phase:
    size: int
    epochs: int
    overrides: dict
    lr_scale: float = 1.0


def phases_for(entry, values: dict, screen: int, size: int, epochs: int,
               early: int) -> list[Phase]:
    if entry.pretrained:
        frozen = max(1, round(epochs * FROZEN_FRACTION))
        return [Phase(size, frozen, {"fine_tune": 0}),
                Phase(size, max(epochs - frozen, 1),
                      {"fine_tune": values.get("fine_tune") or FINE_TUNE_LAYERS},
                      FINE_TUNE_SCALE)]
    if early and size != screen:
        return [Phase(screen, early, {}), Phase(size, epochs - early, {})]
    return [Phase(size, epochs, {})]


def run(ctx: SweepContext) -> tuple[str, dict]:
    """Train the screen's winner for the time left; (its arch, its result as `finish_arch`
    gives it), or a finished long fit's on resume."""
    top = choose.table(ctx.parent_run_id, (), keys.OBJECTIVE, ctx.cfg.experiment).iloc[0]
    arch, values = top["arch"], dict(top["hyperparameters"])
    where = {tags.SWEEP_KEY: ctx.key, tags.KIND: tags.KIND_TRIAL, tags.ARCH: arch,
             tags.TRIAL_ID: TRIAL_ID}
    done = queries.search(ctx.experiment_id, where, (runs.FINISHED,))
    if done:
        log.info("the long fit of %s is already done (run %s)", arch, done[-1].info.run_id)
        return arch, _result(done[-1], values)
    queries.retire(ctx.experiment_id, where)
    entry = models.get(arch)
    pretrained = bool(entry.pretrained and ctx.cfg.pretrained)
    measure_finish_sizes(ctx, arch, values)
    if ctx.deadline is not None:
        seconds = max(ctx.deadline - time.monotonic() - RESERVE_S, 0.0)
        size, epochs, early = long_schedule(ctx.plan, arch, ctx.cfg.image_size, seconds,
                                            pretrained)
    else:  # no budget: LONG_FACTOR screens long, at the largest size
        size = max(int(s) for s in ctx.plan.long_speeds[arch])
        epochs = LONG_FACTOR * ctx.cfg.epochs
        early = 0 if pretrained or size == ctx.cfg.image_size else round(epochs * SMALL_FRACTION)
        seconds = ctx.plan.final_seconds
    phases = phases_for(entry, values, ctx.cfg.image_size, size, epochs, early)
    log.info("long fit: %s (screen val_accuracy %.4f) for %d epochs in %s: %s", arch,
             top[keys.OBJECTIVE], epochs, format_seconds(seconds),
             ", ".join(f"{p.epochs} at {p.size}px"
                       + (f" {p.overrides}" if p.overrides else "") for p in phases))
    arch_run = records.arch_run(ctx, arch)  # reopened: it ends FINISHED, or with the error
    try:
        record, tta = _tracked_fit(ctx, entry, values, phases, epochs, size, seconds, where,
                                   arch_run, top["run_id"])
    except BaseException as exc:
        runs.terminate(arch_run, runs.status_for(exc))
        raise
    run = queries.search(ctx.experiment_id, where, (runs.FINISHED,))[-1]
    _mark_best(ctx, arch, run.info.run_id, arch_run)
    runlog.finish(arch_run)
    log.info("long fit done: best val_accuracy %.4f at epoch %d; flip TTA %s on validation",
             record.summary.get(keys.best(keys.OBJECTIVE), float("nan")),
             record.summary.get(keys.BEST_EPOCH, 0), "helps" if tta else "does not help")
    runtime.release_memory()
    return arch, _result(run, values)


def _tracked_fit(ctx, entry, values, phases, epochs, size, seconds, where, arch_run, source):
    """The long fit in its own trial run under ARCH_RUN; its record and whether TTA helps."""
    arch = entry.name
    with runs.active_run(experiment=ctx.cfg.experiment, parent_run_id=arch_run,
                         run_name=f"{arch}-long", tags={**where, **tags.environment_tags(),
                                                         tags.SOURCE_RUN_ID: source}):
        ends = _phase_ends(ctx.plan.long_speeds[arch], phases, seconds) \
            if ctx.deadline is not None else None
        model, history, per_epoch = _fit(ctx, entry, values, phases, epochs, ends)
        runlog.log_params({**values, **trial_settings(ctx, arch, runtime.strategy(), epochs,
                                                      size),
                           keys.PARAM_COUNT: model.count_params(),
                           "phases": "; ".join(f"{p.epochs}@{p.size}px x{p.lr_scale:g} "
                                               f"{p.overrides or ''}" for p in phases)})
        splits = ctx.splits_at(size)
        record = record_fit(model, history, per_epoch, splits=splits,
                            title=f"{arch} long fit", log_model=True)
        tta = _tta_helps(model, splits)
    return record, tta


def _phase_ends(speeds: dict[str, float], phases: list[Phase], seconds: float) -> list[float]:
    """When each phase must end (time.monotonic()): the long fit's SECONDS shared out as the
    plan's speeds say the phases' epochs cost."""
    costs = [p.epochs * speeds[str(p.size)] for p in phases]
    start, ends, done = time.monotonic(), [], 0.0
    for cost in costs:
        done += cost
        ends.append(start + seconds * done / sum(costs))
    return ends


class Clock(keras.callbacks.Callback):
    """Keeps a phase to its time. Under a budget the fit's length is time, not epochs: the rate
    follows one cosine over the fit's SECONDS, and the phase trains until its next epoch would
    end after END (however fast or slow the machine turns out to be next to the plan's
    measurement). Without a budget, the cosine runs over EPOCHS."""

    def __init__(self, schedule, scale: float, epochs: int, start: float, seconds: float | None,
                 end: float | None):
        super().__init__()
        self.schedule, self.scale, self.epochs = schedule, scale, epochs
        self.start, self.seconds, self.end = start, seconds, end
        self.durations: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._t = time.monotonic()
        progress = epoch
        if self.seconds:
            progress = (self._t - self.start) / self.seconds * self.epochs
        self.model.optimizer.learning_rate = self.schedule(progress) * self.scale

    def on_epoch_end(self, epoch, logs=None):
        self.durations.append(time.monotonic() - self._t)
        if self.end is not None and time.monotonic() + np.mean(self.durations[-3:]) > self.end:
            self.model.stop_training = True


def _fit(ctx, entry, values: dict, phases: list[Phase], epochs: int,
         ends: list[float] | None):
    """Train through the phases (each within its end time, when there is a budget); the model
    at its best validated epoch, the whole history, and the mean seconds per epoch."""
    keras.utils.set_random_seed(ctx.cfg.seed)
    run_id = runlog.active_id()
    schedule = cosine(float(values.get("lr", 1e-3)), epochs)
    t0 = time.monotonic()
    seconds_all = (ends[-1] - t0) if ends else None
    best = BestWeights()
    history: dict[str, list[float]] = {}
    seconds: list[float] = []
    model, start = None, 0
    for i, phase in enumerate(phases):
        previous = model
        hp = models.fixed_hyperparameters({**values, **phase.overrides})
        ctx.use_precision(entry.name)
        with runtime.strategy().scope():
            model = entry.build(hp, image_size=phase.size, pretrained=ctx.cfg.pretrained,
                                num_classes=ctx.num_classes)
        if previous is not None:
            model.set_weights(previous.get_weights())
            best.reset_at_new_size()
            del previous
        logger = EpochLogger(run_id, f"{entry.name} long", epochs, start)
        clock = Clock(schedule, phase.lr_scale, epochs, t0, seconds_all,
                      ends[i] if ends else None)
        splits = ctx.splits_at(phase.size)
        # Under a budget a phase may run past its planned epochs (the clock ends it).
        planned = phase.epochs if ends is None else phase.epochs * OVERRUN
        model.fit(splits.train, validation_data=splits.val, initial_epoch=start,
                  epochs=start + planned, verbose=0,
                  callbacks=[clock, logger] + ([best] if i == len(phases) - 1 else []))
        for k, v in logger.history.items():
            history.setdefault(k, []).extend(v)
        seconds.extend(logger.seconds)
        start += len(logger.seconds)
        if ends is not None:
            log.info("[%s long] phase %d at %dpx: %d epochs in its time (%d planned)",
                     entry.name, i + 1, phase.size, len(logger.seconds), phase.epochs)
    best.restore(model)
    return model, history, float(np.mean(seconds)) if seconds else float("nan")


class BestWeights(keras.callbacks.Callback):
    """Keeps the weights of the best validated epoch (in memory) and puts them back at the end;
    used in the last phase (the finish size)."""

    def __init__(self):
        super().__init__()
        self.score, self.weights = -np.inf, None

    def reset_at_new_size(self):
        self.score, self.weights = -np.inf, None

    def on_epoch_end(self, epoch, logs=None):
        score = (logs or {}).get(keys.OBJECTIVE)
        if score is not None and score > self.score:
            self.score, self.weights = score, self.model.get_weights()

    def restore(self, model):
        if self.weights is not None:
            model.set_weights(self.weights)


def _accuracy(labels: np.ndarray, probs: np.ndarray) -> float:
    return float(np.mean(metrics.predicted(probs) == np.asarray(labels)))


def _tta_helps(model, splits) -> bool:
    """Flip TTA is kept only where it beats the plain model on validation (both logged)."""
    labels, plain = splits.predict(model, "val")
    _, flipped = splits.predict(model, "val", tta=True)
    plain_acc, tta_acc = _accuracy(labels, plain), _accuracy(labels, flipped)
    runlog.log_metrics({"val_accuracy_plain": plain_acc, "val_accuracy_tta": tta_acc})
    helps = tta_acc > plain_acc
    runlog.set_tag(runlog.active_id(), tags.TTA, tags.TRUE if helps else tags.FALSE)
    return helps


def _mark_best(ctx, arch: str, run_id: str, arch_run: str) -> None:
    """The long fit is ARCH's best trial when it beats the screen's on validation."""
    mine = {tags.SWEEP_KEY: ctx.key, tags.KIND: tags.KIND_TRIAL, tags.ARCH: arch}
    trials = queries.search(ctx.experiment_id, mine, (runs.FINISHED,))
    score = lambda r: r.data.metrics.get(keys.best(keys.OBJECTIVE), -1.0)  # noqa: E731
    best = max(trials, key=score)
    for r in trials:
        runlog.set_tag(r.info.run_id, tags.BEST_TRIAL,
                       tags.TRUE if r.info.run_id == best.info.run_id else tags.FALSE)
    runlog.set_tag(arch_run, tags.BEST_RUN_ID, best.info.run_id)
    ctx.trials_done += 1


def _result(run, values: dict) -> dict:
    summary = {k: v for k, v in run.data.metrics.items()
               if k.startswith(("best_", "gap_", "epochs_run"))}
    return {"run_id": run.info.run_id, "trial_id": TRIAL_ID, "hyperparameters": values,
            "score": summary.get(keys.best(keys.OBJECTIVE)), **summary}


def measure_finish_sizes(ctx: SweepContext, arch: str, values: dict) -> None:
    """The winner's real seconds per epoch at each larger size it may finish at, with its own
    hyperparameters, in place of the plan's estimates (only the winner is measured there)."""
    speeds = ctx.plan.long_speeds[arch]
    for size in sorted(int(s) for s in speeds):
        if size != ctx.cfg.image_size:
            speeds[str(size)], _, _ = measure(ctx.cfg, arch, ctx.splits_at(size), size, values,
                                              ctx.precision(arch))


def long_schedule(plan, arch: str, screen_size: int, seconds: float,
                  pretrained: bool) -> tuple[int, int, int]:
    """(finish size, epochs, epochs at the screen's size) of ARCH's long fit in SECONDS: the
    largest size at which MIN_LONG_EPOCHS fit (else the screen's size), and as many epochs as
    the time holds, SMALL_FRACTION of them at the screen's size when it finishes larger."""
    speeds = {int(s): v for s, v in plan.long_speeds[arch].items()}
    small = speeds[screen_size]

    def epochs_at(size: int) -> tuple[int, int]:
        if size == screen_size or pretrained:
            return int(seconds // speeds[size]), 0
        per_epoch = SMALL_FRACTION * small + (1 - SMALL_FRACTION) * speeds[size]
        total = int(seconds // per_epoch)
        return total, round(total * SMALL_FRACTION)

    for size in sorted(speeds, reverse=True):
        total, early = epochs_at(size)
        if total >= MIN_LONG_EPOCHS or size == screen_size:
            return size, max(total, 1), early
    raise AssertionError("the screen's size is always among the speeds")


def cosine(base: float, epochs: int):
    """A cosine decay over EPOCHS (the whole fit, across its phases), to 1% of BASE."""
    from catdog.models.common import COSINE_FLOOR

    def rate(epoch: int, _lr: float = 0.0) -> float:
        fraction = min(epoch / max(epochs, 1), 1.0)
        return base * (COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 * (1 + math.cos(math.pi
                                                                                * fraction)))
    return rate
