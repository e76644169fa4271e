"""The one way catdog writes to MLflow: explicit runs, a per-epoch callback, figures and models.

No autolog: params, per-epoch metrics (step = epoch), figures and the model are logged here and
only here, so nothing is logged twice. Runs always end with a status: FINISHED, FAILED on an
error, KILLED on Ctrl-C or SIGTERM; none is left RUNNING by a process that exits normally or is
interrupted. (A process killed with SIGKILL cannot close its run; the sweep marks such orphans
KILLED when it resumes.)
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

import catdog
from catdog.log import get_logger

log = get_logger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"  # relative to the project directory
PACKAGES = ("tensorflow", "keras", "keras-tuner", "mlflow", "numpy")


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM, so the same path as Ctrl-C closes runs as KILLED."""


def _raise_terminated(signum, frame):
    raise Terminated(f"received signal {signum}")


@contextlib.contextmanager
def sigterm_as_exception():
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else the project's sqlite store, as an absolute path (MLflow caches
    stores by URI, so a relative one would follow whichever directory used it first)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    return uri


def _sqlite_dir(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///"):]).parent if uri.startswith("sqlite:///") else None


def configure() -> str:
    """Point MLflow at the project's store (or MLFLOW_TRACKING_URI) and quiet its chatter."""
    import logging

    import mlflow

    uri = tracking_uri()
    if (folder := _sqlite_dir(uri)) is not None:
        folder.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    for noisy in ("mlflow", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return uri


def experiment_id(name: str) -> str:
    """Get or create an experiment; with a sqlite store its artifacts live beside the database
    (mlruns/artifacts for the default store). A tracking server decides for itself."""
    import mlflow

    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    folder = _sqlite_dir(tracking_uri())
    location = (folder / "artifacts").as_uri() if folder is not None else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # another worker created it first
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def status_for(exc: BaseException | None) -> str:
    if exc is None:
        return "FINISHED"
    if isinstance(exc, (KeyboardInterrupt, Terminated)):
        return "KILLED"
    return "FAILED"


@contextlib.contextmanager
def active_run(*, run_id: str | None = None, experiment: str | None = None,
               run_name: str | None = None, parent_run_id: str | None = None,
               tags: dict | None = None):
    """A fluent MLflow run that always ends with FINISHED, FAILED or KILLED."""
    import mlflow

    kwargs = {}
    if run_id is None:
        kwargs = dict(experiment_id=experiment_id(experiment or "catdog"), run_name=run_name,
                      parent_run_id=parent_run_id, tags=tags)
    run = mlflow.start_run(run_id=run_id, **kwargs)
    try:
        yield run
    except BaseException as exc:
        mlflow.end_run(status_for(exc))
        raise
    mlflow.end_run("FINISHED")


def environment_tags() -> dict[str, str]:
    tags = {"catdog.version": catdog.__version__}
    for pkg in PACKAGES:
        try:
            tags[f"catdog.pkg.{pkg}"] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(catdog.__file__).parent, timeout=5)
        if commit.returncode == 0:
            tags["mlflow.source.git.commit"] = commit.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return tags


def log_dataset(root: Path, digest: str, context: str = "training") -> None:
    """Record the prepared dataset as the run's input, identified by its manifest digest."""
    import mlflow

    from catdog.data.prepare import load_manifest

    manifest = load_manifest(root).drop(columns=["abspath"])
    ds = mlflow.data.from_pandas(manifest, source=str(Path(root).resolve()),
                                 name=Path(root).name, digest=digest[:16])
    mlflow.log_input(ds, context=context)
    mlflow.set_tag("catdog.dataset_digest", digest)


# Keras history keys -> MLflow metric names: train_ / val_ prefixes as in MLflow's examples.
def metric_name(key: str) -> str:
    return key if key.startswith("val_") else f"train_{key}"


class EpochLogger:
    """Keras callback: logs each epoch's metrics to one run (step = epoch) and prints a line.

    Built lazily as a real keras.callbacks.Callback subclass so importing this module stays cheap.
    """

    def __new__(cls, run_id: str, label: str, epochs: int, initial_epoch: int = 0):
        import keras
        import mlflow
        from mlflow.entities import Metric

        class _EpochLogger(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.client = mlflow.MlflowClient()
                self.history: dict[str, list[float]] = {}
                self.seconds: list[float] = []
                self.t_train = time.perf_counter()

            def on_epoch_begin(self, epoch, logs=None):
                self.t_epoch = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                logs = dict(logs or {})
                seconds = time.perf_counter() - self.t_epoch
                self.seconds.append(seconds)
                now = int(time.time() * 1000)
                metrics = [Metric(metric_name(k), float(v), now, epoch) for k, v in logs.items()
                           if k != "learning_rate"]
                metrics.append(Metric("epoch_seconds", seconds, now, epoch))
                self.client.log_batch(run_id, metrics=metrics, synchronous=True)
                for k, v in logs.items():
                    self.history.setdefault(k, []).append(float(v))
                done = epoch + 1 - initial_epoch
                left = (epochs - epoch - 1) * (sum(self.seconds) / len(self.seconds))
                log.info("[%s] epoch %d/%d  loss %.4f acc %.4f | val_loss %.4f val_acc %.4f "
                         "val_auc %.4f | %.1fs, ETA %s", label, epoch + 1, epochs,
                         logs.get("loss", np.nan), logs.get("accuracy", np.nan),
                         logs.get("val_loss", np.nan), logs.get("val_accuracy", np.nan),
                         logs.get("val_auc", np.nan), seconds,
                         format_seconds(left) if done else "?")

        return _EpochLogger()


def format_seconds(s: float) -> str:
    s = int(round(s))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def history_summary(history: dict[str, list[float]], objective: str = "val_accuracy",
                    initial_epoch: int = 0) -> dict:
    """Best-epoch figures from a Keras history: what the comparison tables are made of.

    `initial_epoch` is where this fit started (Hyperband continues earlier trials), so
    `best_epoch` counts epochs the way the logged metric steps do (1-based).
    """
    val = history.get(objective) or [np.nan]
    best = int(np.nanargmin(val) if objective.endswith("loss") else np.nanargmax(val))
    out = {"best_epoch": initial_epoch + best + 1, "epochs_run": len(val)}
    for key in ("val_accuracy", "val_loss", "val_auc", "accuracy", "loss"):
        if history.get(key):
            out[f"best_{metric_name(key)}"] = float(history[key][best])
    acc, vacc = history.get("accuracy"), history.get("val_accuracy")
    if acc and vacc:
        out["gap_best"] = float(acc[best] - vacc[best])
        out["gap_last"] = float(acc[-1] - vacc[-1])
    return out


def log_figure(fig, name: str) -> None:
    import mlflow

    from catdog import plots

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        plots.save(fig, path)
        mlflow.log_artifact(str(path), artifact_path="plots")


def log_evaluation(y_true: np.ndarray, y_prob: np.ndarray, prefix: str, title: str,
                   headline: bool = True) -> dict:
    """Log metrics, a confusion matrix and a ROC curve for one split to the active run.

    `headline=False` leaves out accuracy/loss/AUC, for the val split whose per-epoch history
    already carries those names.
    """
    import mlflow

    from catdog import metrics, plots

    result = metrics.summary(y_true, y_prob)
    headlines = ("accuracy", "loss", "auc")
    mlflow.log_metrics({f"{prefix}_{k}": v for k, v in result.items()
                        if isinstance(v, float) and (headline or k not in headlines)})
    fpr, tpr, auc = metrics.roc_curve(np.asarray(y_true, float), np.asarray(y_prob, float))
    log_figure(plots.confusion_matrix(np.asarray(result["confusion"]),
                                      title=f"{title}: {prefix} confusion"), f"{prefix}_confusion.png")
    log_figure(plots.roc(fpr, tpr, auc, title=f"{title}: {prefix} ROC"), f"{prefix}_roc.png")
    return result


@contextlib.contextmanager
def _keras_input_example_fix():
    """Work around mlflow#16183 (open in 3.17.2 and 3.18.0): `mlflow.keras.save_model` writes
    the input example before it creates the model folder. Create the folder first."""
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


def log_keras_model(model, sample: np.ndarray, name: str = "model"):
    """Log a Keras model with a tensor signature (raw 0-255 float32 pixels) and an input example."""
    import mlflow
    from mlflow.models import infer_signature

    sample = np.asarray(sample, dtype=np.float32)[:1]
    signature = infer_signature(sample, np.asarray(model.predict(sample, verbose=0), np.float32))
    # MLflow validates the example with a default-verbosity predict(): keep its bar off stdout.
    with _keras_input_example_fix(), contextlib.redirect_stdout(io.StringIO()):
        return mlflow.keras.log_model(model, name=name, signature=signature, input_example=sample,
                                      pip_requirements=_model_requirements())


def _model_requirements() -> list[str]:
    reqs = []
    for pkg in ("tensorflow", "keras", "numpy", "pillow", "pandas"):
        try:
            reqs.append(f"{pkg}=={metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            pass
    return reqs
