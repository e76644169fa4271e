"""The registered model: a pyfunc that takes encoded image bytes and answers with a class.

- `model.py`: the `ImageClassifier` pyfunc, its signature, and `log_serving_model`, which logs it
  (with the Keras model inside) for `catdog register`.
- `entry.py`: not imported by catdog. MLflow runs it as the "models-from-code" entry point when
  the model is loaded (`mlflow models serve`, `mlflow.pyfunc.load_model`); it only hands MLflow
  an `ImageClassifier`.
"""

from catdog.serving.model import ImageClassifier, log_serving_model, signature

__all__ = ["ImageClassifier", "log_serving_model", "signature"]
