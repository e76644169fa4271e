"""Budget first: measure each architecture's training speed on this machine, then plan how many
trials and epochs each one gets so that the sweep, its repeats and its final fit end within the
budget, and say so before the first trial.

    budget = "45m"      # in a sweep file, or `catdog sweep --budget 45m`

The measurement (`catdog.speed`) trains a few batches of each architecture at the sweep's image
size with its default hyperparameters, in the precision it will train in. The plan is saved
beside the tuner state, so a resumed sweep keeps the trial counts it started with.

The `compare` strategy gives every architecture the same share of the search budget: the fair
comparison. Time an architecture leaves unused (early stopping, fewer epochs than planned) flows
to the ones searched after it.

The `best` strategy races them instead (catdog/search/strategies/best.py): one KerasTuner
Hyperband search over the architecture, the image size and each family's hyperparameters. Its
plan measures every (architecture, size) pair and picks the longest fit (Hyperband's
`max_epochs`) for which the most exploratory bracket and the winner's final fit are expected to
end within the budget.

The `focus` strategy plans its own screen and long fit (catdog/search/strategies/focus/).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from catdog.errors import CatdogError
from catdog.log import format_seconds, get_logger

log = get_logger(__name__)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)\s*([smhd]))+\s*$")


def parse_budget(value) -> float | None:
    """Seconds from "45m", "2h", "1h30m", "90s", or a plain number of minutes; None for none."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value) * 60
    elif isinstance(value, str) and _DURATION.match(value.lower()):
        seconds = sum(
            float(n) * _UNITS[u]
            for n, u in re.findall(r"(\d+(?:\.\d+)?)\s*([smhd])", value.lower())
        )
    else:
        raise CatdogError(f"budget {value!r} is not a duration; write it like 45m, 2h or 1h30m")
    if seconds <= 0:
        raise CatdogError(f"budget {value!r} must be more than zero")
    return seconds


@dataclass
class ArchPlan:
    arch: str
    seconds_per_epoch: float  # measured: training plus validation, at the sweep's image size
    trial_overhead: float
    trials: int
    epochs: int

    @property
    def seconds(self) -> float:
        return self.trials * (self.trial_overhead + self.epochs * self.seconds_per_epoch)


@dataclass
class Plan:
    archs: dict[str, ArchPlan]
    budget: float | None  # seconds; None = no budget
    repeats_seconds: float
    final_seconds: float
    measured_seconds: float  # what the speed measurement itself took
    precisions: dict[str, str] = field(default_factory=dict)  # arch -> the one it trains in

    @property
    def search_seconds(self) -> float:
        return sum(a.seconds for a in self.archs.values())

    @property
    def after_search_seconds(self) -> float:
        """What follows the search and is kept out of its share: here the final fit; a
        strategy's plan may name another (focus's long fit)."""
        return self.final_seconds

    def after_search_lines(self) -> list[str]:
        if not self.final_seconds:
            return []
        return [
            f"{'final fit':<12} {'':>8} {'':>6} {'':>6} {format_seconds(self.final_seconds):>9}"
        ]

    @property
    def total_seconds(self) -> float:
        return (
            self.measured_seconds
            + self.search_seconds
            + self.repeats_seconds
            + self.after_search_seconds
        )

    @property
    def search_budget(self) -> float | None:
        """What the search may spend: the budget less what was spent before it (decoding,
        measuring) and what the repeats and whatever follows the search need."""
        if self.budget is None:
            return None
        return max(
            self.budget - self.measured_seconds - self.repeats_seconds - self.after_search_seconds,
            0.0,
        )

    @property
    def planned_trials(self) -> int:
        return sum(a.trials for a in self.archs.values())

    @property
    def minimum_seconds(self) -> float:
        """The least a sweep can do here: the set-up, then one 1-epoch trial of the cheapest
        architecture."""
        return self.measured_seconds + min(
            a.trial_overhead + a.seconds_per_epoch for a in self.archs.values()
        )

    def seconds_per_epoch(self, arch: str, size: int) -> float:
        return self.archs[arch].seconds_per_epoch

    def summary(self, now: datetime | None = None) -> str:
        return _summary(self.total_seconds, now)

    def describe(self, now: datetime | None = None) -> str:
        now = now or datetime.now()
        lines = [
            f"{'arch':<12} {'s/epoch':>8} {'trials':>6} {'epochs':>6} {'estimate':>9}"
            + (
                "  (trials: as many as the time allows, about this many)"
                if self.budget is not None
                else ""
            ),
            f"{'set-up':<12} {'':>8} {'':>6} {'':>6} "
            f"{format_seconds(self.measured_seconds):>9}  (decoding, measuring)",
        ]
        for a in self.archs.values():
            lines.append(
                f"{a.arch:<12} {a.seconds_per_epoch:8.1f} {a.trials:6d} {a.epochs:6d} "
                f"{format_seconds(a.seconds):>9}"
            )
        if self.repeats_seconds:
            lines.append(
                f"{'repeats':<12} {'':>8} {'':>6} {'':>6} {format_seconds(self.repeats_seconds):>9}"
            )
        lines += self.after_search_lines()
        total = self.summary(now)
        if self.budget is not None:
            total += f" (budget {format_seconds(self.budget)})"
        return "\n".join(lines + precision_line(self.precisions) + [total])

    def to_json(self) -> str:
        return json.dumps(
            {**asdict(self), "archs": {k: asdict(v) for k, v in self.archs.items()}}, indent=2
        )

    @classmethod
    def from_json(cls, text: str) -> Plan:
        raw = json.loads(text)
        raw["archs"] = {k: ArchPlan(**v) for k, v in raw["archs"].items()}
        return cls(**raw)


def precision_line(precisions: dict[str, str]) -> list[str]:
    if not precisions:
        return []
    return [f"{'precision':<12} " + ", ".join(f"{a} {p}" for a, p in precisions.items())]


FINAL_COST = 1.15  # a final-fit epoch over train+val (1.25x the images, no validation pass)


def make_plan(
    speeds: dict[str, tuple[float, float]],
    *,
    trials: int,
    epochs: int,
    budget: float | None,
    repeats: int,
    final_fit: bool = True,
    measured_seconds: float = 0.0,
) -> Plan:
    """Trials and epochs per architecture so that the search, the repeats and the final fit
    all end within the budget.

    The final fit gets the same share as one architecture's search, and every architecture's
    epochs are capped so that its own final fit would fit that share: whichever wins, the final
    fit is affordable (a slow architecture trains fewer epochs; under a budget the fair unit is
    time, not epochs). Repeats are costed from the plan. The rest of the budget is split equally
    between the architectures, and each gets as many full-length trials as its share holds, at
    least one. Without a budget every architecture gets what the sweep file asks for.
    """
    n = len(speeds)
    plans = {
        arch: ArchPlan(arch, per_epoch, overhead, trials, epochs)
        for arch, (per_epoch, overhead) in speeds.items()
    }
    final_share = None
    if budget is not None:
        available = max(budget - measured_seconds, 0.0)
        final_share = available / (n + 1) if final_fit else 0.0
        for a in plans.values():
            if final_fit:
                affordable = int(
                    (final_share - a.trial_overhead) // (a.seconds_per_epoch * FINAL_COST)
                )
                a.epochs = max(1, min(epochs, affordable))
        repeats_cost = sum(
            repeats * (a.trial_overhead + a.epochs * a.seconds_per_epoch) for a in plans.values()
        )
        share = max(available - final_share - repeats_cost, 0.0) / n
        for a in plans.values():
            full = a.trial_overhead + a.epochs * a.seconds_per_epoch
            a.trials = max(1, min(trials, int(share // full)))
            if share < full:  # not even one trial of those epochs: fewer epochs
                a.epochs = max(
                    1, min(a.epochs, int((share - a.trial_overhead) // a.seconds_per_epoch))
                )
    repeats_seconds = sum(
        repeats * (a.trial_overhead + a.epochs * a.seconds_per_epoch) for a in plans.values()
    )
    final_seconds = 0.0
    if final_fit:
        final_seconds = max(
            a.trial_overhead + a.epochs * a.seconds_per_epoch * FINAL_COST for a in plans.values()
        )
        if final_share is not None:
            final_seconds = min(final_seconds, final_share)
    return Plan(plans, budget, repeats_seconds, final_seconds, measured_seconds)


def _summary(total: float, now: datetime | None) -> str:
    finish = (now or datetime.now()) + timedelta(seconds=total)
    return f"estimated {format_seconds(total)}, finishing about {finish:%H:%M}"


# ------------------------------------------------------------------------------- the race plan
# KerasTuner's Hyperband (keras_tuner/src/tuners/hyperband.py, 1.4): brackets run from the most
# exploratory (many configurations, few epochs) down to plain random search at max_epochs.
def hyperband_brackets(max_epochs: int, factor: int) -> int:
    epochs, brackets = float(max_epochs), 0
    while epochs >= 1:
        epochs /= factor
        brackets += 1
    return brackets


def hyperband_rounds(max_epochs: int, factor: int, bracket: int) -> list[tuple[int, int]]:
    """(configurations, epochs each has trained by its end) for every round of BRACKET."""
    end_size = math.ceil(1 + math.log(max_epochs, factor)) / (bracket + 1)
    return [
        (
            math.ceil(end_size * factor ** (bracket - r)),
            math.ceil(max_epochs / factor ** (bracket - r)),
        )
        for r in range(bracket + 1)
    ]


@dataclass
class RacePlan:
    """The `best` strategy's plan: one Hyperband race over architectures and image sizes."""

    speeds: dict[str, dict[str, list[float]]]  # arch -> {size: [s/epoch, overhead]}
    max_epochs: int
    factor: int
    brackets: list[dict]  # the brackets expected to fit: {bracket, rounds, seconds}
    budget: float | None
    final_seconds: float
    measured_seconds: float
    precisions: dict[str, str] = field(default_factory=dict)  # arch -> the one it trains in

    @property
    def search_seconds(self) -> float:
        return sum(b["seconds"] for b in self.brackets)

    @property
    def after_search_seconds(self) -> float:
        return self.final_seconds

    @property
    def total_seconds(self) -> float:
        return self.measured_seconds + self.search_seconds + self.final_seconds

    @property
    def search_budget(self) -> float | None:
        if self.budget is None:
            return None
        return max(self.budget - self.measured_seconds - self.final_seconds, 0.0)

    @property
    def planned_trials(self) -> int:
        return sum(n for b in self.brackets for n, _ in b["rounds"])

    def seconds_per_epoch(self, arch: str, size: int) -> float:
        return self.speeds[arch][str(size)][0]

    @property
    def minimum_seconds(self) -> float:
        """The set-up, then one 1-epoch trial of the cheapest (architecture, size)."""
        return self.measured_seconds + min(
            sum(s) for by_size in self.speeds.values() for s in by_size.values()
        )

    def trial_seconds(self, arch: str, size: int, epochs: int) -> float:
        per_epoch, overhead = self.speeds[arch][str(size)]
        return overhead + epochs * per_epoch

    def summary(self, now: datetime | None = None) -> str:
        return _summary(self.total_seconds, now)

    def describe(self, now: datetime | None = None) -> str:
        sizes = sorted({int(s) for v in self.speeds.values() for s in v})
        lines = [
            f"race (strategy best): Hyperband over architecture, image size and "
            f"hyperparameters, up to {self.max_epochs} epochs, factor {self.factor}",
            f"{'s/epoch':<12} " + " ".join(f"{f'{s}px':>7}" for s in sizes),
        ]
        for arch, by_size in self.speeds.items():
            lines.append(
                f"{arch:<12} "
                + " ".join(
                    f"{by_size[str(s)][0]:7.1f}" if str(s) in by_size else f"{'-':>7}"
                    for s in sizes
                )
            )
        lines.append(
            f"{'set-up':<12} {format_seconds(self.measured_seconds):>9}  (decoding, measuring)"
        )
        for b in self.brackets:
            rounds = " -> ".join(f"{n} x {e} epochs" for n, e in b["rounds"])
            lines.append(f"bracket {b['bracket']:<4} {format_seconds(b['seconds']):>9}  {rounds}")
        if self.final_seconds:
            lines.append(f"{'final fit':<12} {format_seconds(self.final_seconds):>9}")
        lines += precision_line(self.precisions)
        total = self.summary(now)
        if self.budget is not None:
            total += (
                f" (budget {format_seconds(self.budget)}; trials: as many as the time "
                "allows, about this many)"
            )
        return "\n".join(lines + [total])

    def to_json(self) -> str:
        return json.dumps({"strategy": "best", **asdict(self)}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> RacePlan:
        raw = json.loads(text)
        raw.pop("strategy", None)
        return cls(**raw)


def make_race_plan(
    speeds: dict[str, dict[int, tuple[float, float]]],
    *,
    max_epochs: int,
    factor: int,
    budget: float | None,
    final_fit: bool = True,
    measured_seconds: float = 0.0,
) -> RacePlan:
    """The longest Hyperband fit (max_epochs, at most the sweep file's epochs) for which its
    most exploratory bracket and the final fit end within the budget, and the brackets that fit.

    Costs: a bracket's first round samples architectures and sizes at random, so it is costed
    at the mean speed of the measured pairs; which ones it promotes is not known in advance, so
    later rounds and the final fit are costed at that mean too. Costing them at the slowest pair
    instead would size the whole race to a pair that rarely leads (the notebook's model with
    BatchNorm at 128 px trains at 4x the ResNet's cost per epoch on a 2-core CPU, and trails
    it), so the budget is kept by checks as the race runs: a trial starts only if it is
    expected to end in time, at the speed its previous round actually trained, and the final
    fit only if its trial's real speed says it can. Without a budget, max_epochs is the sweep
    file's and every bracket runs."""
    pairs = [v for by_size in speeds.values() for v in by_size.values()]
    mean_epoch = sum(p for p, _ in pairs) / len(pairs)
    mean_over = sum(o for _, o in pairs) / len(pairs)

    def bracket_seconds(r: int, bracket: int) -> float:
        total, before = 0.0, 0
        for n, e in hyperband_rounds(r, factor, bracket):
            total += n * (mean_over + (e - before) * mean_epoch)
            before = e
        return total

    def final(r: int) -> float:
        return mean_over + r * mean_epoch * FINAL_COST if final_fit else 0.0

    chosen = max_epochs
    if budget is not None:
        available = max(budget - measured_seconds, 0.0)
        chosen = next(
            (
                r
                for r in range(max_epochs, 0, -1)
                if bracket_seconds(r, hyperband_brackets(r, factor) - 1) + final(r) <= available
            ),
            1,
        )
    brackets, spent = [], 0.0
    room = None if budget is None else max(budget - measured_seconds - final(chosen), 0.0)
    for b in range(hyperband_brackets(chosen, factor) - 1, -1, -1):
        seconds = bracket_seconds(chosen, b)
        if brackets and room is not None and spent + seconds > room:
            break
        brackets.append(
            {
                "bracket": b,
                "rounds": [list(r) for r in hyperband_rounds(chosen, factor, b)],
                "seconds": seconds,
            }
        )
        spent += seconds
    return RacePlan(
        {a: {str(s): list(v) for s, v in by_size.items()} for a, by_size in speeds.items()},
        chosen,
        factor,
        brackets,
        budget,
        final(chosen),
        measured_seconds,
    )


def load_or_make(path: Path, make, cls=Plan) -> tuple[Plan | RacePlan, bool]:
    """The plan (of class CLS) saved at PATH (a resumed sweep), else a new one saved there:
    (plan, resumed)."""
    if path.is_file():
        try:
            return cls.from_json(path.read_text()), True
        except (ValueError, TypeError, KeyError):
            log.info("the saved plan %s is unreadable; planning again", path)
    plan = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(plan.to_json())
    tmp.replace(path)
    return plan, False
