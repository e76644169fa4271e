"""What is logged to the active run besides params and per-epoch metrics: figures, a split's
evaluation (metrics, confusion matrix, ROC), the dataset as the run's input, and models."""

from __future__ import annotations

import contextlib
import io
import tempfile
from importlib import metadata
from pathlib import Path

import numpy as np

from catdog import keys
from catdog.tracking import tags

MODEL_PACKAGES = ("tensorflow", "keras", "numpy", "pillow", "pandas")


def log_figure(fig, name: str) -> None:
    import mlflow

    from catdog import plots

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        plots.save(fig, path)
        mlflow.log_artifact(str(path), artifact_path="plots")


def log_evaluation(
    y_true: np.ndarray, y_prob: np.ndarray, prefix: str, title: str, classes, leave_out=()
) -> dict:
    """Log metrics, a confusion matrix and ROC curves for one split to the active run.

    LEAVE_OUT names metrics not to log, e.g. those the val split's per-epoch history already
    carries under the same names.
    """
    import mlflow

    from catdog import metrics, plots

    result = metrics.summary(y_true, y_prob, classes)
    mlflow.log_metrics(
        {
            f"{prefix}_{k}": v
            for k, v in result.items()
            if isinstance(v, float) and k not in leave_out
        }
    )
    log_figure(
        plots.confusion_matrix(
            np.asarray(result["confusion"]), classes, title=f"{title}: {prefix} confusion"
        ),
        f"{prefix}_confusion.png",
    )
    log_figure(
        plots.roc(
            metrics.roc_curves(y_true, y_prob, classes), classes, title=f"{title}: {prefix} ROC"
        ),
        f"{prefix}_roc.png",
    )
    return result


def log_dataset(root: Path, digest: str, context: str = "training") -> None:
    """Record the prepared dataset as the run's input, identified by its manifest digest."""
    import mlflow

    from catdog.data.prepare import load_manifest

    manifest = load_manifest(root).drop(columns=["abspath"])
    ds = mlflow.data.from_pandas(
        manifest, source=str(Path(root).resolve()), name=Path(root).name, digest=digest[:16]
    )
    mlflow.log_input(ds, context=context)
    mlflow.set_tag(tags.DATASET_DIGEST, digest)


CLASSES = keys.CLASSES  # the logged model's metadata key for its class names, in output order


def log_keras_model(model, sample: np.ndarray, classes=None, name: str = "model"):
    """Log a Keras model with a tensor signature (raw 0-255 float32 pixels), an input example
    and its class names (CLASSES in the model's metadata: output i is class i)."""
    import mlflow
    from mlflow.models import infer_signature

    from catdog.tracking.mlflow_fixes import keras_input_example_folder

    sample = np.asarray(sample, dtype=np.float32)[:1]
    signature = infer_signature(sample, np.asarray(model.predict(sample, verbose=0), np.float32))
    metadata = {CLASSES: [str(c) for c in classes]} if classes else None
    # MLflow validates the example with a default-verbosity predict(): keep its bar off stdout.
    with keras_input_example_folder(), contextlib.redirect_stdout(io.StringIO()):
        return mlflow.keras.log_model(
            model,
            name=name,
            signature=signature,
            input_example=sample,
            pip_requirements=model_requirements(),
            metadata=metadata,
        )


def model_requirements() -> list[str]:
    """Pinned versions of what a logged model needs to load and predict."""
    reqs = []
    for pkg in MODEL_PACKAGES:
        try:
            reqs.append(f"{pkg}=={metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            pass
    return reqs
