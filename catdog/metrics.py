"""Metrics, all from scikit-learn and SciPy rather than written by hand:

- classification figures for two classes or many (the same for training, evaluate and
  register), from a (n, classes) probability matrix or, for two classes, the second class's
  probability alone;
- the best-epoch summary of a Keras history, and the fit verdict (under/good/overfitting) read
  from it, by the rules below;
- the statistics of a comparison: mean, standard deviation and 95% confidence interval over
  repeats, and McNemar's exact test between two models on the same images.
"""

from __future__ import annotations

import math

import numpy as np

from catdog import keys

# -- fit verdict rules (the README states them; tests/test_metrics.py checks them) ------------
# Overfitting: val loss ends at least OVERFIT_RISE above its minimum, and train loss fell after
# that minimum. It starts at the first epoch after the minimum.
OVERFIT_RISE = 0.05
# Underfitting (when not overfitting): the model does not fit its own training images at its
# best epoch (train accuracy below UNDERFIT_TRAIN_ACCURACY), or val loss was still at its lowest
# in the last epoch, so more epochs would still help.
UNDERFIT_TRAIN_ACCURACY = 0.80
GOOD_FIT = "good fit"
UNDERFITTING = "underfitting"


THRESHOLD = 0.5  # two classes: the second is predicted from this probability up


def probability_matrix(y_prob, num_classes: int | None = None) -> np.ndarray:
    """(n, classes) probabilities from a model's output: a softmax's rows as they are, a single
    sigmoid (or a vector of them) as (1 - p, p)."""
    y_prob = np.asarray(y_prob, dtype=float)
    if y_prob.ndim == 1 or y_prob.shape[-1] == 1:
        p = y_prob.reshape(-1)
        return np.stack([1.0 - p, p], axis=1)
    if num_classes is not None and y_prob.shape[1] != num_classes:
        raise ValueError(f"{y_prob.shape[1]} probabilities per image for {num_classes} classes")
    return y_prob


def predicted(y_prob) -> np.ndarray:
    """The class index each row predicts: for two classes, the second from THRESHOLD up (so a
    tie goes to it, as it always did); for more, the most probable."""
    probs = probability_matrix(y_prob)
    if probs.shape[1] == 2:
        return (probs[:, 1] >= THRESHOLD).astype(int)
    return probs.argmax(axis=1)


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int = 2) -> np.ndarray:
    """num_classes x num_classes counts, rows = true class, columns = predicted, in class order."""
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(
        np.asarray(y_true, int), np.asarray(y_pred, int), labels=list(range(num_classes))
    )


def roc_curve(y_true: np.ndarray, y_prob: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(false positive rates, true positive rates, AUC) of a score for the positive class (1);
    AUC is NaN with only one class."""
    from sklearn import metrics as skm

    y_true = np.asarray(y_true, int).ravel()
    if len(np.unique(y_true)) < 2:
        return np.array([0.0, 1.0]), np.array([0.0, 1.0]), float("nan")
    fpr, tpr, _ = skm.roc_curve(y_true, np.asarray(y_prob, float).ravel())
    return fpr, tpr, float(skm.roc_auc_score(y_true, np.asarray(y_prob, float).ravel()))


def roc_curves(y_true, y_prob, classes) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """One ROC curve per class: the second class's for two classes, else each class against the
    rest (one-vs-rest)."""
    probs, y_true = probability_matrix(y_prob), np.asarray(y_true, float).ravel().astype(int)
    if probs.shape[1] == 2:
        return {classes[1]: roc_curve(y_true, probs[:, 1])}
    return {
        name: roc_curve((y_true == k).astype(int), probs[:, k]) for k, name in enumerate(classes)
    }


def _auc(y_true: np.ndarray, probs: np.ndarray) -> float:
    """ROC AUC: of the second class's probability for two classes, else the mean one-vs-rest AUC
    over the classes (NaN when a class is missing from y_true)."""
    from sklearn import metrics as skm

    if probs.shape[1] == 2:
        return roc_curve(y_true, probs[:, 1])[2]
    if len(np.unique(y_true)) < probs.shape[1]:
        return float("nan")
    return float(
        skm.roc_auc_score(
            y_true,
            probs / probs.sum(axis=1, keepdims=True),
            multi_class="ovr",
            labels=list(range(probs.shape[1])),
        )
    )


def _log_loss(y_true: np.ndarray, probs: np.ndarray) -> float:
    from sklearn import metrics as skm

    if probs.shape[1] == 2:  # the second class's probability, as it always was computed
        return float(skm.log_loss(y_true, np.clip(probs[:, 1], 1e-7, 1 - 1e-7), labels=[0, 1]))
    # float32 softmax rows (and their TTA means) sum to 1 only to rounding: normalise them.
    return float(
        skm.log_loss(
            y_true, probs / probs.sum(axis=1, keepdims=True), labels=list(range(probs.shape[1]))
        )
    )


def _balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray, labels: list[int]) -> float:
    """The mean recall over the classes present in y_true: scikit-learn's balanced accuracy,
    without its warning when a class is predicted but absent (a small test split)."""
    from sklearn import metrics as skm

    present = [k for k in labels if np.any(y_true == k)]
    if not present:
        return float("nan")
    recall = skm.recall_score(y_true, y_pred, labels=present, average=None, zero_division=0)
    return float(np.mean(recall))


def summary(y_true: np.ndarray, y_prob: np.ndarray, classes=None) -> dict:
    """Accuracy, log loss, ROC AUC (one-vs-rest for more than two classes), balanced accuracy
    (the mean per-class recall, for imbalanced classes), macro F1, per-class
    precision and recall (`precision_<class>`) and the confusion matrix. y_prob is (n, classes),
    or for two classes the second class's probability; classes name them (default 0, 1, ...)."""
    from sklearn import metrics as skm

    y_true = np.asarray(y_true, dtype=float).ravel().astype(int)
    probs = probability_matrix(y_prob)
    k = probs.shape[1]
    classes = [str(c) for c in (classes if classes is not None else range(k))]
    if len(classes) != k:
        raise ValueError(f"{k} probabilities per image for {len(classes)} classes")
    y_pred, labels = predicted(probs), list(range(k))
    out = {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "loss": _log_loss(y_true, probs),
        "auc": _auc(y_true, probs),
        keys.BALANCED_ACCURACY: _balanced_accuracy(y_true, y_pred, labels),
        keys.MACRO_F1: float(
            skm.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
        ),
        "n": int(len(y_true)),
    }
    precision = skm.precision_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    recall = skm.recall_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    for i, name in enumerate(classes):
        out[keys.per_class("precision", name)] = float(precision[i])
        out[keys.per_class("recall", name)] = float(recall[i])
    out["confusion"] = confusion(y_true, y_pred, k).tolist()
    return out


def mlflow_metric_name(key: str) -> str:
    """Keras history keys -> MLflow metric names: train_/val_ prefixes, as in MLflow's examples."""
    return key if key.startswith("val_") else f"train_{key}"


# The Keras history keys a fit's summary holds at its best epoch, as best_<MLflow name>.
SUMMARISED = (
    keys.VAL_ACCURACY,
    "val_loss",
    "val_auc",
    keys.VAL_BALANCED_ACCURACY,
    "accuracy",
    "loss",
    keys.BALANCED_ACCURACY,
)


def history_summary(
    history: dict[str, list[float]], objective: str = keys.OBJECTIVE, initial_epoch: int = 0
) -> dict:
    """Best-epoch figures from a Keras history.

    `initial_epoch` is where this fit started (Hyperband continues earlier trials), so
    `best_epoch` counts epochs the way the logged metric steps do (1-based).
    """
    val = history.get(objective) or [np.nan]
    best = _best_index(history, objective)
    out = {keys.BEST_EPOCH: initial_epoch + best + 1, "epochs_run": len(val)}
    for key in dict.fromkeys((*SUMMARISED, objective)):
        if history.get(key):
            out[f"best_{mlflow_metric_name(key)}"] = float(history[key][best])
    acc, vacc = history.get("accuracy"), history.get(keys.VAL_ACCURACY)
    if acc and vacc:
        out["gap_best"] = float(acc[best] - vacc[best])
        out["gap_last"] = float(acc[-1] - vacc[-1])
    return out


def _best_index(history: dict[str, list[float]], objective: str) -> int:
    """The 0-based epoch of this fit where the objective was best."""
    val = np.asarray(history.get(objective) or [np.nan], float)
    if np.all(np.isnan(val)):
        raise ValueError(f"the fit recorded no {objective}: it produced no usable epoch")
    return int(np.nanargmin(val) if objective.endswith("loss") else np.nanargmax(val))


def fit_diagnosis(
    history: dict[str, list[float]], objective: str = keys.OBJECTIVE, initial_epoch: int = 0
) -> dict:
    """The fit verdict and the epochs it rests on (1-based, as the logged steps count).

    Returns `verdict` ("underfitting", "good fit" or "overfitting from epoch N"),
    `val_loss_min_epoch`, and `overfit_epoch` (None unless overfitting).
    """
    val_loss = np.asarray(history.get("val_loss") or [], float)
    train_loss = np.asarray(history.get("loss") or [], float)
    if not len(val_loss) or np.all(np.isnan(val_loss)):
        return {"verdict": None, "val_loss_min_epoch": None, "overfit_epoch": None}
    m = int(np.nanargmin(val_loss))
    last = len(val_loss) - 1
    out = {"val_loss_min_epoch": initial_epoch + m + 1, "overfit_epoch": None}
    rose = m < last and val_loss[last] >= val_loss[m] * (1 + OVERFIT_RISE)
    train_fell = len(train_loss) > last and train_loss[last] < train_loss[m]
    if rose and train_fell:
        out["overfit_epoch"] = initial_epoch + m + 2
        out["verdict"] = f"overfitting from epoch {out['overfit_epoch']}"
        return out
    acc = history.get("accuracy") or []
    best = _best_index(history, objective)
    underfit = (len(acc) > best and acc[best] < UNDERFIT_TRAIN_ACCURACY) or m == last
    out["verdict"] = UNDERFITTING if underfit else GOOD_FIT
    return out


def mean_ci(values, confidence: float = 0.95) -> dict:
    """Mean, sample standard deviation and the Student-t confidence interval of the mean."""
    from scipy import stats

    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], float)
    n = len(v)
    if n == 0:
        return {
            "mean": float("nan"),
            "std": float("nan"),
            "ci_low": float("nan"),
            "ci_high": float("nan"),
            "n": 0,
        }
    mean = float(v.mean())
    if n == 1:
        return {
            "mean": mean,
            "std": float("nan"),
            "ci_low": float("nan"),
            "ci_high": float("nan"),
            "n": 1,
        }
    std = float(v.std(ddof=1))
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1) * std / math.sqrt(n))
    return {"mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half, "n": n}


def mcnemar(correct_a, correct_b) -> dict:
    """McNemar's exact test on paired per-image correctness of two models on the same images:
    a two-sided binomial test on the images where exactly one of them is right."""
    from scipy import stats

    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.shape != b.shape:
        raise ValueError("McNemar needs both models' results on the same images")
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    n = only_a + only_b
    p = 1.0 if n == 0 else float(stats.binomtest(only_a, n, 0.5).pvalue)
    return {
        "p_value": p,
        "disagreements": n,
        "only_a_right": only_a,
        "only_b_right": only_b,
        "images": int(len(a)),
    }
