"""Read a finished (or running) sweep back from MLflow and compare its architectures.

Each architecture's row is its best trial (chosen on validation), its fit verdict, and, where the
sweep ran repeats, the metric's mean, standard deviation and 95% confidence interval over them.
Rows are ranked by that mean when every architecture has repeats (the best trial's own score is
optimistically biased: it is the maximum of a search), else by the best trial. "within noise"
marks an architecture whose interval overlaps the top one's: the ranking between them is not
established. `--test` adds the held-out test accuracy of the top two and McNemar's exact test
between them (see `heldout`).

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
from catdog import metrics
from catdog.tracking import queries, runs, tags

log = get_logger(__name__)

# Params that describe how a trial ran rather than which model it was.
RUN_PARAMS = {"arch", "tuner", "image_size", "batch_size", "seed", "precision", "pretrained",
              "strategy", "param_count", "epochs", "patience", "n_train", "n_val"}
METRICS = ("val_accuracy", "val_loss", "val_auc")
FORMATS = ("table", "markdown", "csv", "json")


# What each search strategy means for reading a ranking (see catdog.sweep and catdog.race).
STRATEGY_NOTES = {
    "compare": "every architecture had the same share of the budget: an equal-budget comparison",
    "best": "a race: Hyperband gave the architectures that led more trials and epochs, so this "
            "ranks configurations found, not architectures at equal cost",
}


def strategy_note(strategy: str) -> str:
    return STRATEGY_NOTES.get(strategy, strategy)


def lower_is_better(metric: str) -> bool:
    return metric.endswith("loss")


def trial_runs(parent, kind: str = tags.KIND_TRIAL) -> pd.DataFrame:
    """Every finished trial (or repeat) run of a sweep, one row each, with params and metrics."""
    found = queries.search(parent.info.experiment_id,
                           {tags.SWEEP_KEY: parent.data.tags[tags.SWEEP_KEY], tags.KIND: kind},
                           (runs.FINISHED,))
    rows = []
    for r in found:
        row = {"run_id": r.info.run_id, "arch": r.data.tags.get(tags.ARCH),
               "trial_id": r.data.tags.get(tags.TRIAL_ID),
               "best_trial": r.data.tags.get(tags.BEST_TRIAL) == tags.TRUE,
               "fit_verdict": r.data.tags.get(tags.FIT_VERDICT)}
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
    repeats = trial_runs(parent, tags.KIND_REPEAT)
    rows = []
    for arch in archs or present:
        group = trials[trials["arch"] == arch].dropna(subset=[col])
        if group.empty:
            continue
        best = group.loc[group[col].idxmin() if lower_is_better(metric) else group[col].idxmax()]
        # Only the repeats of this row's configuration count (see retrain.run_repeats).
        mine = repeats[(repeats["arch"] == arch) & (repeats["trial_id"] == best["trial_id"])] \
            if not repeats.empty else repeats
        stats = metrics.mean_ci(mine[col].tolist() if col in mine else [])
        rows.append({
            "arch": arch,
            **{m: best.get(f"best_{m}", np.nan) for m in METRICS},
            f"{metric}_mean": stats["mean"],
            f"{metric}_std": stats["std"],
            "ci95_low": stats["ci_low"],
            "ci95_high": stats["ci_high"],
            "repeats": stats["n"],
            "fit_verdict": best.get("fit_verdict") or "-",
            "best_epoch": int(best.get("best_epoch", 0)),
            "gap_best": best.get("gap_best", np.nan),
            "gap_last": best.get("gap_last", np.nan),
            "params": int(float(best.get("param.param_count", -1))),
            "image_size": int(float(best.get("param.image_size", 0))),
            "sec_per_epoch": best.get("seconds_per_epoch", np.nan),
            "trials": len(group),
            "hyperparameters": _hyperparameters(best),
            "run_id": best["run_id"],
            "trial_id": best["trial_id"],
        })
    table = pd.DataFrame(rows)
    by_mean = bool(len(table)) and bool((table["repeats"] >= 2).all())
    table = table.sort_values(f"{metric}_mean" if by_mean else metric,
                              ascending=lower_is_better(metric)).reset_index(drop=True)
    table["vs_top"] = _noise(table)
    table.attrs["sweep_run_id"] = parent.info.run_id
    table.attrs["strategy"] = parent.data.params.get("search_strategy", "compare")
    table.attrs["metric"] = metric
    table.attrs["ranked_by"] = "mean of repeats" if by_mean else "best trial"
    table.attrs["all_trials"] = trials
    table.attrs["repeat_runs"] = repeats
    return table


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


def _fmt(v, spec: str = ".4f") -> str:
    if isinstance(v, (float, np.floating)):
        return "-" if np.isnan(v) else format(float(v), spec)
    return str(v)


def human_view(table: pd.DataFrame) -> pd.DataFrame:
    """The table as people read it: the metric as best trial, mean ± std and 95% interval over
    repeats, how the row stands against the top, and the fit verdict first; numbers rounded."""
    metric = table.attrs.get("metric", "val_accuracy")
    view = pd.DataFrame({"arch": table["arch"]})
    view[f"{metric} (best trial)"] = table[metric].map(_fmt)
    view["mean ± std (repeats)"] = [
        "-" if n < 2 else f"{m:.4f} ± {sd:.4f} ({n})"
        for m, sd, n in zip(table[f"{metric}_mean"], table[f"{metric}_std"], table["repeats"])]
    view["95% CI"] = ["-" if np.isnan(lo) else f"[{lo:.4f}, {hi:.4f}]"
                      for lo, hi in zip(table["ci95_low"], table["ci95_high"])]
    view["vs top"] = table["vs_top"]
    view["fit"] = table["fit_verdict"]
    for c in ("test_accuracy",):
        if c in table:
            view[c] = table[c].map(_fmt)
    view["px"] = table["image_size"]
    for c in [m for m in METRICS if m != metric] + ["best_epoch", "gap_best", "gap_last",
                                                   "params", "sec_per_epoch", "trials"]:
        view[c] = table[c].map(lambda v, c=c: _fmt(v, ".1f" if c == "sec_per_epoch" else ".4f"))
    view["hyperparameters"] = table["hyperparameters"].map(
        lambda d: json.dumps(d, sort_keys=True, default=str))
    return view


def render(table: pd.DataFrame, fmt: str = "table") -> str:
    if fmt not in FORMATS:
        raise CatdogError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "json":
        return json.dumps({"sweep_run_id": table.attrs.get("sweep_run_id"),
                           "metric": table.attrs.get("metric"),
                           "ranked_by": table.attrs.get("ranked_by"),
                           "significance": table.attrs.get("significance"),
                           "rows": json.loads(table.to_json(orient="records"))}, indent=2)
    if fmt == "csv":
        shown = table.copy()
        shown["hyperparameters"] = shown["hyperparameters"].map(
            lambda d: json.dumps(d, sort_keys=True, default=str))
        return shown.to_csv(index=False)
    view = human_view(table)
    if fmt == "markdown":
        head = "| " + " | ".join(view.columns) + " |"
        sep = "|" + "|".join("---" for _ in view.columns) + "|"
        body = ["| " + " | ".join(str(v) for v in row) + " |"
                for row in view.itertuples(index=False)]
        return "\n".join([head, sep, *body])
    return view.to_string(index=False)


def plot(table: pd.DataFrame, path: str | Path) -> Path:
    """Best trial's train and val accuracy curves per architecture, plus a bar chart of the
    metric (bar = best trial, every trial as a dot; with repeats, a diamond at their mean and
    the 95% confidence interval as its error bar)."""
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
    ax_bar.bar(x, table[metric], color=[colors[i % len(colors)] for i in x], alpha=0.6)
    with_ci = table["repeats"] >= 2
    if with_ci.any():
        mean = table.loc[with_ci, f"{metric}_mean"]
        err = np.vstack([mean - table.loc[with_ci, "ci95_low"],
                         table.loc[with_ci, "ci95_high"] - mean])
        ax_bar.errorbar(x[with_ci.to_numpy()], mean, yerr=err, fmt="D", color="k", capsize=5,
                        zorder=4, label="mean of repeats, 95% CI")
        ax_bar.legend(fontsize=7, loc="lower right")
    trials = table.attrs.get("all_trials")
    if trials is not None and f"best_{metric}" in trials:
        for i, arch in enumerate(table["arch"]):
            vals = trials.loc[trials["arch"] == arch, f"best_{metric}"].dropna()
            ax_bar.scatter(np.full(len(vals), i) + np.linspace(-0.2, 0.2, len(vals)), vals,
                           s=12, c="k", zorder=3)
    ax_bar.set_xticks(x, table["arch"], rotation=20)
    ax_bar.set_ylabel(metric)
    shown = np.concatenate([table[c].to_numpy(float) for c in (metric, "ci95_low", "ci95_high")])
    lo = float(np.nanmin(shown)) if len(table) else 0
    if not lower_is_better(metric):
        ax_bar.set_ylim(max(0.0, lo - 0.1), min(1.0, float(np.nanmax(shown)) + 0.05))
    ax_bar.set_title(f"{metric} (bar = best trial, dots = all trials)", fontsize=10)
    ax_bar.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def anytime(parent) -> pd.DataFrame:
    """Best validation accuracy so far against wall-clock minutes since the sweep started, per
    architecture and overall: one row per finished trial, in the order trials finished."""
    trials = trial_runs(parent)
    if trials.empty:
        return trials
    ends = {r.info.run_id: r.info.end_time for r in queries.search(
        parent.info.experiment_id, {tags.SWEEP_KEY: parent.data.tags[tags.SWEEP_KEY],
                                    tags.KIND: tags.KIND_TRIAL}, (runs.FINISHED,))}
    frame = pd.DataFrame({"arch": trials["arch"], "run_id": trials["run_id"],
                          "val_accuracy": trials["best_val_accuracy"]})
    frame["minutes"] = [(ends[r] - parent.info.start_time) / 60000 for r in frame["run_id"]]
    frame = frame.sort_values("minutes").reset_index(drop=True)
    frame["best_so_far_arch"] = frame.groupby("arch")["val_accuracy"].cummax()
    frame["best_so_far"] = frame["val_accuracy"].cummax()
    return frame


def log_anytime(parent_run_id: str) -> str | None:
    """The sweep's anytime plot (best val accuracy so far vs wall-clock, one line per
    architecture, the overall best in black) and its table, logged to the parent run; the
    plot's artifact path."""
    import mlflow

    client = mlflow.MlflowClient()
    parent = client.get_run(parent_run_id)
    frame = anytime(parent)
    if frame.empty:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        png = anytime_plot(frame, Path(tmp) / "anytime.png",
                           parent.data.params.get("search_strategy", "compare"))
        csv = Path(tmp) / "anytime.csv"
        frame.to_csv(csv, index=False)
        client.log_artifact(parent_run_id, str(png))
        client.log_artifact(parent_run_id, str(csv))
    return png.name


def anytime_plot(frame: pd.DataFrame, path: Path, strategy: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for arch, rows in frame.groupby("arch"):
        ax.step(rows["minutes"], rows["best_so_far_arch"], where="post", marker="o",
                markersize=3, label=arch)
    ax.step(frame["minutes"], frame["best_so_far"], where="post", color="k", linewidth=2,
            alpha=0.6, label="sweep best")
    ax.set_xlabel("wall-clock minutes since the sweep started")
    ax.set_ylabel("best val accuracy so far")
    ax.set_title(f"anytime: best val accuracy so far ({strategy} strategy: "
                 f"{'equal budgets' if strategy == 'compare' else 'a race'})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=100, bbox_inches="tight")
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
    significance: dict | None = None  # McNemar between the top two on test (with test=True)

    @property
    def sweep_run_id(self) -> str:
        return self.table.attrs["sweep_run_id"]


def with_test(table: pd.DataFrame) -> dict | None:
    """Evaluate the top two rows' models on the held-out test split (once; read back after) and
    test them against each other. Adds `test_accuracy` to those rows; returns McNemar's result.
    They were chosen on validation, so touching test here chooses nothing."""
    import mlflow

    from catdog import heldout, runtime

    heldout.require_validation_metric(table.attrs.get("metric", "val_accuracy"))
    runtime.start()
    client = mlflow.MlflowClient()
    parent = client.get_run(table.attrs["sweep_run_id"])
    sig = heldout.runner_up_significance(table, parent, client) if len(table) > 1 else None
    table["test_accuracy"] = np.nan
    for i in range(len(table)):
        if i == 0 or (sig and table.iloc[i]["arch"] == sig["b"]):
            frame = heldout.test_predictions(client.get_run(table.iloc[i]["run_id"]), parent)
            table.loc[i, "test_accuracy"] = heldout.test_metrics(frame)["accuracy"]
    table.attrs["significance"] = sig
    return sig


def compare_and_plot(sweep: str = "latest", archs: tuple[str, ...] = (),
                     metric: str = "val_accuracy", experiment: str = "catdog",
                     plot_path: str | Path = "comparison.png", test: bool = False) -> Comparison:
    """`catdog compare`: the table, its plot written to `plot_path`, and, when the comparison
    covers the whole sweep, both logged to the sweep's parent run (refreshing what the sweep
    logged at its end). A comparison of some architectures never overwrites the sweep's own.
    `test=True` adds the top two's test accuracy and McNemar's test between them."""
    table = compare(sweep, archs, metric, experiment)
    significance = with_test(table) if test else None
    path = plot(table, plot_path)
    whole = not archs or set(archs) >= set(table.attrs["all_trials"]["arch"])
    logged = None
    if whole:
        log_to_parent(table.attrs["sweep_run_id"], table)
        logged = table.attrs["sweep_run_id"]
    return Comparison(table, path, logged, significance)
