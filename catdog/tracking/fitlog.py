"""What every finished fit logs, in one place: `catdog train` and each sweep trial call
`record_fit`, so a new per-run artifact is added here once.

The record: best-epoch summary metrics (with the train-val gap and seconds per epoch), the fit
verdict (tag `catdog.fit_verdict`, with the epochs it rests on as metrics), the learning curves,
and, when the model is worth keeping, its validation evaluation (metrics,
confusion matrix, ROC), the model itself with a signature and an input example, and what the
model costs to run here: milliseconds per image alone and in a batch of 32, and its bytes on the
store (`keys.MS_PER_IMAGE`, `MS_PER_IMAGE_BATCH`, `MODEL_BYTES`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from catdog import keys, metrics, pipeline, speed
from catdog.tracking import artifacts, modelstore, tags


@dataclass
class FitRecord:
    summary: dict  # best_epoch, best_val_accuracy, gap_best, gap_last, seconds_per_epoch, ...
    verdict: str | None  # "underfitting", "good fit" or "overfitting from epoch N"
    model_uri: str | None  # the logged model, when there is one


def record_fit(
    model,
    history: dict[str, list[float]],
    seconds_per_epoch: float,
    *,
    splits: pipeline.Splits,
    title: str,
    log_model: bool,
    objective: str = keys.OBJECTIVE,
    initial_epoch: int = 0,
) -> FitRecord:
    """Log a finished fit to the active run; its summary metrics, and the model's URI if logged."""
    import mlflow

    from catdog import plots

    summary = metrics.history_summary(history, objective, initial_epoch)
    summary[keys.SECONDS_PER_EPOCH] = seconds_per_epoch
    diagnosis = metrics.fit_diagnosis(history, objective, initial_epoch)
    for key in ("val_loss_min_epoch", "overfit_epoch"):
        if diagnosis[key] is not None:
            summary[key] = diagnosis[key]
    mlflow.log_metrics(summary)
    verdict = diagnosis["verdict"]
    if verdict:
        mlflow.set_tag(tags.FIT_VERDICT, verdict)
    if initial_epoch and diagnosis["overfit_epoch"]:  # the figure's x axis counts from 1
        diagnosis["overfit_epoch"] -= initial_epoch
    artifacts.log_figure(
        plots.learning_curves(
            history,
            title=f"{title} learning curves",
            overfit_epoch=diagnosis["overfit_epoch"],
            verdict=verdict,
        ),
        "learning_curves.png",
    )
    if not log_model:
        return FitRecord(summary, verdict, None)
    labels, probs = splits.predict(model, "val")
    # What the per-epoch history already holds (accuracy, loss, balanced accuracy, and for two
    # classes AUC) is not logged a second time; a softmax model's one-vs-rest AUC comes only
    # from here.
    artifacts.log_evaluation(
        labels,
        probs,
        "val",
        title,
        splits.classes,
        leave_out={
            k
            for k in ("accuracy", "loss", "auc", keys.BALANCED_ACCURACY)
            if history.get(f"val_{k}")
        },
    )
    sample = splits.decoded("val").images[: speed.INFERENCE_BATCH].astype(np.float32)
    one_ms, batch_ms = speed.inference_ms(model, sample)  # while the model is at hand
    info = artifacts.log_keras_model(model, sample[:1], splits.classes)
    mlflow.log_metrics(
        {
            keys.MS_PER_IMAGE: one_ms,
            keys.MS_PER_IMAGE_BATCH: batch_ms,
            keys.MODEL_BYTES: modelstore.model_bytes(info.model_id),
        }
    )
    return FitRecord(summary, verdict, info.model_uri)
