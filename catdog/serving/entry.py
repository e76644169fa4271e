"""Models-from-code entry point for the serving model (see catdog/serving/__init__.py): MLflow
runs this file when it loads the model, so it starts TensorFlow quietly and hands MLflow the
pyfunc."""

import mlflow

from catdog import runtime
from catdog.serving.model import ImageClassifier

runtime.start()
mlflow.models.set_model(ImageClassifier())
