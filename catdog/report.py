"""`catdog report`: one self-contained HTML file about a sweep, for people to read.

It holds the comparison table (best trial, mean ± std and 95% CI over repeats, the fit verdicts,
what each model costs to run here, with a plot of accuracy against it), each architecture's
learning curves, whether more photos would help (when `catdog curve` drew the data curve), the
champion's test confusion matrix and ROC, McNemar's test between the champion and the runner-up,
the champion's most confidently wrong test photos, and Grad-CAM maps over a few right and wrong
ones. Every image is inlined (base64), so the file can be mailed or opened anywhere; it is also
logged to the sweep's parent run as `report.html`.

The champion is the top row of `compare` (chosen on validation); the test split is touched only
for it and the runner-up, through `heldout`, which evaluates each once, as the model ships: with
flip TTA when it is part of it, so the page shows the figure `register` and the served model give.

`gather_report` collects what the page shows as plain values; `render_report` lays it out through
the Jinja2 template catdog/templates/report.html.j2 (autoescaped; it holds the CSS and the script
that lets a headless browser count the decoded images).
"""

from __future__ import annotations

import base64
import functools
import io
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

import catdog
from catdog import choose, compare, curve, heldout, keys, metrics, plots
from catdog.log import format_seconds, get_logger
from catdog.search import strategies
from catdog.tracking import modelstore, runlog, store, tags

log = get_logger(__name__)

WRONG_SHOWN = 8
SALIENCY_SHOWN = 3  # right and wrong each
THUMBNAIL = 200

TEMPLATE = "report.html.j2"  # in catdog/templates/, with the page's CSS and status script


def _data_uri(data: bytes, mime: str = "image/png") -> str:
    """An image inlined as a data: URI, for an <img src> in the template."""
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _history(run_id: str) -> tuple[dict[str, list[float]], int]:
    """A run's per-epoch history, and the step it starts at (a Hyperband continuation starts
    where the trial it continues stopped)."""
    out, first = {}, 0
    for key, name in (
        ("loss", "train_loss"),
        ("accuracy", "train_accuracy"),
        ("val_loss", "val_loss"),
        (keys.VAL_ACCURACY, keys.VAL_ACCURACY),
    ):
        hist = runlog.history(run_id, name)
        if hist:
            out[key] = [value for _, value in hist]
            first = hist[0][0]
    return out, first


def _thumbnail(path: Path) -> bytes:
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        img.thumbnail((THUMBNAIL * 2, THUMBNAIL * 2))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def _confidence(frame: pd.DataFrame) -> pd.Series:
    """How sure the model was of the class it predicted: that class's probability."""
    return pd.Series(heldout.probabilities(frame).max(axis=1), index=frame.index)


def _wrong_photos(frame: pd.DataFrame, root: Path) -> dict:
    """How many test photos the champion got wrong, and the ones it was surest about."""
    right = heldout.correct(frame)
    wrong = frame[~right].assign(confidence=_confidence(frame)[~right])
    called = heldout.classes_of(frame)
    photos = []
    for _, row in wrong.sort_values("confidence", ascending=False).head(WRONG_SHOWN).iterrows():
        guess = called[int(np.argmax([row[keys.probability(c)] for c in called]))]
        photos.append(
            {
                "src": _data_uri(_thumbnail(root / row["path"]), "image/jpeg"),
                "caption": f"a {row[keys.LABEL]} called {guess} "
                f"({keys.probability(guess)} {row[keys.probability(guess)]:.3f})",
                "path": str(row["path"]),
            }
        )
    return {"n_wrong": len(wrong), "photos": photos}


def _saliency(model, frame: pd.DataFrame, root: Path, size: int) -> bytes | None:
    from catdog import saliency
    from catdog.inference import to_pixels

    right, conf = heldout.correct(frame), _confidence(frame)
    picks = list(frame[right].assign(c=conf[right]).nlargest(SALIENCY_SHOWN, "c").index) + list(
        frame[~right].assign(c=conf[~right]).nlargest(SALIENCY_SHOWN, "c").index
    )
    if not picks:
        return None
    rows = frame.loc[picks]
    pixels, errors = to_pixels([(root / p).read_bytes() for p in rows["path"]], size)
    if any(errors):
        return None
    maps, method = saliency.heatmaps(model, pixels)
    classes = heldout.classes_of(frame)
    captions = []
    for i, (_, row) in zip(picks, rows.iterrows()):
        guess = classes[int(np.argmax([row[keys.probability(c)] for c in classes]))]
        captions.append(
            f"{'right' if right[i] else 'WRONG'}: {row[keys.LABEL]}\n"
            f"{keys.probability(guess)} {row[keys.probability(guess)]:.2f}"
        )
    return plots.png_bytes(
        plots.saliency_grid(
            pixels,
            maps,
            captions,
            f"{method}: where the champion looked (at the class it predicted)",
        )
    )


def gather_report(
    sweep: str = "latest", metric: str | None = None, experiment: str | None = None
) -> dict:
    """Everything the report shows, as plain values: names, sentences, numbers, table markup and
    figures as data: URIs. `render_report` turns it into the page. METRIC None: the sweep's
    objective (`choose.objective`)."""
    from catdog.inference import load_classifier

    table = choose.table(sweep, (), metric, experiment)
    metric = table.attrs["metric"]
    sig = heldout.with_test(table)
    chosen = choose.champion(table)  # what ships: the final fit when the sweep made one
    parent, champion, champ_run = chosen.parent, chosen.row, chosen.run
    final = champ_run if chosen.final else None
    tta = modelstore.tta_of(champ_run)
    frame = heldout.test_predictions(champ_run, parent, tta=tta)
    model = load_classifier(modelstore.logged_model_uri(champ_run)).model

    root = Path(parent.data.params[keys.DATA])
    classes = heldout.classes_of(frame)
    y, probs = heldout.true_indices(frame), heldout.probabilities(frame)
    test = metrics.summary(y, probs, classes)
    confusion = np.asarray(test["confusion"])
    cam = _saliency(model, frame, root, int(champ_run.data.params["image_size"]))
    figures = {
        "comparison": _data_uri(_comparison_png(table)),
        "anytime": None if compare.anytime(parent).empty else _data_uri(_anytime_png(parent)),
        "confusion": _data_uri(
            plots.png_bytes(plots.confusion_matrix(confusion, classes, title="test confusion"))
        ),
        "roc": _data_uri(
            plots.png_bytes(
                plots.roc(metrics.roc_curves(y, probs, classes), classes, title="test ROC")
            )
        ),
        "saliency": _data_uri(cam) if cam else None,
        "cost": _cost_png(table, metric),
    }
    return {
        **_sweep_facts(parent, table, root),
        "champion": champion["arch"],
        "metric": metric,
        "ranked_by": table.attrs["ranked_by"],
        "final": (
            {"epochs": int(final.data.params["epochs"]), "run_id": final.info.run_id}
            if final
            else None
        ),
        "test": test,
        "n_test": len(frame),
        "tta": tta,
        "budget": _budget_sentence(parent),
        "per_class": [
            {
                "name": c,
                "precision": test[keys.per_class("precision", c)],
                "recall": test[keys.per_class("recall", c)],
            }
            for c in classes
        ],
        "significance": heldout.describe(sig) if sig else None,
        "comparison_table": compare.human_view(table).to_html(
            index=False, classes="cmp", border=0, escape=True
        ),
        "figures": figures,
        "learning_curves": _learning_curves(table),
        "data_curve": _data_curve(parent.info.run_id),
        "wrong": _wrong_photos(frame, root),
        "version": catdog.__version__,
        "stamp": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "tracking_uri": store.tracking_uri(),
    }


def _sweep_facts(parent, table: pd.DataFrame, root: Path) -> dict:
    """The header line: which sweep, how it searched, on what data."""
    p = parent.data.params
    return {
        "name": parent.info.run_name or parent.data.tags.get(tags.SWEEP_KEY, "sweep"),
        "run_id": parent.info.run_id,
        "sweep_key": parent.data.tags.get(tags.SWEEP_KEY, "?"),
        "tuner": p.get("tuner"),
        "strategy": p.get(keys.SEARCH_STRATEGY, "compare"),
        "image_sizes": p.get("image_sizes"),
        "image_size": p.get("image_size"),
        "epochs": p.get("epochs"),
        "trials": p.get("trials"),
        "repeats": int(table["repeats"].max()),
        "data": str(root),
    }


def _budget_sentence(parent) -> str | None:
    """How the sweep spent its time budget, when it had one."""
    m = parent.data.metrics
    budget = m.get(keys.BUDGET_SECONDS)
    if not budget:
        return None
    strategy = parent.data.params.get(keys.SEARCH_STRATEGY, "compare")
    return (
        f"Budget {format_seconds(budget)}, used {format_seconds(m.get(keys.SWEEP_SECONDS, 0))}; "
        f"{int(m.get(keys.TRIALS_RUN, 0))} trials ran of about "
        f"{int(m.get(keys.PLANNED_TRIALS, 0))} planned; "
        f"{strategies.note(strategy)} (the {strategy} strategy)."
    )


def _learning_curves(table: pd.DataFrame) -> list[dict]:
    """Each architecture's best trial, its learning curves as a data: URI."""
    curves = []
    for _, row in table.iterrows():
        run = runlog.get(row["run_id"])
        history, first = _history(row["run_id"])
        overfit = run.data.metrics.get("overfit_epoch")  # counted from the trial's first epoch
        fig = plots.learning_curves(
            history,
            title=row["arch"],
            overfit_epoch=int(overfit) - first if overfit else None,
            verdict=run.data.tags.get(tags.FIT_VERDICT),
        )
        curves.append({"arch": row["arch"], "src": _data_uri(plots.png_bytes(fig, dpi=80))})
    return curves


@functools.cache
def _environment():
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("catdog", "templates"),
        autoescape=jinja2.select_autoescape(("html", "html.j2")),
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )


def render_report(context: dict) -> str:
    """The page, from `gather_report`'s context, through templates/report.html.j2 (autoescaped:
    run names, paths and sentences are text; only `comparison_table` goes in as markup)."""
    return _environment().get_template(TEMPLATE).render(context)


def build_report(
    sweep: str = "latest", metric: str | None = None, experiment: str | None = None
) -> tuple[str, str]:
    """The report's HTML, and the sweep's parent run id."""
    context = gather_report(sweep, metric, experiment)
    return render_report(context), context["run_id"]


def _anytime_png(parent) -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return compare.anytime_plot(
            compare.anytime(parent),
            Path(tmp) / "anytime.png",
            parent.data.params.get(keys.SEARCH_STRATEGY, "compare"),
        ).read_bytes()


def _cost_png(table: pd.DataFrame, metric: str) -> str | None:
    """Accuracy against ms per image, for the architectures whose cost was measured."""
    shown = table.dropna(subset=[keys.MS_PER_IMAGE, keys.MS_PER_IMAGE_BATCH])
    if shown.empty:
        return None
    return _data_uri(
        plots.png_bytes(
            plots.accuracy_against_cost(
                shown["arch"],
                shown[keys.MS_PER_IMAGE],
                shown[keys.MS_PER_IMAGE_BATCH],
                shown[metric],
                f"{metric} (best trial)",
            ),
            dpi=90,
        )
    )


def _data_curve(sweep_run_id: str) -> dict | None:
    """The champion's data curve (`catdog curve`), when one was drawn for this sweep."""
    found = curve.logged(sweep_run_id)
    if found is None:
        return None
    return {
        "sentence": found.sentence,
        "backtest": found.backtest.sentence if found.backtest else None,
        "skipped": found.skipped,
        "src": _data_uri(plots.png_bytes(found.figure(), dpi=90)),
    }


def _comparison_png(table: pd.DataFrame) -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return compare.plot(table, Path(tmp) / "comparison.png").read_bytes()


def write_report(
    sweep: str = "latest",
    out: str | Path | None = None,
    *,
    metric: str | None = None,
    experiment: str | None = None,
) -> Path:
    """Write the report to OUT (default reports/<sweep>-<run id>.html) and log it to the
    sweep's parent run."""
    page, parent_id = build_report(sweep, metric, experiment)
    parent = runlog.get(parent_id)
    if out is None:
        out = Path("reports") / f"{parent.info.run_name or 'sweep'}-{parent_id[:8]}.html"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    runlog.log_file(out, parent_id, artifact_path="report")
    log.info(
        "report written to %s (%d KB) and logged to sweep run %s", out, len(page) // 1024, parent_id
    )
    return out
