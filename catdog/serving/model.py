"""A pyfunc model that a person can call with `curl`: base64 image bytes in, label out.

The Keras flavor's tensor signature wants a (n, size, size, 3) float array, which nobody writes
by hand. This wrapper takes a column `image` of encoded image files (any format; MLflow's scoring
server base64-decodes `binary` columns), converts and resizes them exactly as training did, and
returns `label`, one `p_<class>` column per class and `error` per row, through the same
`inference.classify` as `catdog predict`. The class names and whether flip TTA is part of the
model travel in the model's config and metadata, and its signature names the columns. It is what
`catdog register` registers, so `mlflow models serve -m models:/catdog@champion` answers such
requests with the probabilities its test figures were made with; `load_classifier` gets the
Keras model, its classes and its TTA setting back out of it for `evaluate` and `predict`.

MLflow's scoring server runs each request's `predict` in a thread of its own, so several run at
once: they share the model's compiled predict step, traced when the model is loaded.
"""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path

import mlflow
import pandas as pd

from catdog import keys

CATDOG_DIR = Path(__file__).resolve().parents[1]  # the package MLflow ships as code_paths
ENTRY = Path(__file__).resolve().with_name("entry.py")
CLASSES = keys.CLASSES  # the model config's key for the class names (and the metadata's)
TTA = keys.TTA  # the model config's key for whether flip TTA is part of the model (and metadata's)


def columns(classes) -> list[str]:
    """The answer's columns: label, p_<class> for each class, error."""
    return [keys.LABEL, *(keys.probability(c) for c in classes), "error"]


class ImageClassifier(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        import keras
        import numpy as np

        import catdog.models.whitening  # noqa: F401  (a layer Keras must know to load a model)
        from catdog.inference import Classifier, classes_of, probabilities

        config = context.model_config or {}
        self.keras_model = keras.saving.load_model(context.artifacts["keras_model"], compile=False)
        self.classes = classes_of(self.keras_model, config.get(CLASSES))
        self.tta = bool(config.get(TTA, False))
        self.classifier = Classifier(self.keras_model, self.classes, tta=self.tta)
        size = self.classifier.image_size
        # Trace the predict step now (for one image and for more), not in the first requests.
        for n in (1, 3):
            probabilities(self.keras_model, np.zeros((n, size, size, 3), np.float32), self.tta)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from catdog.inference import classify

        raws = [_as_bytes(v) for v in model_input["image"]]
        rows = [
            (c.label, *(c.probabilities or dict.fromkeys(self.classes)).values(), c.error)
            for c in classify(self.classifier, raws)
        ]
        return pd.DataFrame(rows, columns=columns(self.classes))


def _as_bytes(value) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    try:  # callers of the Python API may pass base64 text
        return base64.b64decode(value, validate=True)
    except Exception:
        return b""


def signature(classes):
    """Image bytes in; the label, a probability per class (named by class) and an error out."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    label, *probs, error = columns(classes)
    return ModelSignature(
        inputs=Schema([ColSpec("binary", "image")]),
        outputs=Schema(
            [
                ColSpec("string", label),
                *(ColSpec("double", p) for p in probs),
                ColSpec("string", error),
            ]
        ),
    )


def log_serving_model(classifier, example_image: bytes, name: str = "serving"):
    """Log the wrapper of an `inference.Classifier` (its Keras model, its class names, whether
    flip TTA is part of it, and catdog's code inside) to the active run.

    Models-from-code (`entry.py`) rather than a pickled object; one real photo is the input
    example, so MLflow checks at logging time that the model answers such a request.
    """
    from catdog.tracking.artifacts import model_requirements

    classes = [str(c) for c in classifier.classes]
    config = {CLASSES: classes, TTA: bool(classifier.tta)}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        classifier.model.save(path)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(ENTRY),
            artifacts={"keras_model": str(path)},
            code_paths=[str(CATDOG_DIR)],
            model_config=config,
            metadata=config,
            signature=signature(classes),
            input_example=pd.DataFrame({"image": [example_image]}),
            pip_requirements=model_requirements(),
        )
