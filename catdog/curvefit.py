"""The data curve's numbers, apart from any training: the points (which validation photos each
fraction's model got right), the trend `accuracy = a + b·ln(photos)` fitted through them and read
at twice the training split's photos, the gain's intervals and the sentence.

The 95% interval of that gain is a bootstrap over the validation photos: each draw resamples the
same photos for every point (they share the split), refits the trend and reads the gain again.
It says how far the draw of validation photos moves the points; it does not count how far
another seed would move each fit, and three points barely pin a trend down, so the fit's own
interval from its residuals (`fit_interval`, from n-2 degrees of freedom) is kept beside it, and
is much wider. When the bootstrap interval lies above zero, the sentence is "more photos would
likely help"; otherwise "the curve is flat".

The curve checks its own reading at twice the photos (`DataCurve.backtest`): the trend fitted on
the points of at most half the largest fraction's photos alone (25% and 50% by default) is read
at the largest (100%, twice 50%) and set against what the largest measured, with the error's
interval bootstrapped over the same validation photos.

`catdog.curve` trains the fractions and logs the curve; this module only computes and draws it.
"""

from __future__ import annotations

import json
import math
import textwrap
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from catdog import choose, keys, plots

BOOTSTRAP_DRAWS = 2000
LEVEL = 0.95
MIN_GAIN = 0.0  # the interval's lower end must be above this (accuracy) to say photos help
HELPS = "more photos would likely help"
FLAT = "the curve is flat: try a larger model or pretrained weights"


@dataclass(frozen=True)
class Point:
    """One fraction's fit: how many photos it trained on, and which validation photos its
    model (at its best epoch) got right, in the split's order."""

    fraction: float
    n_train: int
    correct: np.ndarray  # (n_val,) bool
    run_id: str = ""
    seconds: float = 0.0

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.correct))

    def interval(self) -> tuple[float, float]:
        return choose.accuracy_interval(self.accuracy, len(self.correct), LEVEL)


@dataclass(frozen=True)
class Trend:
    """`accuracy = intercept + slope·ln(photos)`, and bootstrap draws of both."""

    intercept: float
    slope: float
    draws: np.ndarray  # (draws, 2): intercept, slope

    def at(self, n, intercept=None, slope=None):
        a = self.intercept if intercept is None else intercept
        b = self.slope if slope is None else slope
        return np.minimum(a + b * np.log(n), 1.0)

    def gain(self, n: float, intercept=None, slope=None):
        """Accuracy at 2N minus accuracy at N."""
        return self.at(2 * n, intercept, slope) - self.at(n, intercept, slope)

    def band(self, n) -> tuple[np.ndarray, np.ndarray]:
        preds = self.at(np.asarray(n, float)[None, :], self.draws[:, :1], self.draws[:, 1:])
        return tuple(np.quantile(preds, [(1 - LEVEL) / 2, (1 + LEVEL) / 2], axis=0))


def _least_squares(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Intercepts and slopes of y (..., points) against x (points), for every leading row."""
    dx = x - x.mean()
    slope = (y - y.mean(axis=-1, keepdims=True)) @ dx / (dx @ dx)
    return y.mean(axis=-1) - slope * x.mean(), slope


def _resampled(correct: np.ndarray, seed: int, draws: int):
    """Bootstrap draws over the validation photos (the columns of CORRECT, (points, n_val)),
    the same photos for every point: each point's accuracy per draw, (draws, points), in chunks
    of at most 200 draws."""
    rng = np.random.default_rng(seed)
    for chunk in range(0, draws, 200):
        idx = rng.integers(0, correct.shape[1], (min(200, draws - chunk), correct.shape[1]))
        yield correct[:, idx].mean(axis=-1).T


def fit_trend(points: list[Point], seed: int = 0, draws: int = BOOTSTRAP_DRAWS) -> Trend:
    """The trend through POINTS, and its bootstrap over the validation photos they share."""
    x = np.log([p.n_train for p in points])
    correct = np.stack([p.correct for p in points]).astype(np.float32)  # (points, n_val)
    a, b = _least_squares(x, correct.mean(axis=1))
    out = [np.stack(_least_squares(x, m), axis=1) for m in _resampled(correct, seed, draws)]
    return Trend(float(a), float(b), np.concatenate(out))


def _points(v: float) -> str:
    return f"{100 * v:+.1f}"


@dataclass(frozen=True)
class Backtest:
    """The trend's 2x reading checked on the curve's own points: fitted on the points up to
    N_FROM photos, read at N_TO (the largest fraction's photos, about twice N_FROM), against
    what that fraction measured. ERROR_INTERVAL: measured minus predicted, bootstrapped over
    the validation photos every point shares."""

    n_from: int
    n_to: int
    predicted: float
    measured: float
    error_interval: tuple[float, float]

    @property
    def error(self) -> float:
        return self.measured - self.predicted

    @property
    def holds(self) -> bool:
        """Whether the prediction is within the error's interval (the interval covers zero)."""
        return self.error_interval[0] <= 0.0 <= self.error_interval[1]

    @property
    def sentence(self) -> str:
        low, high = self.error_interval
        return (
            f"checked on this curve: fitted on the points up to {self.n_from:,} photos alone, "
            f"the trend predicted {self.predicted:.3f} at {self.n_to:,} "
            f"({self.n_to / self.n_from:.1f}x); measured {self.measured:.3f}, "
            f"{_points(self.error)} points ({LEVEL:.0%} interval {_points(low)} to "
            f"{_points(high)}): " + ("the reading held" if self.holds else "the reading missed")
        )

    def as_dict(self) -> dict:
        return {
            "n_from": self.n_from,
            "n_to": self.n_to,
            "predicted": self.predicted,
            "measured": self.measured,
            "error": self.error,
            "error_interval": list(self.error_interval),
            "holds": self.holds,
        }


def backtest(points: list[Point], seed: int = 0, draws: int = BOOTSTRAP_DRAWS) -> Backtest | None:
    """The 2x reading checked (see `Backtest`): None unless at least two different photo counts
    lie at or below about half the largest point's (55%, for the rounding of nested fractions)."""
    if not points:
        return None
    last = max(points, key=lambda p: p.n_train)
    earlier = [p for p in points if p.n_train <= 0.55 * last.n_train]
    if len({p.n_train for p in earlier}) < 2:
        return None
    x = np.log([p.n_train for p in earlier])
    correct = np.stack([p.correct for p in earlier] + [last.correct]).astype(np.float32)

    def errors(means):  # means: (..., points + 1), the last column the largest point's
        a, b = _least_squares(x, means[..., :-1])
        return means[..., -1] - np.minimum(a + b * math.log(last.n_train), 1.0)

    measured = float(np.mean(last.correct))
    predicted = measured - float(errors(correct.mean(axis=1)))
    out = np.concatenate([errors(m) for m in _resampled(correct, seed, draws)])
    low, high = np.quantile(out, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return Backtest(
        max(p.n_train for p in earlier),
        last.n_train,
        predicted,
        measured,
        (float(low), float(high)),
    )


@dataclass
class DataCurve:
    """The curve of one configuration: its points, the fractions the budget left out (one
    sentence each), and, from two points on, the trend, the gain at twice the photos and the
    sentence."""

    arch: str
    image_size: int
    epochs: int
    n_full: int  # photos in the whole training split: the gain is read at twice this
    points: list[Point]
    skipped: list[str] = field(default_factory=list)
    sweep_run_id: str | None = None
    plot: Path | None = None

    @cached_property
    def trend(self) -> Trend | None:
        return fit_trend(self.points) if len({p.n_train for p in self.points}) >= 2 else None

    @property
    def gain(self) -> float | None:
        return float(self.trend.gain(self.n_full)) if self.trend else None

    @cached_property
    def backtest(self) -> Backtest | None:
        """The 2x reading checked on these points (`Backtest`), from three fractions on."""
        return backtest(self.points)

    @property
    def gain_interval(self) -> tuple[float, float] | None:
        if not self.trend:
            return None
        draws = self.trend.gain(self.n_full, self.trend.draws[:, 0], self.trend.draws[:, 1])
        return tuple(float(q) for q in np.quantile(draws, [(1 - LEVEL) / 2, (1 + LEVEL) / 2]))

    @property
    def fit_interval(self) -> tuple[float, float] | None:
        """The gain's interval from the fit's residuals (t, n-2 degrees of freedom): None below
        three points. It counts the scatter of the points about the line, seeds included."""
        if not self.trend or len(self.points) < 3:
            return None
        from scipy import stats

        x = np.log([p.n_train for p in self.points])
        y = np.array([p.accuracy for p in self.points])
        resid = y - (self.trend.intercept + self.trend.slope * x)
        se = math.sqrt(resid @ resid / (len(x) - 2) / ((x - x.mean()) @ (x - x.mean())))
        half = stats.t.ppf((1 + LEVEL) / 2, len(x) - 2) * se * math.log(2)
        return (self.gain - half, self.gain + half)

    @property
    def sentence(self) -> str:
        if not self.trend:
            return (
                f"too few fractions ran to draw a curve ({len(self.points)} of "
                f"{len(self.points) + len(self.skipped)}): give it a larger budget"
            )
        low, high = self.gain_interval
        head = HELPS if low > MIN_GAIN else FLAT
        return (
            f"{head} ({_points(self.gain)} points at 2x, {LEVEL:.0%} interval "
            f"{_points(low)} to {_points(high)})"
        )

    def figure(self):
        n = np.array([p.n_train for p in self.points], float)
        fit = extrapolated = None
        if self.trend:
            x = np.geomspace(n.min(), self.n_full, 50)
            fit = (x, self.trend.at(x))
            ext = np.geomspace(self.n_full, 2 * self.n_full, 20)
            extrapolated = (ext, self.trend.at(ext), *self.trend.band(ext))
        title = f"{self.arch} at {self.image_size} px: " + self.sentence
        return plots.data_curve(
            n,
            [p.accuracy for p in self.points],
            np.array([p.interval() for p in self.points]),
            fit,
            extrapolated,
            "\n".join(textwrap.wrap(title, 90)),
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "arch": self.arch,
                "image_size": self.image_size,
                "epochs": self.epochs,
                "n_full": self.n_full,
                "skipped": self.skipped,
                "sentence": self.sentence,
                "gain": self.gain,
                "gain_interval": self.gain_interval,
                "fit_interval": self.fit_interval,
                "backtest": self.backtest.as_dict() if self.backtest else None,
                "points": [
                    {
                        "fraction": p.fraction,
                        "n_train": p.n_train,
                        "n_val": len(p.correct),
                        keys.VAL_ACCURACY: p.accuracy,
                        "run_id": p.run_id,
                        "seconds": p.seconds,
                        "correct": "".join("1" if c else "0" for c in p.correct),
                    }
                    for p in self.points
                ],
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str, sweep_run_id: str | None = None) -> DataCurve:
        d = json.loads(text)
        points = [
            Point(
                p["fraction"],
                p["n_train"],
                np.array([c == "1" for c in p["correct"]]),
                p["run_id"],
                p["seconds"],
            )
            for p in d["points"]
        ]
        return cls(
            d["arch"], d["image_size"], d["epochs"], d["n_full"], points, d["skipped"], sweep_run_id
        )
