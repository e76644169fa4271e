"""Scoped work-arounds for MLflow bugs. Each patches only inside a `with` block, names its
upstream issue, and can be deleted once the minimum MLflow version has the fix."""

from __future__ import annotations

import contextlib
import os


@contextlib.contextmanager
def keras_input_example_folder():
    """mlflow#16183 (open in 3.17.2 and 3.18.0): `mlflow.keras.save_model` writes the input
    example before it creates the model folder. Create the folder first."""
    import mlflow.keras.save as keras_save

    original = keras_save._save_example

    def save_example(mlflow_model, input_example, path, *args, **kwargs):
        os.makedirs(path, exist_ok=True)
        return original(mlflow_model, input_example, path, *args, **kwargs)

    keras_save._save_example = save_example
    try:
        yield
    finally:
        keras_save._save_example = original
