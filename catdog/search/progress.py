"""A sweep's progress, with one owner: trials done, their durations and speeds, and the budget's
clock. Like KerasTuner's Oracle, it saves and restores itself (`get_state`/`set_state`, in
`progress.json` beside the tuner state), so a resumed sweep is one `load`, not a reconstruction.

Time is kept on the budget's clock: the seconds this sweep has spent, summed over every process
that ran it. The clock starts once the data is resolved and prepared (a download is not the
budget's), and a resumed sweep goes on from what the earlier runs spent: the budget is the
sweep's, not each process's. Everything else only asks.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

FILE = "progress.json"


class SweepProgress:
    """What a sweep has done and spent. Written only by its own methods."""

    def __init__(self, budget: float | None = None, path: Path | None = None):
        self._budget = budget
        self._path = path
        self._trials_done = 0
        self._trial_seconds: list[float] = []
        self._trial_speeds: dict[str, float] = {}  # trial id -> seconds per epoch
        self._spent_before = 0.0  # seconds spent by the earlier processes of this sweep
        self._search_began: float | None = None  # on the budget's clock
        self._arch_index = 0
        self._resumed = False
        self._t0 = time.monotonic()

    # -- state
    def get_state(self) -> dict:
        return {
            "trials_done": self._trials_done,
            "trial_seconds": self._trial_seconds,
            "trial_speeds": self._trial_speeds,
            "spent": self.elapsed(),
            "search_began": self._search_began,
        }

    def set_state(self, state: dict) -> None:
        self._trials_done = int(state.get("trials_done", 0))
        self._trial_seconds = [float(s) for s in state.get("trial_seconds", [])]
        self._trial_speeds = {str(k): float(v) for k, v in state.get("trial_speeds", {}).items()}
        self._spent_before = float(state.get("spent", 0.0))
        self._search_began = state.get("search_began")
        self._resumed = True
        self._t0 = time.monotonic()

    def save(self) -> None:
        """Write the state atomically (a kill mid-write leaves the previous one)."""
        if self._path is None:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        part = self._path.with_suffix(".part")
        part.write_text(json.dumps(self.get_state(), indent=2))
        os.replace(part, self._path)

    @classmethod
    def load(cls, state_dir: Path, budget: float | None) -> SweepProgress:
        """The sweep's progress from STATE_DIR, or a new one; its clock starts now."""
        progress = cls(budget, state_dir / FILE)
        path = state_dir / FILE
        if path.is_file():
            try:
                progress.set_state(json.loads(path.read_text()))
            except (OSError, ValueError):
                pass  # a torn file from a kill: start the count again, the tuner state holds
        return progress

    # -- the budget's clock
    def restart_clock(self) -> None:
        """Start this process's share of the clock now (once the data is ready)."""
        self._t0 = time.monotonic()

    def elapsed(self) -> float:
        """Seconds this sweep has spent on its budget, earlier processes included."""
        return self._spent_before + time.monotonic() - self._t0

    @property
    def spent_before(self) -> float:
        return self._spent_before

    @property
    def resumed(self) -> bool:
        return self._resumed

    @property
    def budget(self) -> float | None:
        return self._budget

    def left(self) -> float | None:
        """Seconds of the budget left (None: no budget)."""
        return None if self._budget is None else self._budget - self.elapsed()

    @property
    def deadline(self) -> float | None:
        """time.monotonic() at which the budget runs out, in this process (None: no budget)."""
        return None if self._budget is None else self._t0 + self._budget - self._spent_before

    def begin_search(self) -> None:
        """The search starts (once: a resumed search goes on from where it was)."""
        if self._search_began is None:
            self._search_began = self.elapsed()

    def searched(self) -> float:
        """Seconds since the search began, on the budget's clock."""
        return self.elapsed() - (
            self._search_began if self._search_began is not None else self.elapsed()
        )

    # -- trials
    def at_arch(self, index: int) -> None:
        self._arch_index = index

    @property
    def arch_index(self) -> int:
        return self._arch_index

    def trial_done(
        self, seconds: float, trial_id: str | None = None, seconds_per_epoch: float | None = None
    ) -> None:
        """A trial, repeat or long fit finished in SECONDS."""
        self._trials_done += 1
        self._trial_seconds.append(float(seconds))
        if trial_id is not None and seconds_per_epoch is not None:
            self._trial_speeds[str(trial_id)] = float(seconds_per_epoch)
        self.save()

    @property
    def trials_done(self) -> int:
        return self._trials_done

    def speed_of(self, trial_id: str | None) -> float | None:
        return self._trial_speeds.get(str(trial_id)) if trial_id is not None else None

    def mean_trial_seconds(self) -> float | None:
        return float(np.mean(self._trial_seconds)) if self._trial_seconds else None
