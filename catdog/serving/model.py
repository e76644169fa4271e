"""A pyfunc model that a person can call with `curl`: base64 image bytes in, label out.

The Keras flavor's tensor signature wants a (n, size, size, 3) float array, which nobody writes
by hand. This wrapper takes a column `image` of encoded image files (any format; MLflow's scoring
server base64-decodes `binary` columns), converts and resizes them exactly as training did, and
returns `label`, one `p_<class>` column per class and `error` per row, through the same
`inference.classify` as `catdog predict`. The class names travel in the model's config and
metadata, and its signature names the columns. It is what `catdog register` registers, so
`mlflow models serve -m models:/catdog@champion` answers such requests; `load_classifier` gets
the Keras model and its classes back out of it for `evaluate` and `predict`.
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


def columns(classes) -> list[str]:
    """The answer's columns: label, p_<class> for each class, error."""
    return [keys.LABEL, *(keys.probability(c) for c in classes), "error"]


class ImageClassifier(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        import keras

        from catdog.inference import classes_of

        self.keras_model = keras.saving.load_model(context.artifacts["keras_model"], compile=False)
        self.classes = classes_of(self.keras_model, (context.model_config or {}).get(CLASSES))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from catdog.inference import Classifier, classify

        raws = [_as_bytes(v) for v in model_input["image"]]
        rows = [(c.label, *(c.probabilities or dict.fromkeys(self.classes)).values(), c.error)
                for c in classify(Classifier(self.keras_model, self.classes), raws)]
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
        outputs=Schema([ColSpec("string", label), *(ColSpec("double", p) for p in probs),
                        ColSpec("string", error)]))


def log_serving_model(classifier, example_image: bytes, name: str = "serving"):
    """Log the wrapper of an `inference.Classifier` (its Keras model, its class names and
    catdog's code inside) to the active run.

    Models-from-code (`entry.py`) rather than a pickled object; one real photo is the input
    example, so MLflow checks at logging time that the model answers such a request.
    """
    from catdog.tracking.artifacts import model_requirements

    classes = [str(c) for c in classifier.classes]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        classifier.model.save(path)
        return mlflow.pyfunc.log_model(
            name=name, python_model=str(ENTRY),
            artifacts={"keras_model": str(path)}, code_paths=[str(CATDOG_DIR)],
            model_config={CLASSES: classes}, metadata={CLASSES: classes},
            signature=signature(classes), input_example=pd.DataFrame({"image": [example_image]}),
            pip_requirements=model_requirements())

