"""Where runs are stored: the tracking URI and the experiment.

The project's store is `sqlite:///mlruns/mlflow.db` with artifacts under `mlruns/artifacts`
(MLflow 3.13+ refuses the plain file store); `MLFLOW_TRACKING_URI` overrides it, e.g. with a
tracking server that several workers share.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"  # relative to the project directory
DEFAULT_EXPERIMENT = "catdog"


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else the project's sqlite store, as an absolute path (MLflow caches
    stores by URI, so a relative one would follow whichever directory used it first)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    return uri


def sqlite_dir(uri: str) -> Path | None:
    """The folder of a sqlite store (its artifacts live beside it), or None for a server."""
    return Path(uri[len("sqlite:///"):]).parent if uri.startswith("sqlite:///") else None


def configure() -> str:
    """Point MLflow at the project's store (or MLFLOW_TRACKING_URI) and quiet its chatter."""
    import mlflow

    uri = tracking_uri()
    if (folder := sqlite_dir(uri)) is not None:
        folder.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    # A progress bar per artifact read (model loads, report) is noise between catdog's lines.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for noisy in ("mlflow", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return uri


def experiment_id(name: str = DEFAULT_EXPERIMENT) -> str:
    """Get or create an experiment; with a sqlite store its artifacts live beside the database
    (mlruns/artifacts for the default store). A tracking server decides for itself."""
    import mlflow

    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    folder = sqlite_dir(tracking_uri())
    location = (folder / "artifacts").as_uri() if folder is not None else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # another worker created it first
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id
