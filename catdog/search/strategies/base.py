"""What every strategy has, and the defaults a strategy may keep: the interface of the
strategy registry (`catdog.search.strategies`)."""

from __future__ import annotations

from pathlib import Path

from catdog.log import get_logger
from catdog import keys
from catdog.plan import Plan

log = get_logger(__name__)


class Strategy:
    """How a sweep spends its budget. Subclass, set `name` and `note`, and write `plan` and
    `search`; register the class with `@strategies.register`."""

    name: str = ""
    note: str = ""  # how to read the ranking it produces, for `compare` and the report
    searches_size = False  # whether image size is searched (the parent logs `image_sizes`)
    distributable = False  # whether `catdog distributed` can run it (KerasTuner workers)
    verb = "runs"  # what it does, in its sentences: "the best strategy races ..."
    plan_type = Plan  # the class of its plan, saved as plan.json beside the tuner state
    final_fit = True  # whether the sweep's final fit on train+val may follow its search

    # -- before any data is read
    def check(self, cfg, role: str) -> None:
        """Refuse settings this strategy cannot run, with one sentence (a CatdogError)."""
        from catdog.errors import CatdogError

        if role != "local" and not self.distributable:
            raise CatdogError(f"the {self.name} strategy {self.verb} on one machine (its plan "
                              "and time checks are this machine's); a distributed sweep uses "
                              "strategy = \"compare\"")
        if cfg.image_sizes and not self.searches_size:
            raise CatdogError(f"image_sizes is searched by the {searching()} strategy only; the "
                              f"{self.name} strategy trains every architecture at image_size")

    # -- the plan
    def plan(self, cfg, splits_at, spaces: dict, spent: float):
        """Measure this machine and fit trials and epochs to cfg's budget (`catdog.plan`)."""
        raise NotImplementedError

    def explain(self, plan, cfg) -> None:
        """Log what the budget could not hold of what the sweep file asks for."""

    def state_folders(self, cfg) -> dict[str, str | None]:
        """The tuner-state folders under the sweep's state directory, each with the
        architecture whose trials it holds (None: every architecture's)."""
        return {arch: arch for arch in cfg.archs}

    def total_trials(self, ctx) -> int:
        return sum(ctx.trials_for(a) + ctx.cfg.repeats for a in ctx.cfg.archs)

    # -- the search
    def search(self, ctx, spaces: dict, state_dir: Path) -> tuple[dict[str, dict], str | None]:
        """Run (or resume) the search: each architecture's best trial ({} if none finished),
        and why the search stopped early (None: it ran out of trials)."""
        raise NotImplementedError

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

    def report_trial(self, ctx, arch, trial, hp, shown: dict, score: float, best: float,
                     seconds: float) -> None:
        from catdog.search.tuner import report_line

        log.info("%s", report_line(ctx, arch, trial, shown, score, best, seconds))

    def run_params(self, ctx, arch: str, size: int, distribution) -> dict:
        """How a trial of ARCH ran, logged beside its hyperparameters."""
        return trial_settings(ctx, arch, distribution, self.epochs_for(ctx, arch), size)


def measure(cfg, arch: str, splits, size: int, values: dict,
            precision: str | None = None) -> tuple[float, float, str]:
    """(seconds per epoch, set-up per trial, precision) of ARCH at SIZE here, in PRECISION, or
    in the fastest that the sweep's precision allows (`speed.measure_fastest`)."""
    from catdog import runtime, speed

    candidates = (precision,) if precision else runtime.precision_candidates(cfg.precision)
    per_epoch, overhead, chosen = speed.measure_fastest(arch, splits, size, values,
                                                        cfg.pretrained, cfg.batch_size,
                                                        candidates)
    log.info("[%s] measured: %.1f s per epoch of %d images at %dpx in %s", arch, per_epoch,
             splits.sizes["train"], size, chosen)
    return per_epoch, overhead, chosen


def searching() -> str:
    """The names of the strategies that search the image size, for a sentence."""
    from catdog.search import strategies

    return " or ".join(n for n in strategies.names() if strategies.get(n).searches_size)


def trial_settings(ctx, arch: str, distribution, epochs: int,
                   image_size: int | None = None) -> dict:
    """How a trial, repeat or final fit of ARCH ran, as params (`keys.RUN_PARAMS`): its
    precision is the one the plan chose for ARCH."""
    from catdog import models, runtime

    cfg = ctx.cfg
    return keys.run_settings(
        arch=arch, tuner=cfg.tuner, image_size=image_size or cfg.image_size,
        batch_size=cfg.batch_size, epochs=epochs, seed=cfg.seed, precision=ctx.precision(arch),
        strategy=runtime.strategy_name(distribution),
        pretrained=cfg.pretrained if models.get(arch).pretrained else None)
