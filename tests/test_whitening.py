"""The `whiten` hyperparameter: a patch-whitening first layer adapted to the training photos once,
then carried, saved, resumed and served with the model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from catdog import models, sweepfile
from catdog.errors import CatdogError
from catdog.models.whitening import (
    AdaptWhitening,
    PatchWhitening,
    training_images,
    whitening_kernel,
)
from tests.test_gpu import MIRRORED_SETUP, run_mirrored

VALUES = {"width": 16, "augment": 0.0, "lr_schedule": "constant", "lr": 0.01, "whiten": True}


def _smooth_photos(n=40, side=18, seed=0):
    """Photos whose neighbouring pixels are correlated, as in real ones (0-255)."""
    noise = np.random.default_rng(seed).uniform(0, 255, (n, side + 2, side + 2, 3))
    return ((noise[:, :-2, :-2] + noise[:, 1:-1, 1:-1] + noise[:, 2:, 2:]) / 3).astype("float32")


def _patches(images):
    win = np.lib.stride_tricks.sliding_window_view(images, (3, 3), axis=(1, 2))[:, ::2, ::2]
    return win.transpose(0, 1, 2, 4, 5, 3).reshape(-1, 27)


def test_the_kernel_whitens_the_3x3_patches_it_came_from():
    """Applied to the contiguous 3x3 patches it was computed from, the filters give outputs of
    unit variance and no correlation (within the eigenvalue floor), in opposite pairs."""
    images = _smooth_photos() / 255
    kernel = whitening_kernel(images, 8)
    assert kernel.shape == (3, 3, 3, 8)
    np.testing.assert_allclose(kernel[..., 4:], -kernel[..., :4])
    patches = _patches(images)
    cov = np.cov(((patches - patches.mean(0)) @ kernel[..., :4].reshape(27, 4)).T)
    np.testing.assert_allclose(np.diag(cov), 1.0, atol=0.05)
    assert np.abs(cov - np.diag(np.diag(cov))).max() < 0.05
    # The layer's own convolution is the same product, at every other position.
    layer = PatchWhitening(8, strides=2)
    layer.build((None, 18, 18, 3))
    layer.adapt(images)
    # "same" at stride 2 on an even side pads after only: output i sees rows 2i to 2i + 2.
    out = np.array(layer(images.astype("float32")))[:, :8, :8, :4]
    np.testing.assert_allclose(
        out.reshape(-1, 4), (patches @ kernel[..., :4].reshape(27, 4)), rtol=1e-3, atol=1e-3
    )
    for bad in (7, 56):
        with pytest.raises(ValueError, match="even number of filters up to 54"):
            whitening_kernel(images, bad)


def test_whiten_is_opt_in_and_declared_only_where_a_stem_can_whiten(tmp_path):
    plain = models.get("xception").build(models.fixed_hyperparameters({"width": 16}), image_size=32)
    assert not any(isinstance(la, PatchWhitening) for la in plain.layers)
    assert "entry_conv" in [la.name for la in plain.layers]
    for arch in ("xception", "resnet"):
        assert models.get(arch).search_space(96).values["whiten"] is False
    for arch in ("baseline", "vgg"):
        assert "whiten" not in models.get(arch).search_space(96).values
    path = tmp_path / "s.toml"
    path.write_text('archs = ["baseline"]\n[hp.baseline]\nwhiten = true\n')
    with pytest.raises(CatdogError, match="'whiten' is not in this architecture's search space"):
        sweepfile.search_spaces(sweepfile.load(path))
    # Under [hp], the architectures that declare it take it; the others leave it out.
    path.write_text('archs = ["baseline", "xception"]\n[hp]\nwhiten = true\n')
    spaces = sweepfile.search_spaces(sweepfile.load(path))
    assert spaces["xception"].values["whiten"] is True and "whiten" not in spaces["baseline"].values


def test_a_fit_adapts_the_layer_once_and_never_trains_it(tmp_path):
    """The first fit sets the filters from the photos as the layer sees them (rescaled, not
    augmented) and marks them ready; they do not move in training; a later fit on other photos,
    a carried copy at another size and a saved-and-loaded model keep them."""
    import keras

    from catdog.search.strategies.focus.checkpoint import carry

    model = models.get("xception").build(models.fixed_hyperparameters(VALUES), image_size=32)
    layer = model.get_layer("entry_whiten")
    assert isinstance(layer, PatchWhitening) and not layer.is_ready and layer.filters == 32
    assert model.get_layer("entry_bn") and not layer.trainable_weights
    x = _smooth_photos(16, 32)
    y = np.array([0, 1] * 8, dtype="float32")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=models.adapt_callbacks([(x, y)]))
    assert layer.is_ready
    adapted = np.array(layer.kernel)
    np.testing.assert_allclose(adapted, whitening_kernel(x / 255, 32), rtol=1e-4, atol=1e-5)

    other = _smooth_photos(16, 32, seed=5)
    model.fit(other, y, batch_size=8, epochs=1, verbose=0, callbacks=[AdaptWhitening([other])])
    np.testing.assert_array_equal(np.array(layer.kernel), adapted)

    bigger = models.get("xception").build(models.fixed_hyperparameters(VALUES), image_size=48)
    carry(model, bigger)
    assert bigger.get_layer("entry_whiten").is_ready
    np.testing.assert_array_equal(np.array(bigger.get_layer("entry_whiten").kernel), adapted)

    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", compile=False)
    assert loaded.get_layer("entry_whiten").is_ready
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), 1e-5)
    keras.backend.clear_session()


def test_an_unready_layer_with_no_photos_is_one_clear_error():
    model = models.get("resnet").build(models.fixed_hyperparameters(VALUES), image_size=32)
    assert isinstance(model.get_layer("stem_whiten"), PatchWhitening)
    callback = AdaptWhitening(None)
    callback.set_model(model)
    with pytest.raises(ValueError, match="needs training photos"):
        callback.on_train_begin()
    assert training_images([(np.ones((3, 4, 4, 3)), 0)] * 3, photos=5).shape == (5, 4, 4, 3)


def test_a_whitened_model_trains_under_mixed_precision():
    import keras

    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        model = models.get("xception").build(models.fixed_hyperparameters(VALUES), image_size=32)
        x = _smooth_photos(8, 32)
        y = np.array([0, 1] * 4, dtype="float32")
        history = model.fit(
            x, y, batch_size=8, epochs=1, verbose=0, callbacks=models.adapt_callbacks([(x, y)])
        )
        assert np.isfinite(history.history["loss"][0])
        assert model.get_layer("entry_whiten").kernel.dtype == "float32"
        assert model.get_layer("entry_whiten").is_ready
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
        keras.backend.clear_session()


def test_train_with_whiten_logs_a_model_that_predicts_as_served(tiny_prepared, workdir):
    """`catdog train --set whiten=true` end to end: the run records the choice and the served
    model (loaded as `predict` and `mlflow models serve` load it) has the adapted layer."""
    import mlflow

    from catdog.inference import classify, load_classifier
    from catdog.train import train

    result = train(
        "xception",
        tiny_prepared,
        image_size=32,
        batch_size=8,
        epochs=2,
        hparams={"width": 16, "whiten": True},
    )
    assert mlflow.MlflowClient().get_run(result.run_id).data.params["whiten"] == "True"
    classifier = load_classifier(result.model_uri)
    layer = classifier.model.get_layer("entry_whiten")
    assert layer.is_ready and np.abs(np.array(layer.kernel)).max() > 1.0  # 1/sqrt(eigenvalue)
    photo = next(p for p in tiny_prepared.rglob("*.jpg"))
    (answer,) = classify(classifier, [photo.read_bytes()])
    assert answer.error is None and answer.label in classifier.classes


# Two logical CPUs stand in for two GPUs, in a child process (see tests/test_gpu.py).
MIRRORED_CHILD = (
    MIRRORED_SETUP
    + """
values = json.loads(sys.argv[2])
with strategy.scope():
    model = models.get("xception").build(
        models.fixed_hyperparameters(values), image_size=32, num_classes=splits.num_classes)
model.fit(splits.train, validation_data=splits.val, epochs=1, verbose=0,
          callbacks=models.adapt_callbacks(splits.train))
layer = model.get_layer("entry_whiten")
copies = [np.array(c) for c in strategy.experimental_local_results(layer.kernel.value)]
print(json.dumps({
    "replicas": strategy.num_replicas_in_sync,
    "ready": layer.is_ready,
    "copies": len(copies),
    "same": all(np.array_equal(c, copies[0]) for c in copies),
    # Glorot's stand-in filters are within 0.32; whitening ones are 1/sqrt(eigenvalue) large.
    "whitened": float(np.abs(copies[0]).max()) > 1.0}))
"""
)


@pytest.mark.slow
def test_under_mirrored_strategy_every_replica_has_the_adapted_filters(tiny_prepared, tmp_path):
    """Adapted outside the replicas, at the fit's start: both devices' copies get the filters."""
    result = run_mirrored(MIRRORED_CHILD, tmp_path, str(tiny_prepared), json.dumps(VALUES))
    assert result == {"replicas": 2, "ready": True, "copies": 2, "same": True, "whitened": True}
