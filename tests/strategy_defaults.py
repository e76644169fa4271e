"""A strategy written as a user would write one: its plan and what it trains, nothing else.
One trial per architecture at its builder's defaults, the cheapest honest baseline; the base
(`catdog.search.strategies.base.Strategy`) opens and finishes the runs, links the tuner to the
sweep and tags the best trials. `tests/test_strategies.py` registers it and runs it end to end."""

from __future__ import annotations

import keras_tuner as kt

from catdog import models
from catdog.plan import make_plan
from catdog.search import tuner as tuning
from catdog.search.strategies.base import Strategy, measure_all


class Defaults(Strategy):
    name = "defaults"
    note = "one trial per architecture at its defaults: a baseline, not a search"

    def plan(self, cfg, splits_at, spaces, spent):
        speeds, precisions = measure_all(cfg, spaces, splits_at(cfg.image_size))
        plan = make_plan(
            speeds,
            trials=1,
            epochs=cfg.epochs,
            budget=cfg.budget_seconds,
            repeats=0,
            final_fit=cfg.final_fit,
            measured_seconds=spent,
        )
        plan.precisions = precisions
        return plan

    def tuner(self, ctx, group, spaces, directory):
        (arch,) = group
        entry = models.get(arch)
        fixed = kt.HyperParameters()
        for name, value in entry.search_space(ctx.cfg.image_size).values.items():
            fixed.Fixed(name, value)
        hypermodel = tuning.ArchHyperModel(
            entry, ctx.cfg.image_size, False, ctx.epochs_for(arch), ctx.num_classes
        )
        return tuning.TrackedRandomSearch(
            hypermodel=hypermodel,
            objective=tuning.objective(),
            max_trials=1,
            hyperparameters=fixed,
            tune_new_entries=False,
            directory=str(directory),
            project_name=arch,
            seed=ctx.cfg.seed,
        )
