"""Rendering a sweep's comparison: the table as people read it (text, markdown, CSV, JSON), its
plot, and the anytime plot of a search; logged back to the sweep's parent run so `mlflow ui`
shows the same comparison. What is compared and which run is the champion is decided in
`catdog.choose`; nothing here chooses or keeps a record of its own.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from catdog import choose, keys
from catdog.errors import CatdogError
from catdog.log import get_logger
from catdog.tracking import runlog, tags

log = get_logger(__name__)

FORMATS = ("table", "markdown", "csv", "json")


def _fmt(v, spec: str = ".4f") -> str:
    if isinstance(v, (float, np.floating)):
        return "-" if np.isnan(v) else format(float(v), spec)
    return str(v)


def human_view(table: pd.DataFrame) -> pd.DataFrame:
    """The table as people read it: the metric as best trial, mean ± std and 95% interval over
    repeats, how the row stands against the top, and the fit verdict first; then the other
    figures, and what the model costs to run here (ms per image alone and in a batch of 32, its
    size in MB); numbers rounded."""
    metric = table.attrs.get("metric", keys.OBJECTIVE)
    view = pd.DataFrame({"arch": table["arch"]})
    view[f"{metric} (best trial)"] = table[metric].map(_fmt)
    view["mean ± std (repeats)"] = [
        "-" if n < 2 else f"{m:.4f} ± {sd:.4f} ({n})"
        for m, sd, n in zip(table[f"{metric}_mean"], table[f"{metric}_std"], table["repeats"])
    ]
    view["95% CI"] = [
        "-" if np.isnan(lo) else f"[{lo:.4f}, {hi:.4f}]"
        for lo, hi in zip(table["ci95_low"], table["ci95_high"])
    ]
    view["vs top"] = table["vs_top"]
    view["fit"] = table["fit_verdict"]
    for c in (keys.TEST_ACCURACY,):
        if c in table:
            view[c] = table[c].map(_fmt)
    view["px"] = table["image_size"]
    for c in [m for m in choose.METRICS if m != metric] + [
        keys.BEST_EPOCH,
        "gap_best",
        "gap_last",
        "params",
        "sec_per_epoch",
        "trials",
    ]:
        view[c] = table[c].map(lambda v, c=c: _fmt(v, ".1f" if c == "sec_per_epoch" else ".4f"))
    for c in (keys.MS_PER_IMAGE, keys.MS_PER_IMAGE_BATCH):
        view[c] = table[c].map(lambda v: _fmt(v, ".2f"))
    view["model_mb"] = (table[keys.MODEL_BYTES] / 1e6).map(lambda v: _fmt(v, ".2f"))
    view["hyperparameters"] = table["hyperparameters"].map(
        lambda d: json.dumps(d, sort_keys=True, default=str)
    )
    return view


def render(table: pd.DataFrame, fmt: str = "table") -> str:
    if fmt not in FORMATS:
        raise CatdogError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "json":
        return json.dumps(
            {
                "sweep_run_id": table.attrs.get("sweep_run_id"),
                "metric": table.attrs.get("metric"),
                "ranked_by": table.attrs.get("ranked_by"),
                "significance": table.attrs.get("significance"),
                "rows": json.loads(table.to_json(orient="records")),
            },
            indent=2,
            ensure_ascii=False,
        )
    if fmt == "csv":
        shown = table.copy()
        shown["hyperparameters"] = shown["hyperparameters"].map(
            lambda d: json.dumps(d, sort_keys=True, default=str)
        )
        return shown.to_csv(index=False)
    view = human_view(table)
    if fmt == "markdown":
        head = "| " + " | ".join(view.columns) + " |"
        sep = "|" + "|".join("---" for _ in view.columns) + "|"
        body = [
            "| " + " | ".join(str(v) for v in row) + " |" for row in view.itertuples(index=False)
        ]
        return "\n".join([head, sep, *body])
    return view.to_string(index=False)


def plot(table: pd.DataFrame, path: str | Path) -> Path:
    """Best trial's train and val accuracy curves per architecture, plus a bar chart of the
    metric (bar = best trial, every trial as a dot; with repeats, a diamond at their mean and
    the 95% confidence interval as its error bar)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = table.attrs.get("metric", keys.OBJECTIVE)
    fig, (ax_curves, ax_bar) = plt.subplots(
        1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [3, 2]}
    )
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, row in table.iterrows():
        c = colors[i % len(colors)]
        for name, style in (("train_accuracy", "--"), (keys.VAL_ACCURACY, "-")):
            hist = runlog.history(row["run_id"], name)
            if hist:
                steps = [step + 1 for step, _ in hist]
                ax_curves.plot(
                    steps,
                    [value for _, value in hist],
                    style,
                    color=c,
                    label=f"{row['arch']} {name.split('_')[0]}",
                )
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
        err = np.vstack(
            [mean - table.loc[with_ci, "ci95_low"], table.loc[with_ci, "ci95_high"] - mean]
        )
        ax_bar.errorbar(
            x[with_ci.to_numpy()],
            mean,
            yerr=err,
            fmt="D",
            color="k",
            capsize=5,
            zorder=4,
            label="mean of repeats, 95% CI",
        )
        ax_bar.legend(fontsize=7, loc="lower right")
    trials = table.attrs.get("all_trials")
    if trials is not None and f"best_{metric}" in trials:
        for i, arch in enumerate(table["arch"]):
            vals = trials.loc[trials["arch"] == arch, f"best_{metric}"].dropna()
            ax_bar.scatter(
                np.full(len(vals), i) + np.linspace(-0.2, 0.2, len(vals)),
                vals,
                s=12,
                c="k",
                zorder=3,
            )
    ax_bar.set_xticks(x, table["arch"], rotation=20)
    ax_bar.set_ylabel(metric)
    shown = np.concatenate([table[c].to_numpy(float) for c in (metric, "ci95_low", "ci95_high")])
    lo = float(np.nanmin(shown)) if len(table) else 0
    if not choose.lower_is_better(metric):
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
    """The sweep's objective (val accuracy, or balanced accuracy on imbalanced data), best so
    far, against wall-clock minutes since the sweep started, per architecture and overall: one
    row per finished trial, in the order trials finished."""
    trials = choose.trial_runs(parent)
    if trials.empty:
        return trials
    metric = choose.objective(parent)
    frame = pd.DataFrame(
        {"arch": trials["arch"], "run_id": trials["run_id"], metric: trials[keys.best(metric)]}
    )
    frame["minutes"] = (trials["end_time"] - parent.info.start_time) / 60000
    frame = frame.sort_values("minutes").reset_index(drop=True)
    frame["best_so_far_arch"] = frame.groupby("arch")[metric].cummax()
    frame["best_so_far"] = frame[metric].cummax()
    frame.attrs["metric"] = metric
    return frame


def log_anytime(parent_run_id: str) -> str | None:
    """The sweep's anytime plot (best val accuracy so far vs wall-clock, one line per
    architecture, the overall best in black) and its table, logged to the parent run; the
    plot's artifact path."""
    parent = runlog.get(parent_run_id)
    frame = anytime(parent)
    if frame.empty:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        png = anytime_plot(
            frame,
            Path(tmp) / "anytime.png",
            parent.data.params.get(keys.SEARCH_STRATEGY, "compare"),
        )
        csv = Path(tmp) / "anytime.csv"
        frame.to_csv(csv, index=False)
        runlog.log_file(png, parent_run_id)
        runlog.log_file(csv, parent_run_id)
    return png.name


def anytime_plot(frame: pd.DataFrame, path: Path, strategy: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for arch, rows in frame.groupby("arch"):
        ax.step(
            rows["minutes"],
            rows["best_so_far_arch"],
            where="post",
            marker="o",
            markersize=3,
            label=arch,
        )
    ax.step(
        frame["minutes"],
        frame["best_so_far"],
        where="post",
        color="k",
        linewidth=2,
        alpha=0.6,
        label="sweep best",
    )
    ax.set_xlabel("wall-clock minutes since the sweep started")
    shown = frame.attrs.get("metric", keys.OBJECTIVE).replace("_", " ")  # "val accuracy"
    ax.set_ylabel(f"best {shown} so far")
    ax.set_title(f"anytime: best {shown} so far (the {strategy} strategy)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def log_to_parent(parent_run_id: str, table: pd.DataFrame | None = None) -> pd.DataFrame | None:
    """Log the comparison table (CSV) and plot to the sweep's parent run."""
    if table is None:
        try:
            table = choose.table(parent_run_id)
        except CatdogError as exc:
            log.info("no comparison logged: %s", exc)
            return None
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "comparison.csv"
        csv.write_text(render(table, "csv"))
        runlog.log_file(csv, parent_run_id)
        runlog.log_file(plot(table, Path(tmp) / "comparison.png"), parent_run_id)
    best = table.iloc[0]
    runlog.set_tag(parent_run_id, tags.BEST_ARCH, best["arch"])
    runlog.set_tag(parent_run_id, tags.BEST_RUN_ID, best["run_id"])
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


def compare_and_plot(
    sweep: str = "latest",
    archs: tuple[str, ...] = (),
    metric: str | None = None,
    experiment: str | None = None,
    plot_path: str | Path = "comparison.png",
    test: bool = False,
) -> Comparison:
    """`catdog compare`: the table, its plot written to `plot_path`, and, when the comparison
    covers the whole sweep, both logged to the sweep's parent run (refreshing what the sweep
    logged at its end). A comparison of some architectures never overwrites the sweep's own.
    METRIC None: the sweep's objective (`choose.objective`). `test=True` adds the top two's test
    accuracy and McNemar's test between them."""
    from catdog import heldout

    table = choose.table(sweep, archs, metric, experiment)
    significance = heldout.with_test(table) if test else None
    path = plot(table, plot_path)
    whole = not archs or set(archs) >= set(table.attrs["all_trials"]["arch"])
    logged = None
    if whole:
        log_to_parent(table.attrs["sweep_run_id"], table)
        logged = table.attrs["sweep_run_id"]
    return Comparison(table, path, logged, significance)
