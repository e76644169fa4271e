"""Metrics: binary classification figures (the same for training, evaluate and register), and
the best-epoch summary of a Keras history that the comparison tables are made of."""

from __future__ import annotations

import numpy as np


def confusion(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """2x2 counts, rows = true (cat, dog), columns = predicted."""
    cm = np.zeros((2, 2), dtype=int)
    np.add.at(cm, (y_true.astype(int), y_pred.astype(int)), 1)
    return cm


def roc_curve(y_true: np.ndarray, y_prob: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    order = np.argsort(-y_prob, kind="mergesort")
    y, p = y_true[order].astype(float), y_prob[order]
    distinct = np.r_[np.where(np.diff(p))[0], len(p) - 1]
    tps = np.cumsum(y)[distinct]
    fps = (distinct + 1) - tps
    pos, neg = max(y.sum(), 1), max(len(y) - y.sum(), 1)
    tpr = np.r_[0.0, tps / pos]
    fpr = np.r_[0.0, fps / neg]
    return fpr, tpr, float(np.trapezoid(tpr, fpr))


def summary(y_true: np.ndarray, y_prob: np.ndarray, threshold: float = 0.5) -> dict:
    """Accuracy, log loss, ROC AUC, per-class precision/recall and the confusion matrix."""
    y_true = np.asarray(y_true, dtype=float).ravel()
    y_prob = np.asarray(y_prob, dtype=float).ravel()
    y_pred = (y_prob >= threshold).astype(int)
    cm = confusion(y_true, y_pred)
    p = np.clip(y_prob, 1e-7, 1 - 1e-7)
    out = {
        "accuracy": float((y_pred == y_true).mean()),
        "loss": float(-np.mean(y_true * np.log(p) + (1 - y_true) * np.log(1 - p))),
        "auc": roc_curve(y_true, y_prob)[2],
        "n": int(len(y_true)),
    }
    for k, name in enumerate(("cat", "dog")):
        predicted, actual = cm[:, k].sum(), cm[k, :].sum()
        out[f"precision_{name}"] = float(cm[k, k] / predicted) if predicted else 0.0
        out[f"recall_{name}"] = float(cm[k, k] / actual) if actual else 0.0
    out["confusion"] = cm.tolist()
    return out


def mlflow_metric_name(key: str) -> str:
    """Keras history keys -> MLflow metric names: train_/val_ prefixes, as in MLflow's examples."""
    return key if key.startswith("val_") else f"train_{key}"


def history_summary(history: dict[str, list[float]], objective: str = "val_accuracy",
                    initial_epoch: int = 0) -> dict:
    """Best-epoch figures from a Keras history.

    `initial_epoch` is where this fit started (Hyperband continues earlier trials), so
    `best_epoch` counts epochs the way the logged metric steps do (1-based).
    """
    val = history.get(objective) or [np.nan]
    best = int(np.nanargmin(val) if objective.endswith("loss") else np.nanargmax(val))
    out = {"best_epoch": initial_epoch + best + 1, "epochs_run": len(val)}
    for key in ("val_accuracy", "val_loss", "val_auc", "accuracy", "loss"):
        if history.get(key):
            out[f"best_{mlflow_metric_name(key)}"] = float(history[key][best])
    acc, vacc = history.get("accuracy"), history.get("val_accuracy")
    if acc and vacc:
        out["gap_best"] = float(acc[best] - vacc[best])
        out["gap_last"] = float(acc[-1] - vacc[-1])
    return out
