"""The long fit's epoch-by-epoch machinery: its clock, the best weights it keeps, and the
checkpoint that lets a kill cost at most one epoch.

Every epoch the checkpoint holds the model with its optimizer (`model-<epoch>.keras`), the best
weights so far with their size and epoch (`best.npz`), and `state.json`: the schedule the fit
was started with, the phase, the next epoch, the history and the fit's own clock. `state.json`
is written last and atomically, so it always names files that exist.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import keras
import numpy as np

from catdog import keys
from catdog.models.common import cosine

STATE = "state.json"
BEST = "best.npz"


class Checkpoint:
    """The long fit's files in FOLDER (under the sweep's tuner state)."""

    def __init__(self, folder: Path):
        self.folder = folder

    def state(self) -> dict | None:
        try:
            return json.loads((self.folder / STATE).read_text())
        except (OSError, ValueError):
            return None

    def model_path(self, epoch: int) -> Path:
        return self.folder / f"model-{epoch}.keras"

    def write(self, model, state: dict) -> None:
        """The model after epoch `state["epoch"] - 1`, then the state that names it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.model_path(state["epoch"])
        model.save(path)
        part = self.folder / (STATE + ".part")
        part.write_text(json.dumps(state, default=float))
        os.replace(part, self.folder / STATE)
        for old in self.folder.glob("model-*.keras"):
            if old != path:
                old.unlink(missing_ok=True)

    def write_best(self, weights: list[np.ndarray]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        part = self.folder / "best.part.npz"
        np.savez(part, *weights)
        os.replace(part, self.folder / BEST)

    def best_weights(self) -> list[np.ndarray] | None:
        try:
            with np.load(self.folder / BEST) as saved:
                return [saved[f"arr_{i}"] for i in range(len(saved.files))]
        except OSError:
            return None

    def clear(self) -> None:
        for path in self.folder.glob("*"):
            path.unlink(missing_ok=True)


class Clock(keras.callbacks.Callback):
    """Keeps a phase to its time. Under a budget the fit's length is time, not epochs: the rate
    follows one cosine over the fit's SECONDS, and the phase trains until its next epoch would
    end after END (however fast or slow the machine turns out to be next to the plan's
    measurement). Without a budget, the cosine runs over EPOCHS."""

    def __init__(
        self,
        base_lr: float,
        scale: float,
        epochs: int,
        start: float,
        seconds: float | None,
        end: float | None,
    ):
        super().__init__()
        self.base_lr, self.scale, self.epochs = base_lr, scale, epochs
        self.start, self.seconds, self.end = start, seconds, end
        self.durations: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._t = time.monotonic()
        position = epoch
        if self.seconds:
            position = (self._t - self.start) / self.seconds * self.epochs
        self.model.optimizer.learning_rate = (
            cosine(self.base_lr, position, self.epochs) * self.scale
        )

    def on_epoch_end(self, epoch, logs=None):
        self.durations.append(time.monotonic() - self._t)
        if self.end is not None and time.monotonic() + np.mean(self.durations[-3:]) > self.end:
            self.model.stop_training = True


class BestWeights(keras.callbacks.Callback):
    """Keeps the weights of the best validated epoch (by OBJECTIVE, the sweep's) across every
    phase, with the size they were validated at and their epoch, and writes them to the
    checkpoint when they improve: the figures logged for the long fit are the kept weights' own."""

    def __init__(
        self, checkpoint: Checkpoint, saved: dict | None = None, objective: str = keys.OBJECTIVE
    ):
        super().__init__()
        self.checkpoint, self.objective = checkpoint, objective
        saved = saved or {}
        self.score = float(saved.get("score", -np.inf))
        self.epoch, self.size = saved.get("epoch"), saved.get("size")
        self.weights = checkpoint.best_weights() if saved else None
        self.phase_size: int | None = None

    def on_epoch_end(self, epoch, logs=None):
        score = (logs or {}).get(self.objective)
        if score is not None and score > self.score:
            self.score, self.epoch, self.size = float(score), epoch, self.phase_size
            self.weights = self.model.get_weights()
            self.checkpoint.write_best(self.weights)

    def state(self) -> dict:
        return {"score": self.score, "epoch": self.epoch, "size": self.size}


class Saver(keras.callbacks.Callback):
    """Writes the checkpoint after every epoch (STATE() gives what to save with the model) and
    the sweep's progress, so a kill costs at most the epoch it interrupts."""

    def __init__(self, checkpoint: Checkpoint, state, progress):
        super().__init__()
        self.checkpoint, self.state_of, self.progress = checkpoint, state, progress

    def on_epoch_end(self, epoch, logs=None):
        self.checkpoint.write(self.model, self.state_of(epoch))
        self.progress.save()


def carry(old, new, optimizer: bool = True) -> bool:
    """NEW (the same architecture at another size, or with other layers frozen) takes OLD's
    weights and, where the trainable variables match, its optimizer's state (moments and step
    count); whether the optimizer's state was carried."""
    new.set_weights(old.get_weights())
    if not optimizer or not old.optimizer.built:
        return False
    new.optimizer.build(new.trainable_variables)
    src, dst = old.optimizer.variables, new.optimizer.variables
    if len(src) != len(dst) or any(tuple(a.shape) != tuple(b.shape) for a, b in zip(src, dst)):
        return False
    for a, b in zip(src, dst):
        b.assign(a)
    return True
