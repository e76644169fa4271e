"""Metrics from scikit-learn and SciPy, the fit verdict rules on synthetic histories, and the
statistics of a comparison (mean ± CI over repeats, McNemar's exact test)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from catdog import metrics


def _history(train_loss, val_loss, acc=None, val_acc=None):
    n = len(train_loss)
    return {
        "loss": list(train_loss),
        "val_loss": list(val_loss),
        "accuracy": list(acc or np.linspace(0.85, 0.95, n)),
        "val_accuracy": list(val_acc or [1 - v / 2 for v in val_loss]),
    }


def test_overfitting_starts_after_the_val_loss_minimum():
    h = _history([0.6, 0.4, 0.3, 0.2, 0.1, 0.05], [0.55, 0.45, 0.40, 0.44, 0.50, 0.60])
    d = metrics.fit_diagnosis(h)
    assert d["val_loss_min_epoch"] == 3
    assert d["overfit_epoch"] == 4 and d["verdict"] == "overfitting from epoch 4"
    # Hyperband continues earlier fits: epochs count from where this fit started.
    assert metrics.fit_diagnosis(h, initial_epoch=2)["overfit_epoch"] == 6


def test_a_small_rise_or_a_rising_train_loss_is_not_overfitting():
    small = _history([0.6, 0.4, 0.3, 0.2], [0.50, 0.40, 0.41, 0.415])  # +3.75%: under 5%
    assert metrics.fit_diagnosis(small)["verdict"] == "good fit"
    both_up = _history([0.6, 0.4, 0.5, 0.6], [0.50, 0.40, 0.50, 0.60])  # diverging, not fitting
    assert metrics.fit_diagnosis(both_up)["overfit_epoch"] is None


def test_underfitting_low_train_accuracy_or_still_improving():
    low = _history([0.69, 0.68, 0.67, 0.68], [0.69, 0.68, 0.675, 0.68], acc=[0.55, 0.6, 0.62, 0.61])
    assert metrics.fit_diagnosis(low)["verdict"] == "underfitting"
    improving = _history([0.5, 0.3, 0.2], [0.5, 0.35, 0.3], acc=[0.8, 0.9, 0.95])
    assert metrics.fit_diagnosis(improving)["verdict"] == "underfitting"
    good = _history([0.5, 0.3, 0.2, 0.15], [0.5, 0.35, 0.30, 0.305], acc=[0.8, 0.9, 0.95, 0.96])
    assert metrics.fit_diagnosis(good)["verdict"] == "good fit"


def test_no_val_loss_gives_no_verdict():
    assert metrics.fit_diagnosis({"loss": [0.5]})["verdict"] is None


def test_summary_matches_scikit_learn():
    from sklearn.metrics import f1_score, roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.clip(y * 0.6 + rng.uniform(0, 0.5, 200), 0, 1)
    s = metrics.summary(y, p, ("cat", "dog"))
    assert s == metrics.summary(y, np.stack([1 - p, p], axis=1), ("cat", "dog")), (
        "a sigmoid and its (1 - p, p) matrix give the same figures"
    )
    assert {"precision_cat", "recall_cat", "precision_dog", "recall_dog"} <= set(s)
    assert s["macro_f1"] == pytest.approx(f1_score(y, p >= 0.5, average="macro"))
    assert s["auc"] == pytest.approx(roc_auc_score(y, p))
    assert s["accuracy"] == pytest.approx(np.mean((p >= 0.5) == y))
    assert sum(map(sum, s["confusion"])) == 200
    fpr, tpr, auc = metrics.roc_curve(y, p)
    assert fpr[0] == 0 and tpr[-1] == 1 and auc == pytest.approx(s["auc"])
    assert math.isnan(metrics.roc_curve(np.ones(5), np.full(5, 0.7))[2]), "one class: no AUC"


def test_summary_of_many_classes_matches_scikit_learn():
    from sklearn import metrics as skm

    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 300)
    logits = rng.normal(size=(300, 4)) + 2.0 * np.eye(4)[y]
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    classes = ("ant", "bee", "c+d", "moth")
    s = metrics.summary(y, p, classes)
    pred = p.argmax(axis=1)
    assert s["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert s["loss"] == pytest.approx(skm.log_loss(y, p))
    assert s["auc"] == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr"))
    assert s["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert s["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert s["confusion"] == skm.confusion_matrix(y, pred).tolist()
    recall = skm.recall_score(y, pred, average=None)
    assert [s[f"recall_{c}"] for c in ("ant", "bee", "c_d", "moth")] == pytest.approx(recall)
    assert math.isnan(metrics.summary(y[y < 3], p[y < 3], classes)["auc"]), (
        "a class missing: no AUC"
    )
    assert list(metrics.roc_curves(y, p, classes)) == list(classes)
    # McNemar's right/wrong is the same question for any number of classes.
    assert metrics.mcnemar(pred == y, pred == y)["p_value"] == 1.0


def test_predicted_keeps_the_binary_threshold():
    assert list(metrics.predicted(np.array([0.2, 0.5, 0.9]))) == [0, 1, 1]
    assert list(metrics.predicted(np.array([[0.5, 0.5], [0.6, 0.4]]))) == [1, 0]
    assert list(metrics.predicted(np.array([[0.2, 0.5, 0.3]]))) == [1]


def test_mean_ci_is_the_student_t_interval():
    s = metrics.mean_ci([0.70, 0.72, 0.74])
    assert s["mean"] == pytest.approx(0.72) and s["std"] == pytest.approx(0.02)
    half = 4.302652729911275 * 0.02 / math.sqrt(3)  # t(0.975, 2)
    assert s["ci_low"] == pytest.approx(0.72 - half) and s["ci_high"] == pytest.approx(0.72 + half)
    assert metrics.mean_ci([0.7])["n"] == 1 and math.isnan(metrics.mean_ci([0.7])["std"])


def test_mcnemar_exact():
    a = np.array([True] * 90 + [True] * 8 + [False] * 2)
    b = np.array([True] * 90 + [False] * 8 + [True] * 2)
    r = metrics.mcnemar(a, b)
    assert (r["only_a_right"], r["only_b_right"], r["disagreements"]) == (8, 2, 10)
    assert r["p_value"] == pytest.approx(0.109375)  # 2 * P(X <= 2), X ~ Binomial(10, 0.5)
    assert metrics.mcnemar(a, a)["p_value"] == 1.0
    with pytest.raises(ValueError):
        metrics.mcnemar(a, b[:5])


def test_balanced_accuracy_sees_through_a_model_that_always_answers_the_large_class():
    from sklearn import metrics as skm

    y = np.array([0] * 150 + [1] * 12)
    always_large = np.zeros(len(y))  # the second class's probability: never it
    s = metrics.summary(y, always_large)
    assert s["accuracy"] == pytest.approx(150 / 162)
    assert s["balanced_accuracy"] == pytest.approx(0.5)
    assert s["macro_f1"] == pytest.approx(skm.f1_score(y, always_large >= 0.5, average="macro"))
    # A small test split without one of the classes: the mean recall of the classes it holds.
    p = np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1]])  # 0, 1, 1
    assert metrics.summary(np.array([0, 0, 1]), p)["balanced_accuracy"] == pytest.approx(0.75)
