"""The `best` strategy: race the architectures for the best model the budget can buy.

    strategy = "best"
    tuner = "hyperband"
    image_sizes = [64, 96, 128]

An equal-budget comparison gives every architecture the same time, which is what a fair
comparison needs and what it costs. A user who wants the best model in an hour does not need
that: most of the hour should go to the architectures that are winning. So the race is one
KerasTuner Hyperband search whose space is the architecture itself (a `Choice`), the image size
(within each family's range, see `Architecture.image_range`) and each family's own
hyperparameters under a `conditional_scope`: successive halving across architectures, done by
KerasTuner. Its first bracket screens many configurations for a few epochs; each round promotes
the best third to three times the epochs, continuing from the weights it stopped at, until the
survivors train for `max_epochs`, which the plan (`catdog.plan.make_race_plan`) sizes to the
budget.

Each trial is a run under its architecture's run, so `compare`, `report`, `register` and the
final fit read a race like any sweep. A configuration keeps its size across rounds, because
Hyperband carries weights from round to round and the Flatten heads of the notebook's models
tie their weights to the input size.
"""

from __future__ import annotations

import time
from pathlib import Path

from catdog.errors import CatdogError
from catdog.log import format_seconds, get_logger
from catdog.plan import RacePlan, make_race_plan
from catdog.search.strategies import register
from catdog.search.strategies.base import Strategy, defaults, folder, measure

log = get_logger(__name__)


@register
class Best(Strategy):
    name = "best"
    note = (
        "a race: Hyperband gave the architectures that led more trials and epochs, so this "
        "ranks configurations found, not architectures at equal cost"
    )
    searches_size = True
    plan_type = RacePlan

    def check(self, cfg, role: str) -> None:
        super().check(cfg, role)
        if cfg.tuner != "hyperband":
            raise CatdogError(
                f"the best strategy races architectures with Hyperband; set tuner "
                f'= "hyperband" (not {cfg.tuner!r}) or strategy = "compare"'
            )
        if cfg.repeats:
            raise CatdogError(
                "repeats measure an equal-budget comparison; a raced one gives "
                'the architectures unequal time, so use strategy = "compare" '
                "for repeats"
            )
        from catdog import models

        for arch in cfg.archs:
            if not models.get(arch).sizes_within(cfg.sizes):
                lo, hi = models.get(arch).image_range
                raise CatdogError(
                    f"none of the image sizes {list(cfg.sizes)} is within "
                    f"{arch}'s range {lo}-{hi} px"
                )

    def plan(self, cfg, splits_at, spaces: dict, spent: float):
        t0 = time.monotonic()
        speeds, precisions = measure_speeds(cfg, spaces, splits_at)
        plan = make_race_plan(
            speeds,
            max_epochs=cfg.epochs,
            factor=cfg.hyperband_factor,
            budget=cfg.budget_seconds,
            final_fit=cfg.final_fit,
            measured_seconds=spent + time.monotonic() - t0,
        )
        plan.precisions = precisions
        return plan

    def explain(self, plan, cfg) -> None:
        if plan.max_epochs < cfg.epochs:
            log.info(
                "the budget holds fits of %d epochs, not the sweep file's %d",
                plan.max_epochs,
                cfg.epochs,
            )

    def groups(self, cfg) -> list[tuple[str, ...]]:
        return [tuple(cfg.archs)]  # one search over every architecture at once

    def total_trials(self, ctx) -> int:
        return ctx.plan.planned_trials if ctx.plan else 0

    def epochs_for(self, ctx, arch: str | None) -> int:
        return ctx.plan.max_epochs if ctx.plan else ctx.cfg.epochs  # every trial's horizon

    def eta(self, ctx, remaining: int) -> float:
        if ctx.plan is None:
            return ctx.mean_eta(remaining)
        # A race's trials grow round by round (1 epoch, then 3, 9, 27): their mean so far says
        # little about the rest, the plan does.
        return max(ctx.plan.search_seconds - ctx.progress.searched(), 0.0) + ctx.plan.final_seconds

    def check_trial(self, ctx, arch: str, size: int, epochs: int, past: str | None) -> None:
        """A trial starts only if it is expected to end within the search budget (its cost is
        known only once the oracle has chosen it): at the speed its previous round trained
        (PAST, a trial id), else the plan's, measured at the defaults."""
        from catdog.search.tuner import TrialTimeLimit

        if ctx.plan is None or ctx.plan.search_budget is None:
            return
        expected = ctx.plan.trial_seconds(arch, size, epochs)
        if (speed := ctx.progress.speed_of(past)) is not None:
            expected += epochs * (speed - ctx.plan.seconds_per_epoch(arch, size))
        if ctx.progress.searched() + expected > ctx.plan.search_budget:
            raise TrialTimeLimit(
                f"the race's share of the {format_seconds(ctx.cfg.budget_seconds)} budget is "
                f"used up (the next trial, {arch} at {size}px for {epochs} epochs, would take "
                f"about {format_seconds(expected)})"
            )

    def report_trial(self, ctx, arch, trial, hp, shown, score, best, seconds) -> None:
        # Trials come as the budget allows: the plan's count is a guess.
        log.info(
            "[%s] race trial %d (round %d, %d epochs) %s  %s %.4f  best %s %.4f  "
            "(%s; about %d planned, ETA %s)",
            arch,
            int(trial.trial_id) + 1,
            hp.values.get("tuner/round", 0),
            hp.values.get("tuner/epochs", 0),
            shown,
            ctx.objective,
            score,
            arch,
            best,
            format_seconds(seconds),
            ctx.total_trials,
            format_seconds(ctx.eta(0)),
        )

    def tuner(self, ctx, group: tuple[str, ...], spaces: dict, directory: Path):
        """One tracked Hyperband over the joint space of every architecture and size."""
        from catdog.search import tuner as tuning

        epochs = ctx.epochs_for(None)
        return tuning.TrackedHyperband(
            hypermodel=tuning.JointHyperModel(ctx, epochs),
            objective=tuning.objective(ctx.objective),
            max_epochs=epochs,
            factor=ctx.cfg.hyperband_factor,
            seed=ctx.cfg.seed,
            hyperparameters=joint_space(ctx.cfg, spaces),
            tune_new_entries=False,
            directory=str(directory),
            project_name=folder(group),
            overwrite=False,
            distribution_strategy=tuning.distribution(),
        )


def joint_space(cfg, spaces: dict):
    """One search space for the race: `arch`, then per architecture (active only when drawn)
    its `image_size` and its builder's hyperparameters, with the sweep file's fixed and narrowed
    values from SPACES ({arch: HyperParameters}, see `sweepfile.search_spaces`).

    Each architecture's names are scoped (`resnet/lr`): KerasTuner keeps one value per name,
    and drops it when any hyperparameter of that name is inactive, so `lr` shared by every
    family under different conditions would be lost. Trials log the plain names."""
    import keras_tuner as kt

    from catdog import models

    joint = kt.HyperParameters()
    joint.Choice("arch", list(cfg.archs))
    for arch in cfg.archs:
        entry = models.get(arch)
        own = kt.HyperParameters()
        own.merge(spaces[arch])
        entry.search_space(min(entry.sizes_within(cfg.sizes)), hp=own)  # + the builder's own
        with joint.conditional_scope("arch", [arch]), joint.name_scope(arch):
            joint.Choice("image_size", entry.sizes_within(cfg.sizes), ordered=True)
            for h in own.space:
                config = h.get_config()
                config.pop("conditions", None)
                getattr(joint, type(h).__name__)(**config)  # Choice, Int, Float, Boolean, Fixed
    return joint


def measure_speeds(cfg, spaces: dict, splits_at) -> tuple[dict, dict[str, str]]:
    """Seconds per epoch and per-trial set-up of every (architecture, size) the race may draw,
    and each architecture's precision (chosen at its smallest size)."""
    from catdog import models

    speeds: dict[str, dict[int, tuple[float, float]]] = {}
    precisions: dict[str, str] = {}
    for arch in cfg.archs:
        for size in models.get(arch).sizes_within(cfg.sizes):
            per_epoch, overhead, precisions[arch] = measure(
                cfg, arch, splits_at(size), size, defaults(spaces[arch]), precisions.get(arch)
            )
            speeds.setdefault(arch, {})[size] = (per_epoch, overhead)
    return speeds, precisions
