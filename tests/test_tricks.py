"""The opt-in training tricks (label smoothing, EMA weights, random translation): off by default,
each reaches the model when asked for, and an EMA fit keeps and saves the weights it validated."""

from __future__ import annotations

import numpy as np
import pytest

from catdog import models
from catdog.errors import CatdogError
from catdog.models.common import EMA_MOMENTUM, OPT_IN, EMAWeights, schedule_callbacks

TRICKS = {"label_smoothing": 0.1, "ema": True, "translate": 0.1}


@pytest.mark.parametrize("name", models.names())
def test_tricks_are_declared_off_and_not_searched(name):
    hp = models.get(name).search_space()
    declared = {h.name: h for h in hp.space}
    only = {"whiten": ("xception", "resnet"), "stem_pool": ("xception",)}  # their stems only
    for trick in OPT_IN:
        if name not in only.get(trick, (name,)):
            assert trick not in hp.values
            continue
        assert hp.values[trick] == 0.0
        assert type(declared[trick]).__name__ == "Fixed", "a sweep draws it only if asked to"


def test_the_default_model_has_no_trick():
    model = models.get("baseline").build(image_size=32)
    assert model.loss == "binary_crossentropy" and not model.optimizer.use_ema
    assert "aug_translate" not in [layer.name for layer in model.layers]
    assert [type(c).__name__ for c in schedule_callbacks({"lr_schedule": "cosine"}, 4)] == [
        "LearningRateScheduler"
    ]


def test_each_trick_reaches_the_model():
    model = models.get("baseline").build(models.fixed_hyperparameters(TRICKS), image_size=32)
    assert model.loss.get_config()["label_smoothing"] == pytest.approx(0.1)
    assert model.optimizer.use_ema and model.optimizer.ema_momentum == EMA_MOMENTUM
    shift = model.get_layer("aug_translate")
    assert shift.height_factor == shift.width_factor == pytest.approx(0.1)
    momentum = models.get("baseline").build(
        models.fixed_hyperparameters({"ema": 0.9}), image_size=32
    )
    assert momentum.optimizer.ema_momentum == pytest.approx(0.9)
    callbacks = schedule_callbacks({"lr_schedule": "cosine", **TRICKS}, 4)
    # The schedule stays first: the final fit's fallback takes it by position (search/retrain).
    assert [type(c).__name__ for c in callbacks] == ["LearningRateScheduler", "EMAWeights"]


def test_a_sweep_file_can_search_a_trick():
    import keras_tuner as kt

    from catdog import sweepfile

    declared = models.get("baseline").search_space().values
    hp = kt.HyperParameters()
    sweepfile.apply_hp(hp, {"translate": [0.0, 0.1]}, declared)
    models.get("baseline").build(hp, image_size=32)
    assert [h.values for h in hp.space if h.name == "translate"] == [[0.0, 0.1]]


def test_weight_decay_reaches_the_optimizer_and_survives_a_checkpoint(tmp_path):
    """Decoupled (Keras's `weight_decay`, AdamW's rule): a step with no gradient still shrinks
    every trainable weight by lr * weight_decay; a loaded checkpoint (a resumed long fit) keeps
    the rule."""
    import keras

    values = {"weight_decay": 0.4, "lr": 0.01, "optimizer": "adam", "augment": 0.0}
    model = models.get("baseline").build(models.fixed_hyperparameters(values), image_size=32)
    assert model.optimizer.weight_decay == pytest.approx(0.4)
    assert models.get("baseline").build(image_size=32).optimizer.weight_decay is None
    weights = [np.array(v) for v in model.trainable_variables]
    zero = [np.zeros_like(w) for w in weights]
    model.optimizer.apply_gradients(zip(zero, model.trainable_variables))
    for before, after in zip(weights, model.trainable_variables):
        np.testing.assert_allclose(np.asarray(after), before * (1 - 0.01 * 0.4), rtol=1e-5)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.optimizer.weight_decay == pytest.approx(0.4)


def test_label_smoothing_needs_two_classes():
    hp = models.fixed_hyperparameters({"label_smoothing": 0.1})
    with pytest.raises(CatdogError, match="two classes"):
        models.get("baseline").build(hp, image_size=32, num_classes=3)


def test_an_ema_fit_validates_keeps_and_saves_the_average(tmp_path):
    """Also when a callback stops the fit early, where Keras's SwapEMAWeights ends on the raw
    weights."""
    import keras

    values = {"ema": 0.5, "augment": 0.0, "lr_schedule": "constant", "lr": 0.01}
    model = models.get("baseline").build(models.fixed_hyperparameters(values), image_size=32)
    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    y = np.array([0, 1, 1, 0, 1, 1, 1, 0], dtype="float32")
    raw = []

    class Spy(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raw[:] = [np.array(v) for v in self.model.trainable_weights]

        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = epoch == 1  # 2 of 3 epochs

    callbacks = schedule_callbacks(values, 3)
    assert any(isinstance(c, EMAWeights) for c in callbacks)
    history = model.fit(
        x,
        y,
        batch_size=8,
        epochs=3,
        validation_data=(x, y),
        verbose=0,
        callbacks=[Spy(), *callbacks],
    )
    assert len(history.history["val_loss"]) == 2
    kept = [np.array(v) for v in model.trainable_weights]
    averages = [np.array(v) for v in model.optimizer._model_variables_moving_average]
    for k, a in zip(kept, averages):
        np.testing.assert_array_equal(k, a)
    assert any(not np.allclose(k, r) for k, r in zip(kept, raw)), "the average is not the raw"
    loss = model.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)["loss"]
    assert loss == pytest.approx(history.history["val_loss"][-1], rel=1e-5), "the one validated"
    model.save(tmp_path / "m.keras")
    saved = keras.saving.load_model(tmp_path / "m.keras")
    for k, s in zip(kept, saved.trainable_weights):
        np.testing.assert_array_equal(k, np.array(s))
    keras.backend.clear_session()


def test_tta_views_are_the_photo_its_mirror_and_their_shifts():
    from benchmarks.tricks import shifted, views

    x = np.arange(2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3)
    down = shifted(x, 1, 0)
    np.testing.assert_array_equal(down[:, 1:], x[:, :-1])  # row r is the photo's row r - 1
    np.testing.assert_array_equal(down[:, 0], x[:, 0])  # the edge mirrored in
    right = shifted(x, 0, -1)
    np.testing.assert_array_equal(right[:, :, :-1], x[:, :, 1:])
    both = views(x, 1)
    assert len(both) == 10
    np.testing.assert_array_equal(both[1], x[:, :, ::-1])


def test_centralised_gradients_have_no_mean_over_each_outputs_inputs():
    import keras

    from benchmarks.modeltricks import centralised

    conv = keras.layers.Conv2D(4, 3)
    conv.build((None, 8, 8, 3))
    g = np.random.default_rng(1).normal(size=(3, 3, 3, 4)).astype("float32") + 5
    out = np.array(centralised(g, conv.kernel))
    np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(out - g, np.broadcast_to((out - g)[:1, :1, :1], g.shape), atol=1e-5)
    sep = keras.layers.SeparableConv2D(4, 3)
    sep.build((None, 8, 8, 3))
    d = np.random.default_rng(2).normal(size=(3, 3, 3, 1)).astype("float32") + 5
    np.testing.assert_allclose(
        np.array(centralised(d, sep.depthwise_kernel)).mean(axis=(0, 1)), 0.0, atol=1e-5
    )
    bias = np.ones(4, "float32")
    np.testing.assert_array_equal(np.array(centralised(bias, conv.bias)), bias)


@pytest.mark.parametrize("tricks", [{"frozen_bn": True}, {"gc": True, "sam": True}])
def test_the_model_tricks_change_what_trains(tricks):
    """Frozen BN scales stay as set through a fit while the shifts move; a GC and SAM
    model trains (its weights move, its loss is finite) and keeps the catdog model's layers."""
    import keras

    from benchmarks import modeltricks

    values = {"width": 16, "augment": 0.0, "lr_schedule": "constant", "lr": 0.01}
    model = models.get("xception").build(models.fixed_hyperparameters(values), image_size=32)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (16, 32, 32, 3)).astype("float32")
    y = np.array([0, 1] * 8, dtype="float32")
    trained = modeltricks.apply(model, tricks, lr=0.01)
    before = {v.path: np.array(v) for v in trained.weights}
    history = trained.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1]) and "accuracy" in history.history
    after = {v.path: np.array(v) for v in trained.weights}
    moved = {p for p in before if not np.array_equal(before[p], after[p])}
    bn = [layer for layer in trained.layers if isinstance(layer, keras.layers.BatchNormalization)]
    if tricks.get("frozen_bn"):
        assert all(layer.gamma.path not in moved for layer in bn)
        assert all(layer.beta.path in moved for layer in bn)
    else:
        assert trained is not model and [la.name for la in trained.layers] == [
            la.name for la in model.layers
        ]
        assert all(layer.gamma.path in moved for layer in bn)
    keras.backend.clear_session()


def test_stem_pool_quarters_the_body_and_only_xception_declares_it(tmp_path):
    """`stem_pool`: the Xception-style entry pools 2x2, so its body runs at half the side; no
    weights are added, so a model carries to another size as before. ResNet's stem pools
    already: asking it to pool again is one clear sentence."""
    from catdog import sweepfile

    values = {"width": 16, "whiten": True}
    plain = models.get("xception").build(models.fixed_hyperparameters(values), image_size=64)
    pooled = models.get("xception").build(
        models.fixed_hyperparameters({**values, "stem_pool": True}), image_size=128
    )
    assert "entry_pool" not in [la.name for la in plain.layers]
    assert tuple(pooled.get_layer("entry_pool").output.shape[1:]) == (32, 32, 32)
    # The body at 128 px pooled sees what it saw at 64 px unpooled, with the same weights.
    assert pooled.get_layer("sep1_add").output.shape == plain.get_layer("sep1_add").output.shape
    assert [w.shape for w in pooled.weights] == [w.shape for w in plain.weights]
    x = np.random.default_rng(0).uniform(0, 255, (4, 128, 128, 3)).astype("float32")
    probs = np.asarray(pooled.predict_on_batch(x))
    assert probs.shape == (4, 1) and np.all((probs >= 0) & (probs <= 1))

    path = tmp_path / "s.toml"
    path.write_text('archs = ["resnet"]\n[hp.resnet]\nstem_pool = true\n')
    with pytest.raises(CatdogError, match="'stem_pool' is not in this architecture's search"):
        sweepfile.search_spaces(sweepfile.load(path))


def test_the_fused_batch_norm_is_keras_arithmetic_and_updates_statistics_alike():
    import keras

    from benchmarks.stepcost import FusedBatchNorm

    rng = np.random.default_rng(0)
    batch = (rng.normal(size=(4, 6, 6, 5)) * 3 + 1).astype(np.float32)
    plain = keras.layers.BatchNormalization(momentum=0.9)
    plain.build(batch.shape)
    fused = FusedBatchNorm.layer().from_config(plain.get_config())
    fused.build(batch.shape)
    fused.set_weights(
        [rng.uniform(0.5, 2, w.shape).astype(np.float32) for w in plain.get_weights()]
    )
    plain.set_weights(fused.get_weights())
    before = [np.array(w) for w in fused.get_weights()]
    np.testing.assert_allclose(plain(batch, training=True), fused(batch, training=True), atol=1e-4)
    for a, b in zip(plain.get_weights(), fused.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5)  # gamma, beta, moving mean and variance
    assert not np.allclose(fused.moving_variance, before[3]), "a training call moves them"
    np.testing.assert_allclose(plain(batch), fused(batch), atol=1e-5)  # inference: Keras's own


def test_stepcost_splits_a_step_into_its_parts(tmp_path):
    import json

    from benchmarks import stepcost

    out = tmp_path / "stepcost.json"
    (row,) = stepcost.main(["--sizes", "32", "--steps", "2", "--out", str(out)])
    assert row["size"] == 32 and row["batch"] == stepcost.BATCH
    assert 0 < row["augmentation_ms"] < row["forward_ms"] < row["step_ms"], (
        "augmentation is part of the forward pass, which is part of the step"
    )
    assert row["backward_update_ms"] == pytest.approx(row["step_ms"] - row["forward_ms"])
    assert row["batch_norm_layers"] == 8 and row["fused_bn_agrees"] is True
    assert row["step_keras_bn_ms"] > 0 and row["step_fused_bn_ms"] > 0
    saved = json.loads(out.read_text())
    assert saved["rows"][0]["step_ms"] == row["step_ms"] and saved["machine"]


def test_epochtime_times_both_pipelines_epoch_by_epoch(tiny_prepared, tmp_path):
    import json

    from benchmarks import epochtime

    out = tmp_path / "epochtime.json"
    row = epochtime.main(
        ["--data", str(tiny_prepared), "--size", "32", "--epochs", "2", "--out", str(out)]
    )
    assert row["size"] == 32 and row["images"] == 20  # the tiny set's train split
    for side in epochtime.SIDES:
        assert len(row["seconds"][side]) == 2 and all(s > 0 for s in row["seconds"][side])
    assert row["autotuned_over_shipped"] == pytest.approx(
        row["autotuned_mean_s"] / row["shipped_mean_s"]
    )
    assert "autotuned / shipped" in epochtime.report(row)
    assert json.loads(out.read_text())["row"]["seconds"] == row["seconds"]


def test_the_long_fit_variants_train_what_they_say(tiny_prepared):
    """`stem_pool_augment` changes only `augment`, `stem_pool_batch16` only the training batch,
    `stem_pool_rotate10` only `rotate`, `stem_pool_rotate10_wd*` only `weight_decay` on top, and
    the batch reaches the photos the fit sees."""
    from benchmarks import tricks
    from catdog import pipeline

    base = tricks.VARIANTS["stem_pool"]
    assert tricks.VARIANTS["stem_pool_augment"] == {**base, "augment": 0.25}
    assert tricks.VALUES["augment"] != 0.25, "the variant must differ from what cpu.toml ships"
    assert tricks.VARIANTS["stem_pool_batch16"] == base
    assert tricks.VARIANTS["stem_pool_rotate10"] == {**base, "rotate": 10}
    for decay in (0.1, 0.4):  # the weight-decay rows: only `weight_decay` on the rotate10 build
        rotated = tricks.VARIANTS["stem_pool_rotate10"]
        assert tricks.VARIANTS[f"stem_pool_rotate10_wd{decay:g}"] == {
            **rotated,
            "weight_decay": decay,
        }
    assert tricks.BATCHES == {"stem_pool_batch16": 16} and tricks.BATCH == 32
    n = len(pipeline.decoded(tiny_prepared, "train", 32).labels)
    assert n > 4
    for batch in (4, n + 1):
        x, y = next(iter(tricks.train_set(tiny_prepared, 32, 0, None, batch)))
        assert x.shape[0] == y.shape[0] == min(batch, n)


def test_rotate_holds_every_drawn_angle_to_its_degrees():
    """`augment` 0.15 turns photos up to 54 degrees; `rotate` holds the rotation to the degrees
    asked for, in the angles a training batch draws, and refuses what is not 0 to 180."""
    import keras

    values = {"width": 16, "augment": 0.15, "lr_schedule": "constant"}
    x = np.random.default_rng(0).uniform(0, 255, (256, 32, 32, 3)).astype("float32")

    def largest_angle(extra):
        hp = models.fixed_hyperparameters({**values, **extra})
        model = models.get("xception").build(hp, image_size=32)
        turn = model.get_layer("aug_rotate")
        return np.abs(np.array(turn.get_random_transformation(x, training=True)["angle"])).max()

    assert largest_angle({}) > 10, "augment's strength turns some photos more than 10 degrees"
    assert 5 < largest_angle({"rotate": 10}) <= 10
    with pytest.raises(CatdogError, match="rotate is the rotation's limit in degrees"):
        largest_angle({"rotate": 200})
    keras.backend.clear_session()
