"""Pretrained weights whenever they can be had, tested without a network: Keras loads
MobileNetV2's ImageNet file from $KERAS_HOME/models without a hash check, so the tests put a
randomly initialised MobileNetV2's weights there under that file's name."""

from __future__ import annotations

import urllib.error

import pytest

from catdog import models, sweepfile

SIZE = 96


def _cache_weights(home, size: int = SIZE) -> None:
    """Save a random MobileNetV2 (no top) where Keras looks for its ImageNet file."""
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    from catdog.models.transfer import weights_file

    folder = home / "models"
    folder.mkdir(parents=True, exist_ok=True)
    model = keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(size, size, 3)
    )
    with h5py.File(folder / weights_file(size), "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    keras.backend.clear_session()


@pytest.fixture
def offline(monkeypatch):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("no network here")

    monkeypatch.setattr("urllib.request.urlopen", refuse)


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    home = tmp_path / "keras"
    home.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home


def test_cached_weights_are_found_and_missing_ones_explained(keras_home, offline):
    entry = models.get("transfer")
    ok, why = entry.weights_available(SIZE)
    assert not ok and "cannot be downloaded" in why and str(keras_home) in why
    _cache_weights(keras_home)
    assert entry.weights_available(SIZE) == (True, f"cached in {keras_home / 'models'}")
    assert models.get("resnet").weights_available(SIZE)[0], "from scratch needs no weights"


def test_offline_the_sweep_leaves_transfer_out_in_one_sentence(keras_home, offline, logs):
    from catdog.search import sweep

    cfg = sweepfile.load(None, archs=("resnet", "transfer"), image_size=SIZE)
    kept = sweep._with_weights(cfg)
    assert kept.archs == ("resnet",)
    said = {r.getMessage() for r in logs.records if "leaving transfer out" in r.getMessage()}
    assert len(said) == 1, "one sentence"
    said = said.pop()
    assert "cannot be downloaded" in said and "\n" not in said
    assert sweep._with_weights(
        sweepfile.load(None, archs=("transfer",), image_size=SIZE, pretrained=False)
    ).archs == ("transfer",), "without --pretrained nothing is needed"


@pytest.mark.slow
def test_with_cached_weights_focus_plans_transfer_and_fits_frozen_then_fine_tuned(
    keras_home, offline, tiny_prepared, workdir, logs
):
    from catdog.search import sweep
    from catdog.tracking import runlog

    _cache_weights(keras_home)
    cfg = sweepfile.load(
        None,
        archs=("transfer",),
        strategy="focus",
        tuner="random",
        trials=1,
        epochs=1,
        image_size=SIZE,
        image_sizes=[SIZE],
        batch_size=8,
        data=str(tiny_prepared),
        hp={"transfer": {"backbone": "mobilenet_v2", "fine_tune": 0}},
    )
    result = sweep.run(cfg)
    assert "leaving transfer out" not in logs.text
    plan = runlog.read_text(result.parent_run_id, "plan.json")
    assert '"transfer"' in plan, "the plan times transfer like any architecture"
    long_run = runlog.get(result.archs["transfer"]["run_id"])
    phases = long_run.data.params["phases"]
    assert phases.startswith("2@96px x1 {'fine_tune': 0}"), "a frozen phase first"
    assert "6@96px x0.1 {'fine_tune': 40}" in phases, "then its top layers fine-tuned"
    epochs = [step for step, _ in runlog.history(long_run.info.run_id, "val_accuracy")]
    assert epochs == list(range(8))
