"""The `focus` strategy: a short screen, then most of the budget on one long fit of the winner.

    strategy = "focus"
    archs = ["resnet", "xception", "transfer"]
    image_size = 96                # the screen's size, and where a long fit starts
    image_sizes = [96, 128, 160]   # the sizes a long fit may finish at
    epochs = 6                     # each screening trial's epochs

A 42-minute CPU budget holds a few dozen short trials, and wide, short searches pay off only
with hundreds. One long, well-scheduled fit of one good configuration did better than the whole
race (0.876 val accuracy for a ResNet at 128 px and 60 cosine epochs, against 0.80 for the race).
So this strategy spends about a quarter of the budget screening each architecture's learning
rate and knobs at a small size (an equal-budget KerasTuner search per architecture, as
`compare`), and the rest on one fit of the configuration that won on validation:

- **as long as the budget allows**, with a cosine schedule over its whole length, so the fit's
  length comes from the time left, not from a short trial's early stopping;
- **progressively resized** (fast.ai): the first half at the screen's size, the rest at the
  largest size the time left holds `longfit.MIN_LONG_EPOCHS` at; the residual and separable models end
  in global pooling, so their weights carry over to the larger input;
- for a pretrained backbone, **a frozen phase, then fine-tuning** of its top layers at a tenth
  of the rate;
- validated every epoch on the validation split, so its best epoch and whether flip TTA helps
  are decided there. It is a trial like the screen's (trial id `long`), and `catdog.choose`
  ranks it with them. No final fit on train+val follows: it could not be validated.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from catdog.log import format_seconds, get_logger
from catdog.plan import ArchPlan, Plan
from catdog.search.strategies import register
from catdog.search.strategies.base import measure
from catdog.search.strategies.equal_budget import EqualBudget

log = get_logger(__name__)

SCREEN_SHARE = 0.25  # of the budget left after measuring
LONG_FACTOR = 8  # without a budget, the long fit is this many screening trials long


@dataclass
class FocusPlan(Plan):
    """The screen as an equal-budget plan at the screen's size, and the long fit's share
    (its `final_seconds`) with every architecture's speed at each size it may finish at: measured
    at the screen's size, estimated by pixel count above it until the winner is measured there."""

    long_speeds: dict[str, dict[str, float]] = field(default_factory=dict)  # s/epoch by size
    screen_size: int = 0

    def describe(self, now: datetime | None = None) -> str:
        sizes = "; ".join(f"{a} " + ", ".join(f"{s} px {v:.0f} s" for s, v in by.items())
                          for a, by in self.long_speeds.items())
        long = (f"{'long fit':<12} {'':>8} {'':>6} {'':>6} {format_seconds(self.final_seconds):>9}"
                f"  (the screen's winner; s/epoch by size, the larger ones estimated until the "
                f"winner is measured there: {sizes})")
        return "\n".join(long if line.startswith("final fit") else line
                         for line in super().describe(now).splitlines())

    def to_json(self) -> str:
        import json

        return json.dumps({**asdict(self), "strategy": "focus"}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> FocusPlan:
        import json

        raw = json.loads(text)
        raw.pop("strategy", None)
        raw["archs"] = {k: ArchPlan(**v) for k, v in raw["archs"].items()}
        return cls(**raw)


@register
class Focus(EqualBudget):
    name = "focus"
    note = ("a short equal-budget screen, then one long fit of the winner: the ranking's top "
            "row had far more training than the others, so it names the model to ship, not the "
            "best architecture at equal cost")
    verb = "focuses"
    searches_size = True
    distributable = False
    final_fit = False
    plan_type = FocusPlan

    def check(self, cfg, role: str) -> None:
        super().check(cfg, role)
        if cfg.repeats:
            from catdog.errors import CatdogError

            raise CatdogError("repeats measure an equal-budget comparison, and the focus "
                              "strategy spends its budget on one long fit; use strategy = "
                              "\"compare\" for repeats")

    def plan(self, cfg, splits_at, spaces: dict, spent: float) -> FocusPlan:
        from catdog import plan as planning

        t0 = time.monotonic()
        speeds, long_speeds, precisions = {}, {}, {}
        splits = splits_at(cfg.image_size)
        for arch in cfg.archs:
            values = {k: v for k, v in spaces[arch].values.items() if not k.startswith("tuner/")}
            per_epoch, overhead, precisions[arch] = measure(cfg, arch, splits, cfg.image_size,
                                                            values)
            speeds[arch] = (per_epoch, overhead)
            # The finish sizes are estimated by pixel count here and measured for the winner
            # alone when its long fit starts (`longfit.measure_finish_sizes`).
            long_speeds[arch] = {str(size): per_epoch * (size / cfg.image_size) ** 2
                                 for size in [cfg.image_size] + _finish_sizes(cfg, arch)}
        plan = make_plan(cfg, speeds, long_speeds, spent + time.monotonic() - t0)
        plan.precisions = precisions
        return plan

    def search(self, ctx, spaces: dict, state_dir: Path):
        results, stopped = super().search(ctx, spaces, state_dir)  # the screen
        if ctx.role == "local" and any(results.values()):
            from catdog.search import longfit

            arch, found = longfit.run(ctx)
            if found:
                results[arch] = found
        return results, stopped


def _finish_sizes(cfg, arch: str) -> list[int]:
    from catdog import models

    return [s for s in models.get(arch).sizes_within(cfg.sizes) if s > cfg.image_size]


def make_plan(cfg, speeds: dict[str, tuple[float, float]],
              long_speeds: dict[str, dict[str, float]], measured: float) -> FocusPlan:
    """The screen's trials and epochs per architecture within its share; the rest is the long
    fit's. Without a budget, the sweep file's trials and a fit LONG_FACTOR screens long."""
    n = len(speeds)
    plans = {a: ArchPlan(a, per_epoch, overhead, cfg.trials, cfg.epochs)
             for a, (per_epoch, overhead) in speeds.items()}
    if cfg.budget_seconds is None:
        long_seconds = max(LONG_FACTOR * cfg.epochs * max(by.values())
                           for by in long_speeds.values())
        return FocusPlan(plans, None, 0.0, long_seconds, measured, long_speeds=long_speeds,
                         screen_size=cfg.image_size)
    available = max(cfg.budget_seconds - measured, 0.0)
    share = available * SCREEN_SHARE / n
    for a in plans.values():
        if share < a.trial_overhead + a.epochs * a.seconds_per_epoch:
            a.epochs = max(1, min(a.epochs, int((share - a.trial_overhead)
                                                // a.seconds_per_epoch)))
        a.trials = max(1, min(cfg.trials, int(share // (a.trial_overhead
                                                          + a.epochs * a.seconds_per_epoch))))
    screen = sum(a.seconds for a in plans.values())
    long_seconds = max(available - screen, 0.0)
    return FocusPlan(plans, cfg.budget_seconds, 0.0, long_seconds, measured,
                     long_speeds=long_speeds, screen_size=cfg.image_size)
