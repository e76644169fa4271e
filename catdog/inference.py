"""Use a trained model: load it from any URI, evaluate it on a labelled folder, predict files.

Every image goes through the same two steps as training: `check_image` (decode fully, convert
grayscale/CMYK/RGBA/PNG to an RGB JPEG, as `prepare` did) and `decode_resize` (the pipeline's
decode and resize). So a photo is seen by the model exactly as it was during training.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from catdog import runtime
from catdog.data.images import LABELS, check_image
from catdog.errors import CatdogError
from catdog.log import get_logger

log = get_logger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
DEFAULT_MODEL = "models:/catdog@champion"


def load_classifier(uri: str = DEFAULT_MODEL):
    """A Keras model taking raw 0-255 RGB pixels, from a models:/ or runs:/ URI, a logged
    model's URI, a local MLflow model folder, or a local .keras file."""
    import keras

    from catdog.tracking import modelstore, store

    path = Path(uri)
    if path.suffix in (".keras", ".h5") and path.is_file():
        return keras.saving.load_model(path, compile=False)
    if not re.match(r"^[a-z][a-z0-9+.-]*:/", uri) and not path.exists():
        raise CatdogError(f"model {uri} does not exist: pass a models:/, runs:/ URI or a path")
    store.configure()
    return modelstore.load(uri)


def image_size_of(model) -> int:
    return int(model.input_shape[1])


def to_pixels(raws: list[bytes], image_size: int) -> tuple[np.ndarray, list[str | None]]:
    """Raw file bytes -> (n_ok, size, size, 3) float32 batch, and a reason per input if unusable."""
    import tensorflow as tf

    from catdog.pipeline import decode_resize

    pixels, errors = [], []
    for raw in raws:
        check = check_image(raw)
        if not check.ok:
            errors.append(check.reason)
            continue
        try:
            pixels.append(decode_resize(tf.constant(check.data), image_size).numpy())
            errors.append(None)
        except tf.errors.InvalidArgumentError:
            errors.append("corrupt")
    batch = np.stack(pixels) if pixels else np.zeros((0, image_size, image_size, 3), np.float32)
    return batch.astype(np.float32), errors


@dataclass(frozen=True)
class Classified:
    label: str | None  # "cat" or "dog"; None when the image could not be used
    p_dog: float | None
    error: str | None = None


THRESHOLD = 0.5


def probabilities(model, pixels: np.ndarray, tta: bool = False) -> np.ndarray:
    """p(dog) for a batch of raw pixels; with test-time augmentation, the mean over the image
    and its mirror image (the flip the models were trained with)."""
    probs = model.predict(pixels, verbose=0).ravel()
    if tta:
        probs = (probs + model.predict(pixels[:, :, ::-1, :], verbose=0).ravel()) / 2
    return probs


def classify(model, raws: list[bytes], image_size: int | None = None,
             tta: bool = False) -> list[Classified]:
    """The one probability -> label step, for `predict`, `evaluate` and the serving model: each
    encoded image gets a label and p_dog, or the reason it could not be used."""
    size = image_size or image_size_of(model)
    pixels, errors = to_pixels(raws, size)
    probs = iter(probabilities(model, pixels, tta)) if len(pixels) else iter(())
    out = []
    for err in errors:
        if err:
            out.append(Classified(None, None, err))
        else:
            p = float(next(probs))
            out.append(Classified(LABELS[int(p >= THRESHOLD)], p, None))
    return out


def _read(path: Path) -> tuple[bytes, str | None]:
    """A file's bytes, or b"" and why it cannot be read, in the system's words ("permission denied")."""
    try:
        return path.read_bytes(), None
    except OSError as exc:
        log.debug("cannot read %s: %s", path, exc)
        return b"", (exc.strerror or type(exc).__name__).lower()


def _files(paths: list[str | Path]) -> list[Path]:
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES))
        else:
            out.append(p)
    return out


@dataclass
class Prediction:
    path: str
    label: str | None
    p_dog: float | None
    error: str | None = None


def predict(paths: list[str | Path], model_uri: str = DEFAULT_MODEL,
            batch_size: int = 64, tta: bool = False) -> list[Prediction]:
    """Label and dog probability per image; a file that cannot be read or decoded gets its reason
    as `error` ("no such file or directory", "permission denied", "corrupt", ...)."""
    files = _files(paths)
    if not files:
        raise CatdogError("no image files found in the given paths")
    runtime.start()
    model = load_classifier(model_uri)
    size = image_size_of(model)
    out: list[Prediction] = []
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        raws, read_errors = zip(*map(_read, chunk))
        for f, read_error, c in zip(chunk, read_errors, classify(model, list(raws), size, tta)):
            error = read_error or c.error
            out.append(Prediction(str(f), None if error else c.label, None if error else c.p_dog, error))
    return out


def labelled_files(data: str | Path) -> list[tuple[Path, int]]:
    """(file, label) pairs from cats/ and dogs/ folders, a salader root (its test/ split), or a
    prepared dataset (its held-out test split)."""
    from catdog.data.prepare import is_prepared, load_manifest

    root = Path(data)
    expected = ("a folder with cats/ and dogs/ sub-folders, a salader root (with test/cats and "
                "test/dogs) or a prepared dataset")
    if not root.exists():
        raise CatdogError(f"{root} does not exist; pass {expected}")
    if not root.is_dir():
        raise CatdogError(f"{root} is a file, not a folder; pass {expected}")
    if is_prepared(root):
        m = load_manifest(root)
        m = m[m["split"] == "test"]
        if m.empty:
            raise CatdogError(f"the prepared dataset {root} has no test split to evaluate on; "
                              "prepare it again with --test-fraction above 0")
        return [(Path(p), LABELS.index(lbl)) for p, lbl in zip(m["abspath"], m["label"])]
    if not any(root.iterdir()):
        raise CatdogError(f"{root} is empty; pass {expected}")
    if (root / "test" / "cats").is_dir():
        root = root / "test"
    names = (("cats", "cat", "Cat"), ("dogs", "dog", "Dog"))
    folders = [next((root / n for n in options if (root / n).is_dir()), None) for options in names]
    if folders == [None, None]:
        found = sorted(f"{p.name}/" for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        raise CatdogError(f"{data} is not a labelled folder (found {', '.join(found) or 'no sub-folders'}); "
                          f"pass {expected}")
    if None in folders:
        have = next(f for f in folders if f is not None)
        lacking = names[folders.index(None)]
        raise CatdogError(f"{root} has a {have.name}/ folder but no {lacking[0]}/ folder; evaluation "
                          "needs labelled images of both classes")
    pairs = []
    for label, folder in enumerate(folders):
        files = _files([folder])
        if not files:
            raise CatdogError(f"{folder} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                              "evaluation needs labelled images of both classes")
        pairs += [(f, label) for f in files]
    return pairs


def evaluate(model_uri: str, data: str | Path, batch_size: int = 64, tta: bool = False) -> dict:
    """Accuracy, loss, ROC AUC, per-class precision/recall and the confusion matrix (with
    `tta`, of the mean prediction over each image and its mirror image)."""
    from catdog import metrics

    pairs = labelled_files(data)
    runtime.start()
    model = load_classifier(model_uri)
    size = image_size_of(model)
    labels, probs, skipped = [], [], []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        raws, read_errors = zip(*(_read(f) for f, _ in chunk))
        for (f, y), read_error, c in zip(chunk, read_errors, classify(model, list(raws), size, tta)):
            if read_error or c.error:
                skipped.append({"path": str(f), "reason": read_error or c.error})
            else:
                probs.append(c.p_dog)
                labels.append(y)
    if not labels:
        reasons = Counter(s["reason"] for s in skipped)
        raise CatdogError(f"none of the {len(pairs)} images in {data} could be used ("
                          + ", ".join(f"{reason}: {n}" for reason, n in reasons.most_common()) + ")")
    result = metrics.summary(np.array(labels), np.array(probs))
    result.update({"model": model_uri, "data": str(data), "image_size": size, "tta": tta,
                   "skipped": skipped})
    return result
