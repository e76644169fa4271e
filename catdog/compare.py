"""Read a finished (or running) sweep back from MLflow and compare its architectures.

Nothing here keeps a record of its own: every figure comes from the sweep's runs. The comparison
of a whole sweep (table and plot) is logged back to its parent run, so `mlflow ui` shows the same
comparison; a comparison of some of its architectures is only shown and drawn.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from catdog.errors import CatdogError
from catdog.log import get_logger
from catdog.tracking import queries, tags

log = get_logger(__name__)

# Params that describe how a trial ran rather than which model it was.
RUN_PARAMS = {"arch", "tuner", "image_size", "batch_size", "seed", "precision", "pretrained",
              "strategy", "param_count", "epochs", "patience", "n_train", "n_val"}
METRICS = ("val_accuracy", "val_loss", "val_auc")
FORMATS = ("table", "markdown", "csv", "json")


def lower_is_better(metric: str) -> bool:
    return metric.endswith("loss")


def trial_runs(parent) -> pd.DataFrame:
    """Every finished trial run of a sweep, one row each, with params and summary metrics."""
    found = queries.sweep_trials(parent.info.experiment_id, parent.data.tags[tags.SWEEP_KEY])
    rows = []
    for r in found:
        row = {"run_id": r.info.run_id, "arch": r.data.tags.get(tags.ARCH),
               "trial_id": r.data.tags.get(tags.TRIAL_ID),
               "best_trial": r.data.tags.get(tags.BEST_TRIAL) == tags.TRUE}
        row.update({f"param.{k}": v for k, v in r.data.params.items()})
        row.update(r.data.metrics)
        rows.append(row)
    return pd.DataFrame(rows)


def _hyperparameters(row: pd.Series) -> dict:
    out = {}
    for col, value in row.items():
        if col.startswith("param.") and isinstance(value, str):
            name = col[len("param."):]
            if name not in RUN_PARAMS and not name.startswith("tuner/"):
                out[name] = _parse(value)
    return out


def _parse(value: str):
    try:
        return json.loads(value)
    except (json.JSONDecodeError, TypeError):
        return {"True": True, "False": False}.get(value, value)


def compare(sweep: str = "latest", archs: tuple[str, ...] = (), metric: str = "val_accuracy",
            experiment: str = "catdog") -> pd.DataFrame:
    """One row per architecture (its best trial by `metric` on validation), sorted best first."""
    parent = queries.find_sweep(sweep, experiment)
    trials = trial_runs(parent)
    if trials.empty:
        raise CatdogError(f"sweep {parent.info.run_id} has no finished trials yet")
    present = sorted(trials["arch"].unique())
    for a in archs:
        if a not in present:
            raise CatdogError(f"architecture {a!r} is not in sweep {parent.info.run_id}; "
                              f"it has: {', '.join(present)}")
    col = f"best_{metric}"
    if col not in trials:
        known = sorted(c[len("best_"):] for c in trials.columns if c.startswith("best_val"))
        raise CatdogError(f"unknown metric {metric!r}; choose one of {', '.join(known)}")
    rows = []
    for arch in archs or present:
        group = trials[trials["arch"] == arch].dropna(subset=[col])
        if group.empty:
            continue
        best = group.loc[group[col].idxmin() if lower_is_better(metric) else group[col].idxmax()]
        hps = _hyperparameters(best)
        same = group[group.apply(lambda r: _hyperparameters(r) == hps, axis=1)]
        rows.append({
            "arch": arch,
            **{m: best.get(f"best_{m}", np.nan) for m in METRICS},
            f"{metric}_std": float(same[col].std()) if len(same) > 1 else np.nan,
            "repeats": len(same),
            "best_epoch": int(best.get("best_epoch", 0)),
            "gap_best": best.get("gap_best", np.nan),
            "gap_last": best.get("gap_last", np.nan),
            "params": int(float(best.get("param.param_count", -1))),
            "sec_per_epoch": best.get("seconds_per_epoch", np.nan),
            "trials": len(group),
            "hyperparameters": hps,
            "run_id": best["run_id"],
        })
    table = pd.DataFrame(rows).sort_values(metric, ascending=lower_is_better(metric))
    table.attrs["sweep_run_id"] = parent.info.run_id
    table.attrs["metric"] = metric
    table.attrs["all_trials"] = trials
    return table.reset_index(drop=True)


def render(table: pd.DataFrame, fmt: str = "table") -> str:
    if fmt not in FORMATS:
        raise CatdogError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    shown = table.copy()
    shown["hyperparameters"] = shown["hyperparameters"].map(
        lambda d: json.dumps(d, sort_keys=True, default=str))
    if fmt == "json":
        return json.dumps({"sweep_run_id": table.attrs.get("sweep_run_id"),
                           "metric": table.attrs.get("metric"),
                           "rows": json.loads(table.to_json(orient="records"))}, indent=2)
    if fmt == "csv":
        return shown.to_csv(index=False)
    numeric = {c: (lambda v: f"{v:.4f}" if isinstance(v, float) and not np.isnan(v) else
                   ("-" if isinstance(v, float) else str(v)))
               for c in shown.columns}
    view = shown.drop(columns=["run_id"]).copy()
    for c in view.columns:
        if view[c].dtype.kind == "f":
            view[c] = view[c].map(numeric[c])
    if fmt == "markdown":
        head = "| " + " | ".join(view.columns) + " |"
        sep = "|" + "|".join("---" for _ in view.columns) + "|"
        body = ["| " + " | ".join(str(v) for v in row) + " |" for row in view.itertuples(index=False)]
        return "\n".join([head, sep, *body])
    return view.to_string(index=False)


def plot(table: pd.DataFrame, path: str | Path) -> Path:
    """Best trial's train and val accuracy curves per architecture, plus a bar chart of the
    metric (every trial as a dot; error bars = std over repeated runs of the best config)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    client = mlflow.MlflowClient()
    metric = table.attrs.get("metric", "val_accuracy")
    fig, (ax_curves, ax_bar) = plt.subplots(1, 2, figsize=(13, 4.8),
                                            gridspec_kw={"width_ratios": [3, 2]})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, row in table.iterrows():
        c = colors[i % len(colors)]
        for name, style in (("train_accuracy", "--"), ("val_accuracy", "-")):
            hist = client.get_metric_history(row["run_id"], name)
            if hist:
                steps = [h.step + 1 for h in hist]
                ax_curves.plot(steps, [h.value for h in hist], style, color=c,
                               label=f"{row['arch']} {name.split('_')[0]}")
    ax_curves.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax_curves.set_xlabel("epoch")
    ax_curves.set_ylabel("accuracy")
    ax_curves.set_title("best trial per architecture: train (dashed) vs val (solid)")
    ax_curves.grid(alpha=0.3)
    ax_curves.legend(fontsize=7, ncol=2)

    x = np.arange(len(table))
    err = table[f"{metric}_std"].fillna(0).to_numpy()
    ax_bar.bar(x, table[metric], yerr=err, capsize=4,
               color=[colors[i % len(colors)] for i in x], alpha=0.8)
    trials = table.attrs.get("all_trials")
    if trials is not None and f"best_{metric}" in trials:
        for i, arch in enumerate(table["arch"]):
            vals = trials.loc[trials["arch"] == arch, f"best_{metric}"].dropna()
            ax_bar.scatter(np.full(len(vals), i) + np.linspace(-0.2, 0.2, len(vals)), vals,
                           s=12, c="k", zorder=3)
    ax_bar.set_xticks(x, table["arch"], rotation=20)
    ax_bar.set_ylabel(metric)
    lo = float(np.nanmin(table[metric])) if len(table) else 0
    if not lower_is_better(metric):
        ax_bar.set_ylim(max(0.0, lo - 0.1), min(1.0, float(np.nanmax(table[metric])) + 0.05))
    ax_bar.set_title(f"{metric} (bar = best trial, dots = all trials)")
    ax_bar.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def log_to_parent(parent_run_id: str, table: pd.DataFrame | None = None) -> pd.DataFrame | None:
    """Log the comparison table (CSV) and plot to the sweep's parent run."""
    import mlflow

    client = mlflow.MlflowClient()
    if table is None:
        try:
            table = compare(parent_run_id)
        except CatdogError as exc:
            log.info("no comparison logged: %s", exc)
            return None
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "comparison.csv"
        csv.write_text(render(table, "csv"))
        client.log_artifact(parent_run_id, str(csv))
        client.log_artifact(parent_run_id, str(plot(table, Path(tmp) / "comparison.png")))
    best = table.iloc[0]
    client.set_tag(parent_run_id, tags.BEST_ARCH, best["arch"])
    client.set_tag(parent_run_id, tags.BEST_RUN_ID, best["run_id"])
    return table


@dataclass
class Comparison:
    table: pd.DataFrame
    plot: Path
    logged_to: str | None  # the sweep's parent run, when the whole sweep was compared

    @property
    def sweep_run_id(self) -> str:
        return self.table.attrs["sweep_run_id"]


def compare_and_plot(sweep: str = "latest", archs: tuple[str, ...] = (),
                     metric: str = "val_accuracy", experiment: str = "catdog",
                     plot_path: str | Path = "comparison.png") -> Comparison:
    """`catdog compare`: the table, its plot written to `plot_path`, and, when the comparison
    covers the whole sweep, both logged to the sweep's parent run (refreshing what the sweep
    logged at its end). A comparison of some architectures never overwrites the sweep's own."""
    table = compare(sweep, archs, metric, experiment)
    path = plot(table, plot_path)
    whole = not archs or set(archs) >= set(table.attrs["all_trials"]["arch"])
    logged = None
    if whole:
        log_to_parent(table.attrs["sweep_run_id"], table)
        logged = table.attrs["sweep_run_id"]
    return Comparison(table, path, logged)
