"""The one input pipeline: a prepared dataset -> train/val/test `tf.data.Dataset`s.

Each image is decoded and resized once per (dataset, split, image size) and kept as a uint8
array: in memory when it fits the budget, otherwise in a `.npy` cache file that is memory-mapped
(and reused by later processes). Every model and trial of that size in this process then reads
the same decoded array, so a sweep decodes each image once. Batches are gathered from the array,
shuffled per epoch with a fixed seed, and prefetched two batches ahead (tf.data's autotuner
off: see `dataset`).

Pixels stay raw 0-255 (float32 at the model's door): rescaling is the model's first layer, so a
saved model takes exactly what serving and prediction feed it.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from catdog.data.prepare import load_manifest, read_summary
from catdog.data.prepared import classes as dataset_classes
from catdog.errors import CatdogError
from catdog.log import get_logger

log = get_logger(__name__)

SPLITS = ("train", "val", "test")
DEFAULT_MEMORY_BUDGET_GB = 8.0

# How many images were decoded, per (digest, split, size): the benchmark checks it stays at one
# decode per image for a whole sweep.
DECODES: Counter = Counter()
_CACHE: dict[tuple[str, str, int], Decoded] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Decoded:
    images: np.ndarray  # (n, size, size, 3) uint8, in RAM or a read-only memmap
    labels: np.ndarray  # (n,) float32 class indices, in the dataset's class order
    paths: tuple[str, ...]
    on_disk: bool

    @property
    def nbytes(self) -> int:
        return int(self.images.nbytes)


@dataclass
class Splits:
    train: object
    val: object
    test: object
    sizes: dict[str, int]
    image_size: int
    batch_size: int
    digest: str
    root: Path
    classes: tuple[str, ...] = ()  # the dataset's, in order: label i is classes[i]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def decoded(self, split: str) -> Decoded:
        return decoded(self.root, split, self.image_size)

    def predict(self, model, split: str, tta: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(labels, (n, classes) probabilities) of an unshuffled split, in manifest order."""
        dec = self.decoded(split)
        return dec.labels, predict(model, dec, self.batch_size, tta)


def decode_resize(raw, image_size: int):
    """JPEG bytes -> (size, size, 3) float32 in 0-255. Shared by training, predict and serving."""
    import tensorflow as tf

    img = tf.io.decode_jpeg(raw, channels=3, dct_method="INTEGER_ACCURATE")
    img = tf.image.resize(img, (image_size, image_size), method="bilinear", antialias=True)
    return tf.clip_by_value(tf.round(img), 0.0, 255.0)


def memory_budget_bytes() -> int:
    gb = float(os.environ.get("CATDOG_CACHE_MEMORY_GB", DEFAULT_MEMORY_BUDGET_GB))
    return int(gb * (1 << 30))


def cache_dir() -> Path:
    return Path(os.environ.get("CATDOG_CACHE_DIR", Path("data") / "cache"))


def decoded(root: str | Path, split: str, image_size: int) -> Decoded:
    """The decoded, resized images of one split, decoding them only the first time."""
    root = Path(root)
    digest = read_summary(root)["digest"]
    key = (digest, split, int(image_size))
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = _decode_split(root, digest, split, int(image_size))
        return _CACHE[key]


def _decode_split(root: Path, digest: str, split: str, size: int) -> Decoded:
    import tensorflow as tf

    manifest = load_manifest(root)
    rows = manifest[manifest["split"] == split].sort_values("path")
    if rows.empty:
        raise CatdogError(f"the prepared dataset at {root} has no {split!r} images")
    paths = tuple(rows["abspath"].astype(str))
    index = {name: i for i, name in enumerate(dataset_classes(root))}
    labels = rows["label"].map(index).to_numpy(np.float32)
    n = len(paths)
    nbytes = n * size * size * 3

    file = cache_dir() / f"{digest[:16]}-{split}-{size}.npy"
    on_disk = nbytes > memory_budget_bytes()
    if on_disk and file.exists():
        log.info("reusing decoded cache %s (%d images)", file, n)
        return Decoded(np.load(file, mmap_mode="r"), labels, paths, True)

    if on_disk:
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
        images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
    else:
        images = np.empty((n, size, size, 3), dtype=np.uint8)

    t0 = time.perf_counter()
    ds = tf.data.Dataset.from_tensor_slices(list(paths))
    ds = ds.map(
        lambda p: tf.cast(decode_resize(tf.io.read_file(p), size), tf.uint8),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    ds = ds.batch(256).prefetch(tf.data.AUTOTUNE)
    at = 0
    for batch in ds:
        b = batch.numpy()
        images[at : at + len(b)] = b
        at += len(b)
    DECODES[(digest, split, size)] += n
    seconds = time.perf_counter() - t0
    log.info(
        "decoded %d %s images at %dpx in %.1fs (%.0f images/s), cached %s (%.0f MB)",
        n,
        split,
        size,
        seconds,
        n / max(seconds, 1e-9),
        "on disk" if on_disk else "in memory",
        nbytes / 1e6,
    )
    if on_disk:
        images.flush()
        del images
        os.replace(tmp, file)
        return Decoded(np.load(file, mmap_mode="r"), labels, paths, True)
    return Decoded(images, labels, paths, False)


# Gathering a batch from the decoded array costs a millisecond or two, so one call at a time
# with two batches prefetched keeps any model fed, and tf.data's autotuner stays off. With it on
# (AUTOTUNE), each epoch's iterator tuned itself afresh, and on 2 cores half the epochs came out
# 1.75x slower than the rest: the long fit's model at 128 px took 41.0 s an epoch against 23.4 s
# with it off, both in one run (`python -m benchmarks.epochtime`, docs/performance.md).
GATHER_CALLS = 1
PREFETCH_BATCHES = 2


def dataset(dec: Decoded, batch_size: int, *, shuffle: bool, seed: int = 0, autotune: bool = False):
    """Batches of (float32 raw pixels, float32 labels) gathered from a decoded split.

    `autotune=True` hands the gather's parallelism and the prefetch to tf.data's autotuner, as
    catdog did before; only the benchmark that times the two asks for it."""
    import tensorflow as tf

    n = len(dec.labels)
    size = dec.images.shape[1]
    images, labels = dec.images, dec.labels

    def take(idx):
        idx = np.sort(idx)  # sorted reads are sequential on a memmap; order inside a batch is moot
        return images[idx], labels[idx]

    def gather(idx):
        x, y = tf.numpy_function(take, [idx], (tf.uint8, tf.float32), stateful=False)
        x = tf.ensure_shape(tf.cast(x, tf.float32), (None, size, size, 3))
        return x, tf.ensure_shape(y, (None,))

    ds = tf.data.Dataset.range(n)
    if shuffle:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    if autotune:
        ds = ds.batch(batch_size).map(gather, num_parallel_calls=tf.data.AUTOTUNE)
        return ds.prefetch(tf.data.AUTOTUNE)
    ds = ds.batch(batch_size).map(gather, num_parallel_calls=GATHER_CALLS)
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.prefetch(PREFETCH_BATCHES).with_options(options)


def predict(model, dec: Decoded, batch_size: int, tta: bool = False) -> np.ndarray:
    """The model's (n, classes) class probabilities for every image of a decoded split, in its
    order; with `tta`, the mean over each image and its mirror image."""
    import tensorflow as tf

    from catdog.metrics import probability_matrix

    ds = dataset(dec, batch_size, shuffle=False)
    probs = model.predict(ds, verbose=0)
    if tta:
        flipped = ds.map(lambda x, y: (tf.reverse(x, axis=[2]), y))
        probs = (probs + model.predict(flipped, verbose=0)) / 2
    return probability_matrix(probs)


def load(
    root: str | Path,
    image_size: int,
    batch_size: int,
    *,
    seed: int = 0,
    splits: tuple[str, ...] = ("train", "val"),
) -> Splits:
    """Datasets for the requested splits (the test split is decoded only when asked for)."""
    root = Path(root)
    out: dict[str, object] = dict.fromkeys(SPLITS)
    sizes: dict[str, int] = {}
    for split in splits:
        dec = decoded(root, split, image_size)
        out[split] = dataset(dec, batch_size, shuffle=(split == "train"), seed=seed)
        sizes[split] = len(dec.labels)
    return Splits(
        out["train"],
        out["val"],
        out["test"],
        sizes,
        image_size,
        batch_size,
        read_summary(root)["digest"],
        root,
        dataset_classes(root),
    )


@dataclass
class Combined:
    """Several splits as one shuffled training set (the final fit's train+val)."""

    dataset: object
    n: int


def combined(
    root: str | Path, splits: tuple[str, ...], image_size: int, batch_size: int, *, seed: int = 0
) -> Combined:
    parts = [decoded(root, split, image_size) for split in splits]
    dec = Decoded(
        np.concatenate([p.images for p in parts]),
        np.concatenate([p.labels for p in parts]),
        tuple(path for p in parts for path in p.paths),
        False,
    )
    return Combined(dataset(dec, batch_size, shuffle=True, seed=seed), len(dec.labels))


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()
