"""A pyfunc model that a person can call with `curl`: base64 image bytes in, label out.

The Keras flavor's tensor signature wants a (n, size, size, 3) float array, which nobody writes
by hand. This wrapper takes a column `image` of encoded image files (any format; MLflow's scoring
server base64-decodes `binary` columns), converts and resizes them exactly as training did, and
returns `label`, `p_dog` and `error` per row, through the same `inference.classify` as
`catdog predict`. It is what `catdog register` registers, so `mlflow models serve -m
models:/catdog@champion` answers such requests; `load_classifier` gets the Keras model back out
of it for `evaluate` and `predict`.
"""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path

import mlflow
import pandas as pd

CATDOG_DIR = Path(__file__).resolve().parents[1]  # the package MLflow ships as code_paths
ENTRY = Path(__file__).resolve().with_name("entry.py")
COLUMNS = ["label", "p_dog", "error"]


class ImageClassifier(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        import keras

        self.keras_model = keras.saving.load_model(context.artifacts["keras_model"], compile=False)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from catdog.inference import classify

        raws = [_as_bytes(v) for v in model_input["image"]]
        rows = [(c.label, c.p_dog, c.error) for c in classify(self.keras_model, raws)]
        return pd.DataFrame(rows, columns=COLUMNS)


def _as_bytes(value) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    try:  # callers of the Python API may pass base64 text
        return base64.b64decode(value, validate=True)
    except Exception:
        return b""


def signature():
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("binary", "image")]),
        outputs=Schema([ColSpec("string", "label"), ColSpec("double", "p_dog"),
                        ColSpec("string", "error")]))


def log_serving_model(keras_model, example_image: bytes, name: str = "serving"):
    """Log the wrapper (with the Keras model and catdog's code inside) to the active run.

    Models-from-code (`entry.py`) rather than a pickled object; one real photo is the input
    example, so MLflow checks at logging time that the model answers such a request.
    """
    from catdog.tracking.artifacts import model_requirements

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        keras_model.save(path)
        return mlflow.pyfunc.log_model(
            name=name, python_model=str(ENTRY),
            artifacts={"keras_model": str(path)}, code_paths=[str(CATDOG_DIR)],
            signature=signature(), input_example=pd.DataFrame({"image": [example_image]}),
            pip_requirements=model_requirements())

