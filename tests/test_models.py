"""Every registered architecture builds, takes raw pixels and trains one step.

Parametrized over the registry: a new entry is tested without editing this file."""

from __future__ import annotations

import numpy as np
import pytest

from catdog import models
from catdog.errors import CatdogError


@pytest.mark.parametrize("name", models.names())
def test_builds_and_trains_one_step(name):
    import keras

    entry = models.get(name)
    model = entry.build(image_size=32)
    assert model.input_shape == (None, 32, 32, 3)
    assert model.output_shape == (None, 1)
    assert model.layers[1].name == "rescale"  # raw 0-255 pixels in; rescaling is the first layer
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    y = np.array([0, 1, 1, 1], dtype="float32")  # unbalanced: a non-zero bias gradient
    before = [w.copy() for w in model.get_weights()]
    model.train_on_batch(x, y)
    changed = [not np.allclose(a, b) for a, b in zip(before, model.get_weights())]
    assert any(changed), "one training step changed no weight"
    p = model.predict(x, verbose=0)
    assert p.shape == (4, 1) and np.all((p >= 0) & (p <= 1))
    keras.backend.clear_session()


@pytest.mark.parametrize("name", models.names())
def test_many_classes_get_a_softmax_head(name):
    import keras

    model = models.get(name).build(image_size=32, num_classes=3)
    assert model.output_shape == (None, 3) and model.layers[-1].name == "probabilities"
    assert model.loss == "sparse_categorical_crossentropy"
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(model(x, training=False).numpy().sum(axis=1), 1, rtol=1e-5)
    keras.backend.clear_session()


def test_a_softmax_head_trains_on_class_indices():
    import keras

    model = models.get("baseline").build(image_size=32, num_classes=3)
    x = np.random.default_rng(0).uniform(0, 255, (6, 32, 32, 3)).astype("float32")
    y = np.array([0, 1, 2, 2, 1, 0], dtype="float32")  # class indices, as the pipeline gives them
    logs = model.train_on_batch(x, y, return_dict=True)
    assert set(logs) == {"loss", "accuracy", "balanced_accuracy"} and np.isfinite(logs["loss"])
    keras.backend.clear_session()


def test_two_classes_keep_the_one_sigmoid_head():
    model = models.get("baseline").build(image_size=32, num_classes=2)
    assert model.output_shape == (None, 1) and model.loss == "binary_crossentropy"
    assert model.layers[-1].activation.__name__ == "sigmoid"
    with pytest.raises(ValueError, match="at least two classes"):
        models.get("baseline").build(image_size=32, num_classes=1)


@pytest.mark.parametrize("name", models.names())
def test_search_space_defaults_are_the_plain_run(name):
    hp = models.get(name).search_space()
    values = hp.values
    assert values["optimizer"] == "adam" and values["lr"] == pytest.approx(1e-3)
    assert values["augment"] == pytest.approx(0.1)


def test_augmentation_is_off_at_inference():
    model = models.get("baseline").build(image_size=32)
    x = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(model(x, training=False), model(x, training=False))


def test_baseline_and_bn_dropout_are_the_notebook_networks():
    base = models.get("baseline").build(image_size=64)
    bn = models.get("bn_dropout").build(image_size=64)
    convs = [layer.filters for layer in base.layers if layer.__class__.__name__ == "Conv2D"]
    dense = [layer.units for layer in base.layers if layer.__class__.__name__ == "Dense"]
    assert convs == [32, 64, 128] and dense == [128, 64, 1]
    kinds = [layer.__class__.__name__ for layer in bn.layers]
    assert kinds.count("BatchNormalization") == 3 and kinds.count("Dropout") == 2
    assert "BatchNormalization" not in [layer.__class__.__name__ for layer in base.layers]


def test_fixed_hyperparameters_reach_the_builder():
    from catdog.models import fixed_hyperparameters

    hp = fixed_hyperparameters({"dropout": 0.4, "optimizer": "sgd"})
    model = models.get("bn_dropout").build(hp, image_size=32)
    assert hp.values["dropout"] == 0.4
    assert model.optimizer.__class__.__name__ == "SGD"


def test_unknown_architecture_lists_the_known_ones():
    with pytest.raises(CatdogError) as err:
        models.get("alexnet")
    for name in models.names():
        assert name in str(err.value)


def test_names_filters_by_pattern():
    assert models.names("bn*") == ["bn_dropout"]
    assert set(models.names()) >= {
        "baseline",
        "bn_dropout",
        "vgg",
        "resnet",
        "xception",
        "transfer",
    }


FAMILY_SOURCE = """
from catdog.models.registry import register


@register(family="test", description="a family found by discovery alone")
def {name}(hp, *, input_shape):
    raise AssertionError("never built by this test")
"""


def test_a_new_family_module_is_discovered(tmp_path, monkeypatch):
    import importlib
    import sys

    from catdog.models import registry

    # A new file in the package: one family module, one private helper that must be skipped.
    (tmp_path / "tiny_test_family.py").write_text(FAMILY_SOURCE.format(name="tiny_test_arch"))
    (tmp_path / "_tiny_private.py").write_text(FAMILY_SOURCE.format(name="tiny_private_arch"))
    monkeypatch.setattr(models, "__path__", [*models.__path__, str(tmp_path)])
    importlib.invalidate_caches()
    before = set(models.names())
    try:
        found = models.discover_families()
        assert "tiny_test_family" in found and "_tiny_private" not in found
        assert not {"registry", "common"} & set(found)
        assert {"notebook", "resnet", "transfer", "vgg", "xception"} <= set(found)
        entry = models.get("tiny_test_arch")
        assert (
            entry.family == "test" and entry.builder.__module__ == "catdog.models.tiny_test_family"
        )
        assert set(models.names()) == before | {
            "tiny_test_arch"
        }  # nothing else registered, nothing twice
        assert (
            models.discover_families() == found
        )  # idempotent: a second call registers nothing again
    finally:
        registry._REGISTRY.pop("tiny_test_arch", None)
        registry._REGISTRY.pop("tiny_private_arch", None)
        for name in ("tiny_test_family", "_tiny_private"):
            sys.modules.pop(f"catdog.models.{name}", None)
            if hasattr(models, name):
                delattr(models, name)
    assert "tiny_test_arch" not in models.names()
