"""The `focus` strategy's plan: the screen as an equal-budget plan at the screen's size, and the
long fit's share of the budget, with every architecture's speed at each size it may finish at."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from catdog.log import format_seconds
from catdog.plan import ArchPlan, Plan

SCREEN_SHARE = 0.25  # of the budget left after measuring
LONG_FACTOR = 8  # without a budget, the long fit is this many screening trials long


@dataclass
class FocusPlan(Plan):
    """The screen (its `archs`) and the long fit (`long_seconds`). `long_speeds` holds each
    architecture's seconds per epoch by size: measured at the screen's size, estimated by pixel
    count above it until the winner is measured there."""

    long_speeds: dict[str, dict[str, float]] = field(default_factory=dict)
    screen_size: int = 0
    long_seconds: float = 0.0

    @property
    def after_search_seconds(self) -> float:
        return self.long_seconds

    def after_search_lines(self) -> list[str]:
        sizes = "; ".join(
            f"{a} " + ", ".join(f"{s} px {v:.0f} s" for s, v in by.items())
            for a, by in self.long_speeds.items()
        )
        return [
            f"{'long fit':<12} {'':>8} {'':>6} {'':>6} "
            f"{format_seconds(self.long_seconds):>9}  (the screen's winner; s/epoch by "
            f"size, the larger ones estimated until the winner is measured there: {sizes})"
        ]

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "strategy": "focus"}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> FocusPlan:
        raw = json.loads(text)
        raw.pop("strategy", None)
        raw["archs"] = {k: ArchPlan(**v) for k, v in raw["archs"].items()}
        if "long_seconds" not in raw:  # saved by catdog 0.x, where final_seconds held it
            raw["long_seconds"], raw["final_seconds"] = raw.get("final_seconds", 0.0), 0.0
        return cls(**raw)


def make_plan(
    cfg,
    speeds: dict[str, tuple[float, float]],
    long_speeds: dict[str, dict[str, float]],
    measured: float,
) -> FocusPlan:
    """The screen's trials and epochs per architecture within its share; the rest is the long
    fit's. Without a budget, the sweep file's trials and a fit LONG_FACTOR screens long."""
    n = len(speeds)
    plans = {
        a: ArchPlan(a, per_epoch, overhead, cfg.trials, cfg.epochs)
        for a, (per_epoch, overhead) in speeds.items()
    }
    if cfg.budget_seconds is None:
        long_seconds = max(
            LONG_FACTOR * cfg.epochs * max(by.values()) for by in long_speeds.values()
        )
        return FocusPlan(
            plans,
            None,
            0.0,
            0.0,
            measured,
            long_speeds=long_speeds,
            screen_size=cfg.image_size,
            long_seconds=long_seconds,
        )
    available = max(cfg.budget_seconds - measured, 0.0)
    share = available * SCREEN_SHARE / n
    for a in plans.values():
        if share < a.trial_overhead + a.epochs * a.seconds_per_epoch:
            a.epochs = max(1, min(a.epochs, int((share - a.trial_overhead) // a.seconds_per_epoch)))
        a.trials = max(
            1, min(cfg.trials, int(share // (a.trial_overhead + a.epochs * a.seconds_per_epoch)))
        )
    screen = sum(a.seconds for a in plans.values())
    return FocusPlan(
        plans,
        cfg.budget_seconds,
        0.0,
        0.0,
        measured,
        long_speeds=long_speeds,
        screen_size=cfg.image_size,
        long_seconds=max(available - screen, 0.0),
    )
