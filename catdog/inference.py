"""Use a trained model: load it from any URI, evaluate it on a labelled folder, predict files.

Every image goes through the same two steps as training: `check_image` (decode fully, convert
grayscale/CMYK/RGBA/PNG to an RGB JPEG, as `prepare` did) and `decode_resize` (the pipeline's
decode and resize). So a photo is seen by the model exactly as it was during training.

A model comes with its class names (`Classifier`): logged with it since they were recorded, and
for a binary model saved before that, read from its output layer's name. Every answer gives the
label and one probability per class, in columns named `p_<class>` (`keys.probability`).

A model also comes with its own TTA setting: when flip test-time augmentation was kept for it,
it is part of the model, so `predict`, `evaluate` and the serving model answer with the mean of
each image's and its mirror image's probabilities, exactly as the test figures were made
(`pipeline.predict` with `tta`). A `tta` given here overrides it, for a question about another
model than the one that ships; `evaluate` says so in its result.

The model runs through its compiled predict step (`predict_on_batch`), BATCH images at a time:
`model.predict` sets up a data adapter and a progress bar per call, which costs an order of
magnitude more than the model itself for the one photo of a serving request.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from catdog import keys, metrics, runtime
from catdog.data.images import check_image
from catdog.data.sources import DOGS_VS_CATS
from catdog.errors import CatdogError
from catdog.log import get_logger

log = get_logger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
DEFAULT_MODEL = "models:/catdog@champion"
BATCH = 64  # images per model call (the pipeline's batch for a split)


@dataclass(frozen=True)
class Classifier:
    """A Keras model taking raw 0-255 RGB pixels, and its class names: output i is classes[i].
    `named` is False when no names came with the model and its outputs are called 0, 1, ...;
    `tta` is True when flip TTA is part of the model."""

    model: Any
    classes: tuple[str, ...]
    named: bool = True
    tta: bool = False

    @property
    def image_size(self) -> int:
        return image_size_of(self.model)


def _units(keras_model) -> int:
    return int(keras_model.output_shape[-1])


def classes_of(keras_model, recorded=None) -> tuple[str, ...]:
    """The class names of KERAS_MODEL: RECORDED with it when they were; for a binary model saved
    before that, the Dogs-vs-Cats classes when its output layer is named after the second of
    them, as catdog's models were; otherwise the output indices ("0", "1", ...)."""
    units = _units(keras_model)
    width = max(units, 2)
    if recorded:
        if len(recorded) != width:
            raise CatdogError(
                f"the model has {width} outputs but {len(recorded)} class names were "
                "logged with it; log it again with its dataset's classes"
            )
        return tuple(recorded)
    if units == 1 and keras_model.layers[-1].name == keys.probability(DOGS_VS_CATS[1]):
        return DOGS_VS_CATS
    return tuple(str(i) for i in range(width))


def _classifier(keras_model, recorded=None, tta: bool = False) -> Classifier:
    classes = classes_of(keras_model, recorded)
    named = bool(recorded) or classes == DOGS_VS_CATS
    if not named:
        log.info(
            "no class names came with this model; its outputs are called %s", ", ".join(classes)
        )
    return Classifier(keras_model, classes, named, tta)


def load_classifier(uri: str = DEFAULT_MODEL) -> Classifier:
    """A model, its class names and its TTA setting, from a models:/ or runs:/ URI, a logged
    model's URI, a local MLflow model folder, or a local .keras file (no TTA: nothing records
    it there)."""
    import keras

    import catdog.models.whitening  # noqa: F401  (a layer Keras must know to load a model)
    from catdog.tracking import modelstore, store

    path = Path(uri)
    if path.suffix in (".keras", ".h5") and path.is_file():
        return _classifier(keras.saving.load_model(path, compile=False))
    if not re.match(r"^[a-z][a-z0-9+.-]*:/", uri) and not path.exists():
        raise CatdogError(f"model {uri} does not exist: pass a models:/, runs:/ URI or a path")
    store.configure()
    return _classifier(*modelstore.load(uri))


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
    label: str | None  # the predicted class; None when the image could not be used
    probabilities: dict[str, float] | None  # class -> probability, in class order
    error: str | None = None


def _outputs(model, pixels: np.ndarray) -> np.ndarray:
    """The model's outputs for a batch of raw pixels, BATCH images per call of its compiled
    predict step."""
    return np.concatenate(
        [
            np.asarray(model.predict_on_batch(pixels[i : i + BATCH]))
            for i in range(0, len(pixels), BATCH)
        ]
    )


def probabilities(model, pixels: np.ndarray, tta: bool = False) -> np.ndarray:
    """(n, classes) class probabilities for a batch of raw pixels; with test-time augmentation,
    the mean over the image and its mirror image (the flip the models were trained with), as
    `pipeline.predict` computes it. The mirror images go through in the same calls."""
    if not tta:
        return metrics.probability_matrix(_outputs(model, pixels))
    n = len(pixels)
    both = _outputs(model, np.concatenate([pixels, pixels[:, :, ::-1, :]]))
    return metrics.probability_matrix((both[:n] + both[n:]) / 2)


def with_tta(classifier: Classifier, tta: bool | None) -> Classifier:
    """CLASSIFIER with flip TTA on or off; None keeps the model's own setting."""
    return classifier if tta is None else replace(classifier, tta=bool(tta))


def _as_asked(shipped: Classifier, tta: bool | None) -> Classifier:
    """The model as `predict` and `evaluate` were asked to run it, with a warning when that is
    not how it ships (their figures then describe another model than the served one)."""
    asked = with_tta(shipped, tta)
    if asked.tta != shipped.tta:
        log.warning(
            "flip TTA is %s here but %s of the model as it ships and serves: these "
            "figures are not the served model's",
            "on" if asked.tta else "off",
            "part" if shipped.tta else "not part",
        )
    return asked


def classify(classifier: Classifier, raws: list[bytes]) -> list[Classified]:
    """The one probabilities -> label step, for `predict`, `evaluate` and the serving model: each
    encoded image gets a label and a probability per class, or the reason it could not be used;
    with flip TTA when the classifier has it."""
    pixels, errors = to_pixels(raws, classifier.image_size)
    probs = (
        probabilities(classifier.model, pixels, classifier.tta) if len(pixels) else np.zeros((0, 2))
    )
    labels = iter(metrics.predicted(probs)) if len(pixels) else iter(())
    rows = iter(probs)
    out = []
    for err in errors:
        if err:
            out.append(Classified(None, None, err))
        else:
            row = next(rows)
            out.append(
                Classified(
                    classifier.classes[int(next(labels))],
                    {c: float(p) for c, p in zip(classifier.classes, row)},
                    None,
                )
            )
    return out


def _read(path: Path) -> tuple[bytes, str | None]:
    """A file's bytes, or b"" and why it cannot be read, in the system's words ("permission
    denied")."""
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
    probabilities: dict[str, float | None]  # class -> probability (None where `error` says why)
    error: str | None = None

    def row(self) -> dict:
        """path, label, p_<class> for each class, error: a flat record for JSON and CSV."""
        return {
            "path": self.path,
            keys.LABEL: self.label,
            **{keys.probability(c): p for c, p in self.probabilities.items()},
            "error": self.error,
        }


def predict(
    paths: list[str | Path],
    model_uri: str = DEFAULT_MODEL,
    batch_size: int = BATCH,
    tta: bool | None = None,
) -> list[Prediction]:
    """Label and class probabilities per image, with the model's own TTA setting unless TTA
    says otherwise; a file that cannot be read or decoded gets its reason as `error` ("no such
    file or directory", "permission denied", "corrupt", ...)."""
    files = _files(paths)
    if not files:
        raise CatdogError("no image files found in the given paths")
    runtime.start()
    classifier = _as_asked(load_classifier(model_uri), tta)
    out: list[Prediction] = []
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        raws, read_errors = zip(*map(_read, chunk))
        for f, read_error, c in zip(chunk, read_errors, classify(classifier, list(raws))):
            error = read_error or c.error
            probs = c.probabilities if not error else dict.fromkeys(classifier.classes)
            out.append(Prediction(str(f), None if error else c.label, probs, error))
    return out


_EXPECTED = (
    "a labelled folder (<class>/* or <split>/<class>/*, as `catdog data prepare` reads "
    "them; its test/ split when it has one) or a prepared dataset"
)


def labelled_files(data: str | Path) -> list[tuple[Path, str]]:
    """(file, class name) pairs: a prepared dataset's held-out test split, or a labelled folder
    in any layout `prepare` reads (its test split when it has one)."""
    from catdog.data.prepare import is_prepared, load_manifest
    from catdog.data.sources import detect, empty_folders, is_junk, open_source

    root = Path(data)
    if not root.exists():
        raise CatdogError(f"{root} does not exist; pass {_EXPECTED}")
    if not root.is_dir():
        raise CatdogError(f"{root} is a file, not a folder; pass {_EXPECTED}")
    if is_prepared(root):
        m = load_manifest(root)
        m = m[m["split"] == "test"]
        if m.empty:
            raise CatdogError(
                f"the prepared dataset {root} has no test split to evaluate on; "
                "prepare it again with --test-fraction above 0"
            )
        return [(Path(p), str(lbl)) for p, lbl in zip(m["abspath"], m["label"])]
    if not any(root.iterdir()):
        raise CatdogError(f"{root} is empty; pass {_EXPECTED}")
    with open_source(root) as (files, _read_member):
        found = detect([f for f in files if not is_junk(f)], root, empty_folders(root))
    members = [m for m in found.members if Path(m.path).suffix.lower() in IMAGE_SUFFIXES]
    tested = [m for m in members if m.source_split == "test"]
    members = tested or members
    for name in found.classes:
        if not any(m.label == name for m in members):
            raise CatdogError(
                f"{root} has no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) of "
                f"class {name!r}; evaluation needs labelled images of every class"
            )
    return [(root / m.path, m.label) for m in members]


def _class_index(names: set[str], classifier: Classifier, data) -> dict[str, int]:
    """Each folder class of the data -> the model's class index: the same name, else the same
    up to case, else up to a plural s (a cats/ folder holds the class cat). A model without class
    names takes the folder's classes in sorted order, as Keras's `image_dataset_from_directory`
    numbers them."""
    classes = classifier.classes
    if not classifier.named:
        if len(names) != len(classes):
            raise CatdogError(
                f"{data} has {len(names)} classes and the model {len(classes)} outputs,"
                " with no class names to match them by; evaluate it on a folder of"
                f" {len(classes)} classes"
            )
        return {name: i for i, name in enumerate(sorted(names))}

    def plain(name: str) -> str:
        return name.casefold().removesuffix("s")

    out = {}
    for name in sorted(names):
        for same in (
            lambda c, name=name: c == name,
            lambda c, name=name: c.casefold() == name.casefold(),
            lambda c, name=name: plain(c) == plain(name),
        ):
            match = [i for i, c in enumerate(classes) if same(c)]
            if len(match) == 1:
                out[name] = match[0]
                break
        else:
            raise CatdogError(
                f"{data} has images of class {name!r}, which the model does not know "
                f"(its classes: {', '.join(classes)}); evaluate it on folders named "
                "after its classes"
            )
    return out


def evaluate(
    model_uri: str, data: str | Path, batch_size: int = BATCH, tta: bool | None = None
) -> dict:
    """Accuracy, loss, ROC AUC (one-vs-rest beyond two classes), macro F1, per-class precision and
    recall and the confusion matrix, of the model as it ships: with flip TTA when it is part of
    it. TTA True or False asks about the model with or without it instead; the result's `tta`
    says which was used and `model_tta` what the model ships with."""
    pairs = labelled_files(data)
    runtime.start()
    shipped = load_classifier(model_uri)
    classifier = _as_asked(shipped, tta)
    index = _class_index({name for _, name in pairs}, classifier, data)
    if not classifier.named:  # its outputs are the folder's classes, in sorted order
        classifier = replace(classifier, classes=tuple(sorted(index)))
    labels, probs, skipped = [], [], []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        raws, read_errors = zip(*(_read(f) for f, _ in chunk))
        for (f, name), read_error, c in zip(chunk, read_errors, classify(classifier, list(raws))):
            if read_error or c.error:
                skipped.append({"path": str(f), "reason": read_error or c.error})
            else:
                probs.append(list(c.probabilities.values()))
                labels.append(index[name])
    if not labels:
        reasons = Counter(s["reason"] for s in skipped)
        raise CatdogError(
            f"none of the {len(pairs)} images in {data} could be used ("
            + ", ".join(f"{reason}: {n}" for reason, n in reasons.most_common())
            + ")"
        )
    result = metrics.summary(np.array(labels), np.array(probs), classifier.classes)
    result.update(
        {
            "classes": list(classifier.classes),
            "model": model_uri,
            "data": str(data),
            "image_size": classifier.image_size,
            "tta": classifier.tta,
            "model_tta": shipped.tta,
            "skipped": skipped,
        }
    )
    return result
