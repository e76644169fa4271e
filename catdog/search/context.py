"""What a sweep's parts read: its settings, its runs, its data and its plan (read-only, with the
progress it owns elsewhere); a process's role; and the signal that the budget is used up."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from catdog.search.progress import SweepProgress

TUNER_ROOT = Path(".tuner")


class TimeLimitReached(Exception):
    """Raised before a new trial once the search's share of the budget is used."""


def role() -> str:
    """'local', 'chief' or 'worker', from KerasTuner's environment variables."""
    tuner_id = os.environ.get("KERASTUNER_TUNER_ID")
    if not tuner_id or "KERASTUNER_ORACLE_IP" not in os.environ:
        return "local"
    return "chief" if tuner_id == "chief" else "worker"


@dataclass
class SizedSplits:
    """The sweep's split at any image size, each decoded once (a race searches the size)."""

    data_root: Path
    cfg: Any  # sweepfile.SweepConfig
    base: Any  # pipeline.Splits at cfg.image_size
    others: dict[int, Any] = field(default_factory=dict)

    def at(self, size: int):
        from catdog import pipeline

        if size == self.cfg.image_size:
            return self.base
        if size not in self.others:
            self.others[size] = pipeline.load(
                self.data_root, size, self.cfg.batch_size, seed=self.cfg.seed
            )
        return self.others[size]


@dataclass(frozen=True)
class SweepContext:
    """What a sweep's parts read: its settings, identity, runs, data and plan. Read-only: the
    sweep's progress (trials done, time spent) is `progress`'s, which only its own methods
    change (`catdog.search.progress`)."""

    cfg: Any  # sweepfile.SweepConfig
    strategy: Any  # the strategy object (catdog.search.strategies)
    key: str
    experiment_id: str
    data_root: Path
    splits: Any  # pipeline.Splits at the sweep's image size
    progress: SweepProgress
    parent_run_id: str = ""
    role: str = "local"
    digest: str = ""  # the prepared dataset's
    oracle_port: int | None = None  # distributed: architecture i's oracle is on this + i
    plan: Any = None  # catdog.plan.Plan or a strategy's subclass: fitted to the budget
    sized: SizedSplits | None = None

    def precision(self, arch: str) -> str:
        """The precision ARCH trains in: the plan's measured choice (`precision = "auto"` on a
        CPU with bf16), else the sweep's precision resolved for this machine."""
        from catdog import runtime

        chosen = getattr(self.plan, "precisions", None) or {}
        return chosen.get(arch) or runtime.resolve_precision(self.cfg.precision)

    def use_precision(self, arch: str) -> str:
        """Build ARCH's next model in its precision (Keras's global dtype policy)."""
        from catdog import runtime

        return runtime.set_precision(self.precision(arch))

    @functools.cached_property
    def classes(self) -> tuple[str, ...]:
        """The prepared dataset's class names, in order: every model the sweep builds has a head
        for them (read from the prepared dataset)."""
        from catdog.data import classes

        return classes(self.data_root)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @functools.cached_property
    def class_weight(self) -> dict[int, float] | None:
        """Keras's `class_weight` for every fit of the sweep: balanced weights where the
        prepared dataset is imbalanced (`catdog.data.balance`), else None."""
        from catdog.data import class_weights, is_imbalanced

        return class_weights(self.data_root) if is_imbalanced(self.data_root) else None

    @functools.cached_property
    def objective(self) -> str:
        """The validation metric the sweep searches, stops and chooses on: balanced accuracy
        where the prepared dataset is imbalanced, else val accuracy (`catdog.data.balance`)."""
        from catdog.data import objective

        return objective(self.data_root)

    @property
    def owner(self) -> bool:
        """Whether this process owns the sweep's parent and architecture runs."""
        return self.role in ("local", "chief")

    @property
    def deadline(self) -> float | None:
        """time.monotonic() at which the budget runs out (None: no budget, or no plan)."""
        return self.progress.deadline if self.plan is not None else None

    @functools.cached_property
    def total_trials(self) -> int:
        """The trials (and repeats, and a long fit) the plan expects, for progress lines."""
        return self.strategy.total_trials(self)

    def splits_at(self, size: int):
        return self.sized.at(size) if self.sized else self.splits

    def trials_for(self, arch: str) -> int:
        return self.plan.archs[arch].trials if self.plan else self.cfg.trials

    def epochs_for(self, arch: str | None) -> int:
        return self.strategy.epochs_for(self, arch)

    def eta(self, remaining: int) -> float:
        return self.strategy.eta(self, remaining)

    def mean_eta(self, remaining: int) -> float:
        """REMAINING trials at the mean duration of those so far, plus what follows the search
        (a final fit, or a long fit)."""
        after = self.plan.after_search_seconds if self.plan else 0.0
        mean = self.progress.mean_trial_seconds()
        if mean is None:
            return self.plan.total_seconds if self.plan else float("nan")
        return remaining * mean + after

    def progress_line(self) -> str:
        """ "sweep 3/8, ETA 12m" for a trial's line."""
        from catdog.log import format_seconds

        done, total = self.progress.trials_done, self.total_trials
        remaining = max(total - done, 0)
        return (
            f"sweep {done}/{total}, ETA "
            f"{format_seconds(self.eta(remaining)) if remaining else 'done'}"
        )
