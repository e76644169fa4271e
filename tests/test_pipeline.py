"""The shared tf.data pipeline: one decode per image and size, raw pixels, stable splits."""

from __future__ import annotations

import numpy as np

from catdog import pipeline
from catdog.data.prepare import load_manifest, read_summary


def test_splits_batches_and_pixel_range(tiny_prepared, workdir):
    splits = pipeline.load(tiny_prepared, 32, 8, seed=1)
    x, y = next(iter(splits.train))
    assert x.shape[1:] == (32, 32, 3) and x.dtype.name == "float32"
    assert float(np.max(x)) > 1.0, "pixels must stay raw 0-255: rescaling is the model's job"
    assert set(np.unique(y.numpy())) <= {0.0, 1.0}
    manifest = load_manifest(tiny_prepared)
    assert splits.sizes["train"] == (manifest["split"] == "train").sum()
    assert splits.sizes["val"] == (manifest["split"] == "val").sum()
    assert splits.test is None  # the test split is not even decoded unless asked for


def test_each_image_is_decoded_once_per_size(tiny_prepared, workdir):
    pipeline.clear_cache()
    digest = read_summary(tiny_prepared)["digest"]
    key = (digest, "train", 24)
    start = pipeline.DECODES[key]
    for _ in range(3):  # three "trials" of the same size in one process
        splits = pipeline.load(tiny_prepared, 24, 4)
        for _epoch in range(2):
            for _batch in splits.train:
                pass
    assert pipeline.DECODES[key] - start == splits.sizes["train"]


def test_cache_file_when_over_the_memory_budget(tiny_prepared, workdir, monkeypatch):
    pipeline.clear_cache()
    monkeypatch.setenv("CATDOG_CACHE_MEMORY_GB", "0")
    monkeypatch.setenv("CATDOG_CACHE_DIR", str(workdir / "cache"))
    dec = pipeline.decoded(tiny_prepared, "val", 20)
    assert dec.on_disk and isinstance(dec.images, np.memmap)
    files = list((workdir / "cache").glob("*.npy"))
    assert len(files) == 1 and not list((workdir / "cache").glob(".*tmp"))
    pipeline.clear_cache()
    again = pipeline.decoded(tiny_prepared, "val", 20)  # a later process reuses the file
    np.testing.assert_array_equal(np.asarray(dec.images), np.asarray(again.images))


def test_shuffle_is_seeded_and_reshuffles_each_epoch(tiny_prepared, workdir):
    dec = pipeline.decoded(tiny_prepared, "train", 16)
    ds = pipeline.dataset(dec, 64, shuffle=True, seed=3)
    first = np.concatenate([y.numpy() for _, y in ds])
    second = np.concatenate([y.numpy() for _, y in ds])
    again = np.concatenate([y.numpy() for _, y in pipeline.dataset(dec, 64, shuffle=True, seed=3)])
    np.testing.assert_array_equal(first, again)
    assert sorted(first) == sorted(second)


def test_batches_come_with_fixed_settings_not_the_autotuner(tiny_prepared, workdir):
    """The autotuner made half the epochs 1.7x slower on 2 cores (benchmarks.epochtime): the
    datasets every fit, evaluation and prediction read have it off, and both settings give the
    same batches."""
    dec = pipeline.decoded(tiny_prepared, "train", 16)
    fixed = pipeline.dataset(dec, 8, shuffle=True, seed=5)
    tuned = pipeline.dataset(dec, 8, shuffle=True, seed=5, autotune=True)
    assert fixed.options().autotune.enabled is False
    assert tuned.options().autotune.enabled is not False
    splits = pipeline.load(tiny_prepared, 16, 8, splits=("train", "val"))
    assert splits.train.options().autotune.enabled is False
    assert splits.val.options().autotune.enabled is False
    for (x1, y1), (x2, y2) in zip(fixed, tuned, strict=True):
        np.testing.assert_array_equal(x1.numpy(), x2.numpy())
        np.testing.assert_array_equal(y1.numpy(), y2.numpy())
