"""`catdog train` end to end on tiny generated images, read back through MLflow's API."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest

from catdog.train import train


def test_train_records_a_complete_run(tiny_prepared, workdir):
    result = train(
        "bn_dropout",
        tiny_prepared,
        image_size=32,
        batch_size=8,
        epochs=3,
        seed=3,
        patience=5,
        lr=0.002,
    )
    client = mlflow.MlflowClient()
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    for name in (
        "arch",
        "image_size",
        "batch_size",
        "epochs",
        "seed",
        "lr",
        "optimizer",
        "dropout",
        "augment",
        "precision",
        "distribution",
        "param_count",
    ):
        assert name in params, f"param {name} missing"
    assert float(params["lr"]) == 0.002 and params["optimizer"] == "adam"  # default recorded too
    for metric in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_auc"):
        history = client.get_metric_history(result.run_id, metric)
        assert [h.step for h in history] == list(range(3)), metric
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "plots")}
    assert {
        "plots/learning_curves.png",
        "plots/val_confusion.png",
        "plots/val_roc.png",
    } <= artifacts
    tags = run.data.tags
    assert tags["catdog.dataset_digest"] and tags["catdog.version"]
    assert "catdog.pkg.tensorflow" in tags
    assert run.inputs.dataset_inputs, "the dataset is recorded as the run's input"

    model_info = mlflow.models.get_model_info(result.model_uri)
    assert model_info.signature is not None
    assert model_info.saved_input_example_info is not None, "input example logged"
    model = mlflow.keras.load_model(result.model_uri)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    p = model.predict(x, verbose=0)
    assert p.shape == (2, 1) and np.all((0 <= p) & (p <= 1))


def test_failed_run_is_marked_failed(tiny_prepared, workdir, monkeypatch):
    import keras

    def boom(*a, **k):
        raise RuntimeError("simulated crash during fit")

    monkeypatch.setattr(keras.Model, "fit", boom)
    with pytest.raises(RuntimeError):
        train("baseline", tiny_prepared, image_size=32, batch_size=8, epochs=1)
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert [r.info.status for r in runs] == ["FAILED"]


def test_train_prepares_a_raw_source_once(workdir):
    from tests.imagegen import make_layout, zip_dir

    src = zip_dir(make_layout(workdir / "raw", "petimages", 10, seed=5), workdir / "pets.zip")
    first = train("baseline", src, image_size=32, batch_size=8, epochs=1)
    prepared = list((workdir / "data" / "prepared").iterdir())
    assert len(prepared) == 1
    second = train("baseline", src, image_size=32, batch_size=8, epochs=1)
    assert list((workdir / "data" / "prepared").iterdir()) == prepared
    assert first.run_id != second.run_id


@pytest.mark.real_data
def test_smoke_on_real_photos(real_data, workdir):
    """The real Kaggle photos: prepare the mini set, train the baseline for one short epoch."""
    result = train("baseline", real_data, image_size=48, batch_size=64, epochs=1)
    assert result.params["n_train"] == 3200 and result.params["n_val"] == 800
    assert 0.3 < result.summary["best_val_accuracy"] <= 1.0


def test_epoch_logger_is_a_keras_callback():
    import keras

    from catdog.tracking.callbacks import EpochLogger, fit_callbacks

    callbacks, logger = fit_callbacks("run", "label", epochs=2, patience=1)
    assert isinstance(logger, EpochLogger) and isinstance(logger, keras.callbacks.Callback)
    assert any(isinstance(c, keras.callbacks.EarlyStopping) for c in callbacks)
