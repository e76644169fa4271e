"""What a sweep's parts share: its settings, its runs, its plan, its clock and its progress;
the objective every search maximises; and the signal that the budget is used up."""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from catdog.keys import OBJECTIVE  # noqa: F401  (the search's objective, re-exported)

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
    base: Any  # pipeline.Splits at cfg.image_size (None on a distributed chief)
    others: dict[int, Any] = field(default_factory=dict)

    def at(self, size: int):
        from catdog import pipeline

        if size == self.cfg.image_size:
            return self.base
        if size not in self.others:
            self.others[size] = pipeline.load(self.data_root, size, self.cfg.batch_size,
                                              seed=self.cfg.seed)
        return self.others[size]


@dataclass
class SweepContext:
    cfg: Any  # sweepfile.SweepConfig
    strategy: Any  # the strategy object (catdog.search.strategies)
    key: str
    experiment_id: str
    parent_run_id: str
    data_root: Path
    splits: Any  # pipeline.Splits; None on a distributed chief, which never touches pixels
    role: str = "local"
    digest: str = ""  # the prepared dataset's
    oracle_port: int | None = None  # distributed: architecture i's oracle is on this + i
    total_trials: int = 0
    arch_index: int = 0
    started: float = field(default_factory=time.monotonic)
    trials_done: int = 0
    trial_seconds: list[float] = field(default_factory=list)
    plan: Any = None  # catdog.plan.Plan or RacePlan: the strategy's, fitted to the budget
    search_started: float = field(default_factory=time.monotonic)
    deadline: float | None = None  # time.monotonic() at which the budget runs out
    sized: SizedSplits | None = None
    trial_speeds: dict[str, float] = field(default_factory=dict)  # trial id -> s/epoch

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
        for them (read from the dataset, so a distributed chief, without pixels, knows them too)."""
        from catdog.data import classes

        return classes(self.data_root)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def owner(self) -> bool:
        """Whether this process owns the sweep's parent and architecture runs."""
        return self.role in ("local", "chief")

    def splits_at(self, size: int):
        return self.sized.at(size) if self.sized else self.splits

    def trials_for(self, arch: str) -> int:
        return self.plan.archs[arch].trials if self.plan else self.cfg.trials

    def epochs_for(self, arch: str | None) -> int:
        return self.strategy.epochs_for(self, arch)

    def eta(self, remaining: int) -> float:
        return self.strategy.eta(self, remaining)

    def mean_eta(self, remaining: int) -> float:
        """REMAINING trials at the mean duration of those so far, plus the final fit."""
        final = self.plan.final_seconds if self.plan else 0.0
        if not self.trial_seconds:
            return self.plan.total_seconds if self.plan else float("nan")
        return remaining * float(np.mean(self.trial_seconds)) + final
