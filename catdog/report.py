"""`catdog report`: one self-contained HTML file about a sweep, for people to read.

It holds the comparison table (best trial, mean ± std and 95% CI over repeats, the fit verdicts),
each architecture's learning curves, the champion's test confusion matrix and ROC, McNemar's test
between the champion and the runner-up, the champion's most confidently wrong test photos, and
Grad-CAM maps over a few right and wrong ones. Every image is inlined (base64), so the file can
be mailed or opened anywhere; it is also logged to the sweep's parent run as `report.html`.

The champion is the top row of `compare` (chosen on validation); the test split is touched only
for it and the runner-up, through `heldout`, which evaluates each once.
"""

from __future__ import annotations

import base64
import html
import io
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

import catdog
from catdog import compare, heldout, metrics, plots
from catdog.inference import THRESHOLD
from catdog.log import format_seconds, get_logger
from catdog.tracking import store, tags

log = get_logger(__name__)

WRONG_SHOWN = 8
SALIENCY_SHOWN = 3  # right and wrong each
THUMBNAIL = 200

CSS = """
body { font: 15px/1.5 system-ui, sans-serif; max-width: 1180px; margin: 2em auto; color: #222;
       padding: 0 1em; }
h1 { margin-bottom: 0.1em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
.meta { color: #666; } .note { color: #555; font-size: 0.92em; }
.scroll { overflow-x: auto; }
table.cmp { border-collapse: collapse; font-size: 0.86em; }
table.cmp th, table.cmp td { border: 1px solid #ddd; padding: 3px 7px; text-align: right;
                             white-space: nowrap; }
table.cmp td:first-child, table.cmp th:first-child { text-align: left; font-weight: 600; }
table.cmp tr:first-child td { background: #f3f8ee; }
.fig { max-width: 100%; } .row { display: flex; flex-wrap: wrap; gap: 12px; }
.thumb { width: 200px; text-align: center; font-size: 0.85em; }
.thumb img { width: 200px; height: 200px; object-fit: cover; border: 3px solid #c33; }
.verdict { font-weight: 600; }
"""

# Lets a headless browser (and the slow test) tell that every inlined image decoded.
STATUS_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images', imgs.length);
  document.body.setAttribute('data-images-loaded', ok);
});
"""


def _img(data: bytes, mime: str = "image/png", alt: str = "", cls: str = "fig") -> str:
    return (f'<img class="{cls}" alt="{html.escape(alt)}" '
            f'src="data:{mime};base64,{base64.b64encode(data).decode()}">')


def _history(client, run_id: str) -> tuple[dict[str, list[float]], int]:
    """A run's per-epoch history, and the step it starts at (a Hyperband continuation starts
    where the trial it continues stopped)."""
    out, first = {}, 0
    for key, name in (("loss", "train_loss"), ("accuracy", "train_accuracy"),
                      ("val_loss", "val_loss"), ("val_accuracy", "val_accuracy")):
        hist = sorted(client.get_metric_history(run_id, name), key=lambda m: m.step)
        if hist:
            out[key] = [m.value for m in hist]
            first = hist[0].step
    return out, first


def _thumbnail(path: Path) -> bytes:
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        img.thumbnail((THUMBNAIL * 2, THUMBNAIL * 2))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def _wrong_gallery(frame: pd.DataFrame, root: Path) -> str:
    wrong = frame[~heldout.correct(frame)].copy()
    if wrong.empty:
        return "<p>The champion got every test image right.</p>"
    wrong["confidence"] = (wrong["p_dog"] - THRESHOLD).abs()
    cells = []
    for _, row in wrong.sort_values("confidence", ascending=False).head(WRONG_SHOWN).iterrows():
        called = "cat" if row["label"] == "dog" else "dog"  # it is wrong
        caption = f"a {row['label']} called {called} (p_dog {row['p_dog']:.3f})"
        thumb = _img(_thumbnail(root / row["path"]), "image/jpeg", caption, "t")
        cells.append(f'<div class="thumb">{thumb}<br>{html.escape(caption)}<br>'
                     f"<small>{html.escape(row['path'])}</small></div>")
    return (f"<p>{len(wrong)} of {len(frame)} test photos are wrong; the "
            f"{min(len(wrong), WRONG_SHOWN)} it was surest about:</p>"
            f'<div class="row">{"".join(cells)}</div>')


def _saliency(model, frame: pd.DataFrame, root: Path, size: int) -> bytes | None:
    from catdog import saliency
    from catdog.inference import to_pixels

    right = heldout.correct(frame)
    conf = (frame["p_dog"] - THRESHOLD).abs()
    picks = (list(frame[right].assign(c=conf[right]).nlargest(SALIENCY_SHOWN, "c").index)
             + list(frame[~right].assign(c=conf[~right]).nlargest(SALIENCY_SHOWN, "c").index))
    if not picks:
        return None
    rows = frame.loc[picks]
    pixels, errors = to_pixels([(root / p).read_bytes() for p in rows["path"]], size)
    if any(errors):
        return None
    maps, method = saliency.heatmaps(model, pixels)
    captions = [f"{'right' if right[i] else 'WRONG'}: {lbl}\np_dog {p:.2f}"
                for i, lbl, p in zip(picks, rows["label"], rows["p_dog"])]
    return plots.png_bytes(plots.saliency_grid(pixels, maps, captions,
                                               f"{method}: where the champion looked"))


def build_report(sweep: str = "latest", metric: str = "val_accuracy",
                 experiment: str = "catdog") -> tuple[str, str]:
    """The report's HTML, and the sweep's parent run id."""
    import mlflow

    from catdog.inference import load_classifier

    table = compare.compare(sweep, (), metric, experiment)
    sig = compare.with_test(table)
    client = mlflow.MlflowClient()
    parent = client.get_run(table.attrs["sweep_run_id"])
    champion = table.iloc[0]
    # What ships: the winner's final fit on train+val when the sweep made one (as `register`).
    final = heldout.final_run(parent, champion["arch"], champion["trial_id"])
    champ_run = final or client.get_run(champion["run_id"])
    frame = heldout.test_predictions(champ_run, parent)
    root = Path(parent.data.params["data"])
    y = (frame["label"] == "dog").astype(int).to_numpy()
    fpr, tpr, auc = metrics.roc_curve(y, frame["p_dog"].to_numpy())
    test = metrics.summary(y, frame["p_dog"].to_numpy())
    confusion = np.asarray(test["confusion"])
    model = load_classifier(heldout.logged_model_uri(champ_run))
    cam = _saliency(model, frame, root, int(champ_run.data.params["image_size"]))

    p = parent.data.params
    name = parent.info.run_name or parent.data.tags.get(tags.SWEEP_KEY, "sweep")
    parts = [f"<h1>catdog sweep report: {html.escape(name)}</h1>",
             f'<p class="meta">sweep run {parent.info.run_id} · key '
             f"{html.escape(parent.data.tags.get(tags.SWEEP_KEY, '?'))} · tuner {p.get('tuner')}"
             + (f" · a race (strategy best) over architectures and sizes "
                f"{p.get('image_sizes')} px, up to {p.get('epochs')} epochs"
                if p.get("search_strategy") == "best" else
                f" · trials per architecture {p.get('trials')}, up to {p.get('epochs')} epochs "
                f"at {p.get('image_size')} px")
             + f" · repeats {int(table['repeats'].max())} · data "
             f"{html.escape(str(root))}</p>"]
    verdict = (f"<b>{html.escape(champion['arch'])}</b> is the champion (chosen on "
               f"{metric}, ranked by the {table.attrs['ranked_by']}); "
               + (f"its final fit on train+val ({int(final.data.params['epochs'])} epochs, run "
                  f"{final.info.run_id}) " if final else "its best trial ")
               + f"has test accuracy <b>{test['accuracy']:.4f}</b> on {len(frame)} held-out "
               "photos.")
    budget = parent.data.metrics.get("budget_seconds")
    strategy = p.get("search_strategy", "compare")
    if budget:
        verdict += (f" Budget {format_seconds(budget)}, used "
                    f"{format_seconds(parent.data.metrics.get('sweep_seconds', 0))}; "
                    f"{int(parent.data.metrics.get('trials_run', 0))} trials ran of about "
                    f"{int(parent.data.metrics.get('planned_trials', 0))} planned; "
                    f"{compare.strategy_note(strategy)} (the {strategy} strategy).")
    if sig:
        verdict += " " + html.escape(heldout.describe(sig)) + "."
    parts.append(f'<p class="verdict">{verdict}</p>')

    parts.append("<h2>Comparison</h2>")
    parts.append('<div class="scroll">' + compare.human_view(table).to_html(
        index=False, classes="cmp", border=0, escape=True) + "</div>")
    parts.append('<p class="note">"mean ± std (repeats)": the best configuration retrained '
                 "with other seeds; 95% CI: Student-t interval of that mean. \"within noise\": "
                 "the interval overlaps the top architecture's, so their order is not "
                 "established. Fit: underfitting, good fit, or overfitting from the epoch where "
                 "val loss began to rise while train loss kept falling (rules in the README)."
                 "</p>")
    parts.append(_img(_comparison_png(table), alt="comparison"))

    parts.append("<h2>Learning curves (best trial of each architecture)</h2>")
    for _, row in table.iterrows():
        run = client.get_run(row["run_id"])
        history, first = _history(client, row["run_id"])
        overfit = run.data.metrics.get("overfit_epoch")  # counted from the trial's first epoch
        fig = plots.learning_curves(history, title=row["arch"],
                                    overfit_epoch=int(overfit) - first if overfit else None,
                                    verdict=run.data.tags.get(tags.FIT_VERDICT))
        parts.append(_img(plots.png_bytes(fig, dpi=80), alt=f"{row['arch']} learning curves"))

    anytime = compare.anytime(parent)
    if not anytime.empty:
        parts.append("<h2>The race: best val accuracy so far, against wall-clock time</h2>")
        parts.append(_img(_anytime_png(parent), alt="anytime plot"))

    parts.append(f"<h2>Champion on the test split: {html.escape(champion['arch'])}</h2>")
    parts.append(f"<p>accuracy {test['accuracy']:.4f} · loss {test['loss']:.4f} · ROC AUC "
                 f"{test['auc']:.4f} · cat precision/recall {test['precision_cat']:.3f}/"
                 f"{test['recall_cat']:.3f} · dog {test['precision_dog']:.3f}/"
                 f"{test['recall_dog']:.3f}</p>")
    parts.append('<div class="row">'
                 + _img(plots.png_bytes(plots.confusion_matrix(confusion, title="test confusion")),
                        alt="confusion matrix")
                 + _img(plots.png_bytes(plots.roc(fpr, tpr, auc, title="test ROC")), alt="ROC")
                 + "</div>")
    parts.append("<h2>Champion against the runner-up (McNemar)</h2>")
    parts.append(f"<p>{html.escape(heldout.describe(sig))}.</p>" if sig else
                 "<p>Only one architecture in this sweep: nothing to test against.</p>")
    parts.append("<h2>Most confidently wrong test photos</h2>")
    parts.append(_wrong_gallery(frame, root))
    parts.append("<h2>Where the champion looked</h2>")
    parts.append(_img(cam, alt="saliency maps") if cam else
                 "<p>No saliency map could be drawn.</p>")
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts.append(f'<p class="meta">catdog {catdog.__version__} · {stamp} · tracking store '
                 f"{html.escape(store.tracking_uri())}</p>")
    page = (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>catdog report: "
            f"{html.escape(name)}</title><style>{CSS}</style><script>{STATUS_SCRIPT}</script>"
            f"</head><body>{''.join(parts)}</body></html>")
    return page, parent.info.run_id


def _anytime_png(parent) -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return compare.anytime_plot(compare.anytime(parent), Path(tmp) / "anytime.png",
                                    parent.data.params.get("search_strategy", "compare")
                                    ).read_bytes()


def _comparison_png(table: pd.DataFrame) -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return compare.plot(table, Path(tmp) / "comparison.png").read_bytes()


def write_report(sweep: str = "latest", out: str | Path | None = None, *,
                 metric: str = "val_accuracy", experiment: str = "catdog") -> Path:
    """Write the report to OUT (default reports/<sweep>-<run id>.html) and log it to the
    sweep's parent run."""
    import mlflow

    page, parent_id = build_report(sweep, metric, experiment)
    parent = mlflow.MlflowClient().get_run(parent_id)
    if out is None:
        out = Path("reports") / f"{parent.info.run_name or 'sweep'}-{parent_id[:8]}.html"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    mlflow.MlflowClient().log_artifact(parent_id, str(out), artifact_path="report")
    log.info("report written to %s (%d KB) and logged to sweep run %s", out,
             len(page) // 1024, parent_id)
    return out

