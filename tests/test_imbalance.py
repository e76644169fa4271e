"""An imbalanced dataset is searched and chosen on balanced accuracy: the Keras metric against
scikit-learn, saved and loaded with a model, under mixed precision and tf.distribute; and a tiny
sweep of 150 photos of one class and 12 of another, whose tuner, early stopping, trial scores,
parent run and champion all use val_balanced_accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.metrics import balanced_accuracy_score

from catdog import keys
from catdog.models import BalancedAccuracy
from tests.imagegen import write_jpeg


def accumulated(metric, batches) -> float:
    """METRIC's value after update_state on each (labels, outputs) batch in turn."""
    metric.reset_state()
    for y, p in batches:
        metric.update_state(y, p)
    return float(metric.result())


# ---------------------------------------------------------------- the metric


def test_balanced_accuracy_matches_scikit_learn_over_several_batches():
    rng = np.random.default_rng(3)
    # Two classes, one sigmoid unit: the second class from 0.5 up (the served model's rule).
    binary = [
        ((rng.random(n) < 0.2).astype("float32"), rng.random((n, 1)).astype("float32"))
        for n in (7, 16, 1, 9)
    ]
    y = np.concatenate([b[0] for b in binary]).astype(int)
    predicted = (np.concatenate([b[1] for b in binary])[:, 0] >= 0.5).astype(int)
    assert accumulated(BalancedAccuracy(2), binary) == pytest.approx(
        balanced_accuracy_score(y, predicted), abs=1e-6
    )
    # Three classes, a softmax over integer labels: the most probable.
    three = [
        (rng.integers(0, 3, n).astype("float32"), rng.dirichlet([1, 1, 1], n).astype("float32"))
        for n in (5, 12, 8)
    ]
    y = np.concatenate([b[0] for b in three]).astype(int)
    predicted = np.concatenate([b[1] for b in three]).argmax(axis=1)
    assert accumulated(BalancedAccuracy(3), three) == pytest.approx(
        balanced_accuracy_score(y, predicted), abs=1e-6
    )
    # Always the large class: accuracy 150/162, balanced accuracy one half.
    constant = [(np.array([0.0] * 150 + [1.0] * 12), np.zeros((162, 1)))]
    assert accumulated(BalancedAccuracy(2), constant) == pytest.approx(0.5)
    # A class absent from the labels seen is left out of the mean, as scikit-learn does.
    absent = [(np.array([0.0, 0.0, 2.0]), np.eye(3)[[0, 1, 2]])]
    with pytest.warns(UserWarning):
        expected = balanced_accuracy_score([0, 0, 2], [0, 1, 2])
    assert accumulated(BalancedAccuracy(3), absent) == pytest.approx(expected)


def test_every_model_has_balanced_accuracy_and_loads_again_with_it(tmp_path):
    """Compiled into both heads (the per-epoch logs are the sweep's test, below), saved with
    the model and deserialised with it; and under mixed precision."""
    import keras

    from catdog import models, runtime

    x = np.random.default_rng(0).integers(0, 255, (24, 32, 32, 3)).astype("float32")
    for num_classes in (2, 3):
        y = (np.arange(24) % num_classes).astype("float32")
        model = models.get("baseline").build(
            models.fixed_hyperparameters({}), image_size=32, num_classes=num_classes
        )
        outputs = model.predict(x, verbose=0)
        predicted = (outputs[:, 0] >= 0.5).astype(int) if num_classes == 2 else outputs.argmax(1)
        ours = model.evaluate(x, y, verbose=0, return_dict=True)[keys.BALANCED_ACCURACY]
        assert ours == pytest.approx(balanced_accuracy_score(y.astype(int), predicted), abs=1e-5)
        path = tmp_path / f"m{num_classes}.keras"
        model.save(path)
        loaded = keras.models.load_model(path)  # compiled: the metric deserialises
        again = loaded.evaluate(x, y, verbose=0, return_dict=True)[keys.BALANCED_ACCURACY]
        assert again == pytest.approx(ours, abs=1e-5)
        keras.backend.clear_session()
    try:  # mixed precision: the head is float32, and so are the metric's counts
        runtime.set_precision("bf16")
        model = models.get("baseline").build(models.fixed_hyperparameters({}), image_size=32)
        y = (np.arange(24) % 2).astype("float32")
        logs = model.evaluate(x, y, verbose=0, return_dict=True)
        assert 0 <= logs[keys.BALANCED_ACCURACY] <= 1
    finally:
        runtime.set_precision("fp32")
        keras.backend.clear_session()


def test_balanced_accuracy_under_a_distribution_strategy():
    import tensorflow as tf

    metric_batches = [
        (np.array([0.0, 1.0, 1.0, 0.0]), np.array([[0.9], [0.8], [0.1], [0.2]])),
        (np.array([1.0, 0.0]), np.array([[0.7], [0.6]])),
    ]
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        metric = BalancedAccuracy(2)
    # class 0: 1 of 3 right; class 1: 2 of 3
    assert accumulated(metric, metric_batches) == pytest.approx(0.5)
    assert balanced_accuracy_score([0, 1, 1, 0, 1, 0], [1, 1, 0, 0, 1, 1]) == pytest.approx(0.5)


# ---------------------------------------------------------------- a sweep of lopsided data


def lopsided(root: Path, counts: dict[str, int]) -> Path:
    """Generated photos in the plain layout <class>/*: {"horses": 150, "zebras": 12}."""
    n = 0
    for label, count in counts.items():
        for i in range(count):
            write_jpeg(root / label / f"{i}.jpg", 70_000 + n, size=(32, 32))
            n += 1
    return root


@pytest.mark.slow  # a whole sweep, with MLflow's logging: 40 s on 2 cores
def test_an_imbalanced_dataset_is_searched_and_chosen_on_balanced_accuracy(
    workdir, logs, monkeypatch
):
    import mlflow

    from catdog import choose, sweepfile
    from catdog.cli import main
    from catdog.search import sweep
    from catdog.search import tuner as tuning
    from catdog.tracking import tags

    source = lopsided(workdir / "horses-zebras", {"horses": 150, "zebras": 12})
    out = CliRunner().invoke(main, ["data", "prepare", str(source), "--dest", "hz"])
    assert out.exit_code == 0, (out.output, out.exception)
    assert json.loads(out.stdout)["imbalanced"] is True
    warned = [r.getMessage() for r in logs.records if r.levelname == "WARNING"]
    assert any("imbalanced classes" in w and "horses 150, zebras 12" in w for w in warned)

    tuners, link = [], tuning.link
    monkeypatch.setattr(tuning, "link", lambda t, *a: (tuners.append(t), link(t, *a))[1])
    monitored, callbacks = [], tuning.fit_callbacks
    monkeypatch.setattr(
        tuning,
        "fit_callbacks",
        lambda *a, **kw: (monitored.append(kw.get("monitor")), callbacks(*a, **kw))[1],
    )
    cfg = sweepfile.load(
        None,
        archs=("baseline",),
        tuner="random",
        trials=2,
        epochs=1,
        image_size=32,
        batch_size=16,
        final_fit=False,
        data=str(workdir / "hz"),
    )
    result = sweep.run(cfg)

    said = [r.getMessage() for r in logs.records]
    assert any(
        "imbalanced classes (horses 150, zebras 12)" in m
        and "val_balanced_accuracy" in m
        and "weighs the classes" in m
        for m in said
    ), said
    (tuner,) = tuners
    assert tuner.oracle.objective.name == keys.VAL_BALANCED_ACCURACY
    assert monitored == [keys.VAL_BALANCED_ACCURACY] * 2, "early stopping watches it"
    parent = mlflow.get_run(result.parent_run_id)
    assert parent.data.params[keys.SWEEP_OBJECTIVE] == keys.VAL_BALANCED_ACCURACY
    assert choose.objective(parent) == keys.VAL_BALANCED_ACCURACY

    client = mlflow.MlflowClient()
    trials = mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"tags.`catdog.kind` = 'trial' and tags.`catdog.sweep_key` = '{result.key}'",
        output_format="list",
    )
    assert len(trials) == 2
    scores, accuracies = {}, []
    for run in trials:
        history = client.get_metric_history(run.info.run_id, keys.VAL_BALANCED_ACCURACY)
        assert len(history) == run.data.metrics["epochs_run"] >= 1, "logged every epoch"
        best = run.data.metrics[keys.best(keys.VAL_BALANCED_ACCURACY)]
        assert best == pytest.approx(max(h.value for h in history))
        # Each trial's score is its balanced accuracy, not its accuracy.
        trial = tuner.oracle.get_trial(run.data.tags[tags.TRIAL_ID])
        assert trial.score == pytest.approx(best)
        scores[run.info.run_id] = best
        accuracies.append(run.data.metrics[keys.best(keys.VAL_ACCURACY)])
    # Noise photos teach nothing: a trial answers mostly one class, which val accuracy (24 horses,
    # 3 zebras) scores far from the balanced accuracy the oracle was given.
    assert any(a != pytest.approx(b) for a, b in zip(accuracies, scores.values()))

    table = choose.table(result.parent_run_id)
    assert table.attrs["metric"] == keys.VAL_BALANCED_ACCURACY
    chosen = table.iloc[0]
    assert scores[chosen["run_id"]] == max(scores.values())
    assert chosen[keys.VAL_BALANCED_ACCURACY] == pytest.approx(max(scores.values()))
    tagged = [r for r in trials if r.data.tags.get(tags.BEST_TRIAL) == tags.TRUE]
    assert [scores[r.info.run_id] for r in tagged] == [max(scores.values())]
    # `compare` chooses on the sweep's objective unless told otherwise.
    shown = json.loads(
        CliRunner().invoke(main, ["compare", "--format", "json", "--plot", "c.png"]).stdout
    )
    assert shown["metric"] == keys.VAL_BALANCED_ACCURACY
    assert shown["rows"][0]["run_id"] == chosen["run_id"]
    # The kept trial's model, compiled with the metric, loads back through MLflow.
    model = mlflow.keras.load_model(f"runs:/{tagged[0].info.run_id}/model")
    assert "catdog>BalancedAccuracy" in json.dumps(model.get_compile_config())
