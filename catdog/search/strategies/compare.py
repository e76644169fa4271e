"""The `compare` strategy: every architecture gets the same share of the budget.

One KerasTuner search per architecture, one after the other, each with the trials and epochs
its measured speed buys in its share (`catdog.plan.make_plan`): an equal-budget comparison,
which is what "which architecture is best here?" needs. It is also the strategy that runs
distributed: a chief serves each architecture's oracle in turn (on ORACLE_PORT + the
architecture's index) and owns the runs; workers run trials.
"""

from __future__ import annotations

import time

from catdog.log import format_seconds, get_logger
from catdog.plan import make_plan
from catdog.search.context import TimeLimitReached
from catdog.search.strategies import register
from catdog.search.strategies.base import Strategy, measure_all

log = get_logger(__name__)


@register
class Compare(Strategy):
    name = "compare"
    note = "every architecture had the same share of the budget: an equal-budget comparison"
    distributable = True

    def plan(self, cfg, splits_at, spaces: dict, spent: float):
        t0 = time.monotonic()
        speeds, precisions = measure_all(cfg, spaces, splits_at(cfg.image_size))
        plan = make_plan(
            speeds,
            trials=cfg.trials,
            epochs=cfg.epochs,
            budget=cfg.budget_seconds,
            repeats=cfg.repeats,
            final_fit=cfg.final_fit,
            measured_seconds=spent + time.monotonic() - t0,
        )
        plan.precisions = precisions
        return plan

    def explain(self, plan, cfg) -> None:
        short = [
            a.arch for a in plan.archs.values() if a.trials < cfg.trials or a.epochs < cfg.epochs
        ]
        if short:
            log.info(
                "the budget holds fewer trials or epochs than the sweep file asks for %s",
                ", ".join(short),
            )

    def before_trial(self, tuner) -> None:
        ctx = tuner.ctx
        if ctx.plan is None:
            return
        first = not any(t.status == "COMPLETED" for t in tuner.oracle.trials.values())
        if share_used(ctx, tuner.arch, first):
            raise TimeLimitReached(
                f"{tuner.arch}'s share of the "
                f"{format_seconds(ctx.cfg.budget_seconds)} budget "
                "is used up"
            )


def share_used(ctx, arch: str, first: bool) -> bool:
    """Architecture i may start a trial only if the plan expects it to end before (i+1)/n of
    the search budget has passed (its first trial only needs that point not to have passed
    yet): every one gets its share, time an earlier one did not use flows to the later ones,
    and a trial is not started that would eat the final fit's reserve. Time is the budget's
    clock, so a resumed search goes on from where it was."""
    budget = ctx.plan.search_budget if ctx.plan else None
    if budget is None:
        return False
    p = ctx.plan.archs[arch]
    expected = 0.0 if first else p.trial_overhead + p.epochs * p.seconds_per_epoch
    searched = ctx.progress.searched()
    return searched + expected > budget * (ctx.progress.arch_index + 1) / len(ctx.cfg.archs)
