"""Models as catdog built and logged them before class names were recorded: one sigmoid named
p_dog (the probability of dog), logged with no class names, so tests can check that such a
model, trained and registered long ago, still loads and predicts."""

from __future__ import annotations

from pathlib import Path

OUTPUT = "p_dog"  # the old models' last layer
OLD_COLUMNS = ["label", OUTPUT, "error"]  # the old serving model's answer


def old_binary_model(image_size: int = 32):
    """A compiled binary CNN with the old head: Dense(1) named logit, then the sigmoid p_dog."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=(image_size, image_size, 3), name="image")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    x = layers.Conv2D(8, 3, activation="relu", name="conv1")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(1, name="logit")(x)
    outputs = layers.Activation("sigmoid", dtype="float32", name=OUTPUT)(x)
    model = keras.Model(inputs, outputs, name="baseline")
    model.compile(
        optimizer="adam",
        loss="binary_crossentropy",
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")],
    )
    return model


def log_old_keras_model(keras_model, sample):
    """Log KERAS_MODEL the way a trial or `catdog train` did before class names were recorded:
    the Keras flavour with a tensor signature, and no metadata."""
    import mlflow
    import numpy as np
    from mlflow.models import infer_signature

    from catdog.tracking.artifacts import model_requirements
    from catdog.tracking.mlflow_fixes import keras_input_example_folder

    sample = np.asarray(sample, dtype=np.float32)[:1]
    signature = infer_signature(
        sample, np.asarray(keras_model.predict(sample, verbose=0), np.float32)
    )
    with keras_input_example_folder():
        return mlflow.keras.log_model(
            keras_model,
            name="model",
            signature=signature,
            input_example=sample,
            pip_requirements=model_requirements(),
        )


def log_old_serving_model(keras_model, example_image: bytes):
    """Log KERAS_MODEL the way `catdog register` did before class names were recorded: the
    serving pyfunc with the old signature (label, p_dog, error), no model config, no metadata."""
    import tempfile

    import mlflow
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from catdog.serving.model import CATDOG_DIR, ENTRY
    from catdog.tracking.artifacts import model_requirements

    signature = ModelSignature(
        inputs=Schema([ColSpec("binary", "image")]),
        outputs=Schema(
            [ColSpec("string", "label"), ColSpec("double", OUTPUT), ColSpec("string", "error")]
        ),
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        keras_model.save(path)
        return mlflow.pyfunc.log_model(
            name="serving",
            python_model=str(ENTRY),
            artifacts={"keras_model": str(path)},
            code_paths=[str(CATDOG_DIR)],
            signature=signature,
            input_example=pd.DataFrame({"image": [example_image]}),
            pip_requirements=model_requirements(),
        )
