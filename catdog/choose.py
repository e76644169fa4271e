"""Choosing: the comparison table of a sweep and the rule for its champion.

Each architecture's row is its best trial (chosen on validation), its fit verdict, and, where the
sweep ran repeats, the metric's mean, standard deviation and 95% confidence interval over them.
Rows are ranked by that mean when every architecture has repeats (the best trial's own score is
optimistically biased: it is the maximum of a search), else by the best trial. "within noise"
marks an architecture whose interval overlaps the top one's.

The champion is the top row's configuration, and what ships of it is its final fit on
train+val when the sweep made one, else its best trial (`champion`). `retrain`, `register`,
`report` and the CLI all ask here; `compare` only renders what was chosen.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from catdog import keys, metrics
from catdog.errors import CatdogError
from catdog.log import get_logger
from catdog.tracking import queries, runlog, runs, tags

log = get_logger(__name__)

METRICS = (keys.VAL_ACCURACY, "val_loss", "val_auc")
# What the best trial's model costs to run here, measured when it was logged (NaN for a run
# logged before these were measured).
COST = (keys.MS_PER_IMAGE, keys.MS_PER_IMAGE_BATCH, keys.MODEL_BYTES)


def lower_is_better(metric: str) -> bool:
    return metric.endswith("loss")


def trial_runs(parent, kind: str = tags.KIND_TRIAL) -> pd.DataFrame:
    """Every finished trial (or repeat) run of a sweep, one row each, with params and metrics."""
    found = queries.search(
        parent.info.experiment_id,
        {tags.SWEEP_KEY: parent.data.tags[tags.SWEEP_KEY], tags.KIND: kind},
        (runs.FINISHED,),
    )
    rows = []
    for r in found:
        row = {
            "run_id": r.info.run_id,
            "arch": r.data.tags.get(tags.ARCH),
            "trial_id": r.data.tags.get(tags.TRIAL_ID),
            "best_trial": r.data.tags.get(tags.BEST_TRIAL) == tags.TRUE,
            "fit_verdict": r.data.tags.get(tags.FIT_VERDICT),
            "end_time": r.info.end_time,
        }
        row.update({f"param.{k}": v for k, v in r.data.params.items()})
        row.update(r.data.metrics)
        rows.append(row)
    return pd.DataFrame(rows)


def _hyperparameters(row: pd.Series) -> dict:
    params = {
        col[len("param.") :]: value
        for col, value in row.items()
        if col.startswith("param.") and isinstance(value, str)
    }
    return parsed_hyperparameters(params)


def parsed_hyperparameters(params: dict[str, str]) -> dict:
    """The hyperparameters among a run's PARAMS (MLflow keeps strings), as the values they were:
    numbers, booleans, strings."""
    return {k: _parse(v) for k, v in keys.hyperparameters(params).items()}


def _parse(value: str):
    try:
        return json.loads(value)
    except (json.JSONDecodeError, TypeError):
        return {"True": True, "False": False}.get(value, value)


def objective(parent) -> str:
    """The validation metric the sweep of PARENT (its parent run) searched and chose on: balanced
    accuracy where its dataset was imbalanced, else val accuracy (as every sweep logged before
    the objective was recorded chose)."""
    return parent.data.params.get(keys.SWEEP_OBJECTIVE, keys.OBJECTIVE)


def table(
    sweep: str = "latest",
    archs: tuple[str, ...] = (),
    metric: str | None = None,
    experiment: str | None = None,
) -> pd.DataFrame:
    """One row per architecture (its best trial by `metric` on validation; None: the sweep's
    `objective`), sorted best first."""
    parent = queries.find_sweep(sweep, experiment)
    metric = metric or objective(parent)
    trials = trial_runs(parent)
    if trials.empty:
        raise CatdogError(f"sweep {parent.info.run_id} has no finished trials yet")
    present = sorted(trials["arch"].unique())
    for a in archs:
        if a not in present:
            raise CatdogError(
                f"architecture {a!r} is not in sweep {parent.info.run_id}; "
                f"it has: {', '.join(present)}"
            )
    col = keys.best(metric)
    if col not in trials:
        known = sorted(c[len("best_") :] for c in trials.columns if c.startswith("best_val"))
        raise CatdogError(f"unknown metric {metric!r}; choose one of {', '.join(known)}")
    repeats = trial_runs(parent, tags.KIND_REPEAT)
    rows = [
        row
        for arch in archs or present
        if (row := _row(trials[trials["arch"] == arch].dropna(subset=[col]), repeats, arch, metric))
        is not None
    ]
    out = pd.DataFrame(rows)
    by_mean = bool(len(out)) and bool((out["repeats"] >= 2).all())
    out = out.sort_values(
        f"{metric}_mean" if by_mean else metric, ascending=lower_is_better(metric)
    ).reset_index(drop=True)
    out["vs_top"] = _noise(out)
    out.attrs.update(
        sweep_run_id=parent.info.run_id,
        metric=metric,
        strategy=parent.data.params.get(keys.SEARCH_STRATEGY, "compare"),
        ranked_by="mean of repeats" if by_mean else "best trial",
        all_trials=trials,
        repeat_runs=repeats,
    )
    return out


def _row(group: pd.DataFrame, repeats: pd.DataFrame, arch: str, metric: str) -> dict | None:
    if group.empty:
        return None
    col = keys.best(metric)
    best = group.loc[group[col].idxmin() if lower_is_better(metric) else group[col].idxmax()]
    # Only the repeats of this row's configuration count (see retrain.run_repeats).
    mine = (
        repeats[(repeats["arch"] == arch) & (repeats["trial_id"] == best["trial_id"])]
        if not repeats.empty
        else repeats
    )
    stats = metrics.mean_ci(mine[col].tolist() if col in mine else [])
    return {
        "arch": arch,
        **{m: best.get(keys.best(m), np.nan) for m in dict.fromkeys((*METRICS, metric))},
        f"{metric}_mean": stats["mean"],
        f"{metric}_std": stats["std"],
        "ci95_low": stats["ci_low"],
        "ci95_high": stats["ci_high"],
        "repeats": stats["n"],
        "fit_verdict": best.get("fit_verdict") or "-",
        keys.BEST_EPOCH: int(best.get(keys.BEST_EPOCH, 0)),
        "gap_best": best.get("gap_best", np.nan),
        "gap_last": best.get("gap_last", np.nan),
        "params": _int(best.get(f"param.{keys.PARAM_COUNT}"), -1),
        "image_size": _int(best.get(f"param.{keys.IMAGE_SIZE}"), 0),
        "sec_per_epoch": best.get(keys.SECONDS_PER_EPOCH, np.nan),
        **{k: best.get(k, np.nan) for k in COST},
        "trials": len(group),
        "hyperparameters": _hyperparameters(best),
        "run_id": best["run_id"],
        "trial_id": best["trial_id"],
    }


def _int(value, missing: int) -> int:
    """A param read back as an int (MLflow keeps params as text; a run without it is NaN)."""
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return missing


def _noise(table: pd.DataFrame) -> list[str]:
    """For each row below the top: "within noise" if its 95% interval overlaps the top row's,
    "behind" if it lies entirely on the worse side, "no repeats" where an interval is missing."""
    if table.empty:
        return []
    top = table.iloc[0]
    out = ["top"]
    for _, row in table.iloc[1:].iterrows():
        if np.isnan(top["ci95_low"]) or np.isnan(row["ci95_low"]):
            out.append("no repeats")
        elif row["ci95_high"] >= top["ci95_low"] and row["ci95_low"] <= top["ci95_high"]:
            out.append("within noise")
        else:
            out.append("behind")
    return out


@dataclass
class Champion:
    """The sweep's choice: the top row's configuration, and the run that ships it."""

    row: pd.Series  # the top row of `table`
    run: object  # its final fit (train+val) if the sweep made one, else its best trial's run
    parent: object  # the sweep's parent run

    @property
    def arch(self) -> str:
        return self.row["arch"]

    @property
    def final(self) -> bool:
        return self.run.info.run_id != self.row["run_id"]


def final_run(parent, arch: str, trial_id: str):
    """The finished final fit (train+val) of ARCH's trial TRIAL_ID in this sweep, or None."""
    found = queries.search(
        parent.info.experiment_id,
        {
            tags.SWEEP_KEY: parent.data.tags.get(tags.SWEEP_KEY),
            tags.KIND: tags.KIND_FINAL,
            tags.ARCH: arch,
            tags.TRIAL_ID: str(trial_id),
        },
        (runs.FINISHED,),
    )
    return found[-1] if found else None


def accuracy_interval(accuracy: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """The Wilson interval of an accuracy measured on N images (SciPy): how far a test figure
    could move on another draw of N photos."""
    from scipy.stats import binomtest

    ci = binomtest(round(accuracy * n), n).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def champion(table: pd.DataFrame) -> Champion:
    """The one champion rule: the final fit of the top row's trial, else that trial."""
    top = table.iloc[0]
    parent = runlog.get(table.attrs["sweep_run_id"])
    run = final_run(parent, top["arch"], top["trial_id"]) or runlog.get(top["run_id"])
    return Champion(top, run, parent)
