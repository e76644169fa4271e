"""The base of every strategy: it does the wiring, so a plug-in says only what is its own.

A strategy (a KerasTuner Oracle's counterpart: what to try, not how a trial runs) writes
- `plan(cfg, splits_at, spaces, spent)`: measure this machine and fit its search to the budget;
- `tuner(ctx, group, spaces, directory)`: the tracked KerasTuner tuner that searches GROUP (one
  architecture, or several at once), if the default (the sweep file's tuner over one
  architecture) is not what it trains;
and may write `groups` (which architectures each tuner searches), `after_search` (what it trains
once the search is done: focus's long fit), and the budget checks `before_trial` and
`check_trial`. The base opens and finishes each architecture's run, links the tuner to the
sweep, retires orphans, runs the search, tags the best trials and ends every run FINISHED,
FAILED or KILLED.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from catdog.errors import CatdogError
from catdog.log import format_seconds, get_logger
from catdog.plan import Plan
from catdog.search import runtree
from catdog.search.context import TimeLimitReached
from catdog.tracking import runlog, runs, tags

log = get_logger(__name__)

# How often KerasTuner's distributed chief checks that the trials it handed out have ended, once
# its oracle has stopped handing out more (keras_tuner/src/distribute/oracle_chief.py).
CHIEF_WAIT_S = 20
JOINT_FOLDER = "race"  # the tuner-state folder of a search over several architectures at once


class Strategy:
    """How a sweep spends its budget. Subclass, set `name` and `note`, write `plan` (and
    `tuner`, `after_search` where the defaults are not it); register with
    `@strategies.register`."""

    name: str = ""
    note: str = ""  # how to read the ranking it produces, for `compare` and the report
    searches_size = False  # whether it trains at several image sizes (`image_sizes`)
    distributable = False  # whether `catdog distributed` can run it (KerasTuner workers)
    plan_type = Plan  # the class of its plan, saved as plan.json beside the tuner state
    final_fit = True  # whether the sweep's final fit on train+val may follow its search

    # -- before any data is read
    def check(self, cfg, role: str) -> None:
        """Refuse settings this strategy cannot run, with one sentence (a CatdogError)."""
        if role != "local" and not self.distributable:
            raise CatdogError(
                f"the {self.name} strategy runs on one machine (its plan and time "
                "checks are this machine's); a distributed sweep uses strategy = "
                '"compare"'
            )
        if cfg.image_sizes and not self.searches_size:
            raise CatdogError(
                f"image_sizes is used by the {sizing()} strategies only; the "
                f"{self.name} strategy trains every architecture at image_size"
            )

    # -- the plan
    def plan(self, cfg, splits_at, spaces: dict, spent: float):
        """Measure this machine and fit trials and epochs to cfg's budget (`catdog.plan`)."""
        raise NotImplementedError

    def explain(self, plan, cfg) -> None:
        """Log what the budget could not hold of what the sweep file asks for."""

    def groups(self, cfg) -> list[tuple[str, ...]]:
        """The architectures each tuner searches, in order: one tuner per architecture."""
        return [(arch,) for arch in cfg.archs]

    def state_folders(self, cfg) -> dict[str, str | None]:
        """The tuner-state folders under the sweep's state directory, each with the
        architecture whose trials it holds (None: several architectures')."""
        return {folder(g): (g[0] if len(g) == 1 else None) for g in self.groups(cfg)}

    def total_trials(self, ctx) -> int:
        return sum(ctx.trials_for(a) + ctx.cfg.repeats for a in ctx.cfg.archs)

    # -- the search
    def tuner(self, ctx, group: tuple[str, ...], spaces: dict, directory: Path):
        """The tracked tuner that searches GROUP: by default the sweep file's tuner over its one
        architecture, with the epochs the plan gives it."""
        from catdog import models
        from catdog.search import tuner as tuning

        (arch,) = group
        epochs = ctx.epochs_for(arch)
        cls = tuning.TUNERS[ctx.cfg.tuner]
        common = dict(
            hypermodel=tuning.ArchHyperModel(
                models.get(arch),
                ctx.cfg.image_size,
                ctx.cfg.pretrained,
                epochs,
                ctx.num_classes,
                ctx.precision(arch),
            ),
            objective=tuning.objective(ctx.objective),
            seed=ctx.cfg.seed,
            hyperparameters=spaces[arch],
            tune_new_entries=True,
            directory=str(directory),
            project_name=folder(group),
            overwrite=False,
            distribution_strategy=tuning.distribution(),
        )
        if ctx.cfg.tuner == "hyperband":
            return cls(max_epochs=epochs, factor=ctx.cfg.hyperband_factor, **common)
        tuner = cls(max_trials=ctx.cfg.trials, **common)
        # The sweep file's cap: under a budget, the time left decides how many of them run (the
        # plan's count is what it expects), so time early stopping saves buys more trials.
        tuner.oracle.max_trials = ctx.cfg.trials
        return tuner

    def after_search(self, ctx, results: dict[str, dict]) -> dict[str, dict]:
        """What the strategy trains once its search is done (on one machine), as
        `runtree.finish_arch` gives results; by default nothing."""
        return results

    def search(self, ctx, spaces: dict, state_dir: Path) -> tuple[dict[str, dict], str | None]:
        """Run (or resume) the search: each architecture's best trial ({} if none finished),
        and why the search stopped early (None: it ran out of trials)."""
        results: dict[str, dict] = {}
        stopped = None
        for index, group in enumerate(self.groups(ctx.cfg)):
            found, why = self._search_group(ctx, index, group, spaces, state_dir)
            results.update(found)
            stopped = why or stopped
        if ctx.role == "local" and any(results.values()):
            results = self.after_search(ctx, results)
        return results, stopped

    def _search_group(
        self, ctx, index: int, group: tuple[str, ...], spaces: dict, state_dir: Path
    ) -> tuple[dict[str, dict], str | None]:
        arch_runs = {a: runtree.arch_run(ctx, a) for a in group}
        if ctx.role == "worker" and all(
            runlog.status(r) == runs.FINISHED for r in arch_runs.values()
        ):
            # The chief is past it (this worker was restarted, or joined late): its oracle is
            # closed, and waiting on it would hang.
            log.info("[%s] finished by the chief; going on", ", ".join(group))
            return {}, None
        try:
            found, stopped = self._run_tuner(ctx, index, group, spaces, state_dir, arch_runs)
            for run_id in arch_runs.values() if ctx.owner else ():
                runlog.finish(run_id)
        except BaseException as exc:
            if ctx.owner:
                for run_id in arch_runs.values():
                    runs.terminate(run_id, runs.status_for(exc))
            raise
        return found, stopped

    def _run_tuner(self, ctx, index, group, spaces, state_dir, arch_runs):
        import keras

        from catdog.search import tuner as tuning

        if ctx.role == "local":  # alone on this sweep: any RUNNING trial or repeat is an orphan
            n = runtree.retire_orphans(ctx, group)
            if n:
                log.info("marked %d interrupted run(s) of %s as KILLED", n, ", ".join(group))
        if ctx.role != "local":  # one oracle port per group: the last may be draining
            os.environ["KERASTUNER_ORACLE_PORT"] = str(ctx.oracle_port + index)
        keras.utils.set_random_seed(ctx.cfg.seed)
        tuner = self.tuner(ctx, group, spaces, state_dir)
        tuning.link(tuner, ctx, group, arch_runs)
        if ctx.owner:
            done = sum(1 for t in tuner.oracle.trials.values() if t.status == "COMPLETED")
            if done:
                log.info("[%s] resuming: %d trial(s) already done", ", ".join(group), done)
        ctx.progress.at_arch(index)
        ctx.progress.begin_search()
        if ctx.role == "chief":
            self._publish_deadline(ctx)
            tuning.hand_out_within_budget(tuner)
        fit = ((ctx.splits.train,), {"validation_data": ctx.splits.val}) if ctx.splits else ((), {})
        stopped = None
        try:
            tuner.search(*fit[0], **fit[1], epochs=ctx.epochs_for(tuning.single(group)), verbose=0)
        except TimeLimitReached as exc:
            stopped = str(exc)
            log.info("%s: no more trials for %s", exc, ", ".join(group))
        stopped = stopped or getattr(tuner, "time_limited", None)  # a chief's oracle stopped
        for run_id in arch_runs.values() if ctx.owner and stopped else ():
            runlog.set_tag(run_id, tags.TIME_LIMITED, tags.TRUE)
        if not ctx.owner:
            return {}, stopped
        space = json.dumps(tuner.oracle.hyperparameters.get_config(), indent=2, default=str)
        found = {
            a: runtree.finish_arch(ctx, tuning.best_of(tuner, a), space, arch_runs[a], a)
            for a in group
        }
        return found, stopped

    @staticmethod
    def _publish_deadline(ctx) -> None:
        """A distributed chief tells its workers when the search ends (a Unix time on the
        parent run), so a trial running then stops after its epoch: the oracle stops handing
        out trials before that (`tuner.hand_out_within_budget`), this bounds the last ones."""
        budget = ctx.plan.search_budget if ctx.plan else None
        if budget is not None:
            # Early enough for a trial stopped then to be logged, and for KerasTuner's chief,
            # which looks every CHIEF_WAIT_S for its last trials to end, to see it: the search's
            # time is then over when the chief moves on, and the final fit keeps its reserve.
            closing = max(a.trial_overhead for a in ctx.plan.archs.values()) + CHIEF_WAIT_S
            ends = time.time() + budget - ctx.progress.searched() - closing
            runlog.set_tag(ctx.parent_run_id, tags.SEARCH_DEADLINE, f"{ends:.1f}")

    # -- the budget's checks and the progress lines
    def epochs_for(self, ctx, arch: str | None) -> int:
        return ctx.plan.archs[arch].epochs if ctx.plan else ctx.cfg.epochs

    def eta(self, ctx, remaining: int) -> float:
        return ctx.mean_eta(remaining)

    def before_trial(self, tuner) -> None:
        """Called before the oracle creates a trial (KerasTuner's `pre_create_trial`); raise
        `TimeLimitReached` to end the search."""

    def check_trial(self, ctx, arch: str, size: int, epochs: int, past: str | None) -> None:
        """Called once a trial's configuration is known, before it trains; raise
        `tuner.TrialTimeLimit` to end the search."""

    def report_trial(
        self, ctx, arch, trial, hp, shown: dict, score: float, best: float, seconds: float
    ) -> None:
        log.info(
            "[%s] trial %d/%d %s  %s %.4f  best %.4f  (%s; %s)",
            arch,
            int(trial.trial_id) + 1,
            ctx.cfg.trials,
            shown,
            ctx.objective,
            score,
            best,
            format_seconds(seconds),
            ctx.progress_line(),
        )


def folder(group: tuple[str, ...]) -> str:
    """The tuner-state folder (KerasTuner's project name) of a search over GROUP."""
    return group[0] if len(group) == 1 else JOINT_FOLDER


def defaults(space) -> dict:
    """A search space's values without KerasTuner's bookkeeping (`tuner/...`)."""
    return {k: v for k, v in space.values.items() if not k.startswith("tuner/")}


def measure(
    cfg, arch: str, splits, size: int, values: dict, precision: str | None = None
) -> tuple[float, float, str]:
    """(seconds per epoch, set-up per trial, precision) of ARCH at SIZE here, in PRECISION, or
    in the fastest that the sweep's precision allows (`speed.measure_fastest`)."""
    from catdog import runtime, speed

    candidates = (precision,) if precision else runtime.precision_candidates(cfg.precision)
    per_epoch, overhead, chosen = speed.measure_fastest(
        arch, splits, size, values, cfg.pretrained, cfg.batch_size, candidates
    )
    log.info(
        "[%s] measured: %.1f s per epoch of %d images at %dpx in %s",
        arch,
        per_epoch,
        splits.sizes["train"],
        size,
        chosen,
    )
    return per_epoch, overhead, chosen


def measure_all(cfg, spaces: dict, splits) -> tuple[dict, dict[str, str]]:
    """({arch: (seconds per epoch, set-up per trial)}, {arch: precision}) at the sweep's size,
    each architecture at its search space's defaults."""
    speeds, precisions = {}, {}
    for arch in cfg.archs:
        per_epoch, overhead, precisions[arch] = measure(
            cfg, arch, splits, cfg.image_size, defaults(spaces[arch])
        )
        speeds[arch] = (per_epoch, overhead)
    return speeds, precisions


def sizing() -> str:
    """The names of the strategies that train at several image sizes, for a sentence."""
    from catdog.search import strategies

    return " and ".join(n for n in strategies.names() if strategies.get(n).searches_size)
