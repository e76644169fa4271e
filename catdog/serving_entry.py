"""Models-from-code entry point for the serving model (see catdog/serving.py)."""

import mlflow

from catdog.serving import ImageClassifier

mlflow.models.set_model(ImageClassifier())
