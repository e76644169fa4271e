"""Where runs are stored: the tracking URI and the experiment.

The project's store is `sqlite:///mlruns/mlflow.db` with artifacts under `mlruns/artifacts`
(MLflow 3.13+ refuses the plain file store); `MLFLOW_TRACKING_URI` overrides it, e.g. with a
tracking server that several workers share.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from catdog.errors import CatdogError

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"  # relative to the project directory
DEFAULT_EXPERIMENT = "catdog"

# A store that answered once and then blips is retried, with a bound: MLflow's own HTTP retries
# (default 7 with a 120 s timeout, about 4 minutes of silence a call) are set to about a minute.
HTTP_RETRY_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "5",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}
CHECK_TIMEOUT = 3.0  # seconds per attempt of the start-up check
CHECK_ATTEMPTS = 2


class StoreUnavailable(CatdogError):
    """The tracking store does not answer: at start-up, or after the bounded retries mid-run."""


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else the project's sqlite store, as an absolute path (MLflow caches
    stores by URI, so a relative one would follow whichever directory used it first)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri[len("sqlite:///") :]).resolve())
    return uri


def with_driver(uri: str) -> str:
    """A postgresql:// URI with the driver catdog's postgres extra installs, psycopg2, named:
    SQLAlchemy 2.1 would otherwise look for psycopg 3."""
    plain = "postgresql://"
    return "postgresql+psycopg2://" + uri[len(plain) :] if uri.startswith(plain) else uri


def sqlite_dir(uri: str) -> Path | None:
    """The folder of a sqlite store (its artifacts live beside it), or None for a server."""
    return Path(uri[len("sqlite:///") :]).parent if uri.startswith("sqlite:///") else None


def configure() -> str:
    """Point MLflow at the project's store (or MLFLOW_TRACKING_URI), after checking that it
    answers, bound MLflow's HTTP retries, and quiet its chatter."""
    import mlflow

    uri = check(tracking_uri())  # within seconds, before any slow work
    mlflow.set_tracking_uri(with_driver(uri))
    for name, value in HTTP_RETRY_DEFAULTS.items():
        os.environ.setdefault(name, value)
    # A progress bar per artifact read (model loads, report) is noise between catdog's lines.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow prints each run's URL when it ends against a tracking server: noise in every trial.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    for noisy in ("mlflow", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if (folder := sqlite_dir(uri)) is not None:
        _initialise_sqlite(folder)
    return uri


def _initialise_sqlite(folder: Path) -> None:
    """Create (or migrate) the sqlite store's tables under a file lock: MLflow's migrations are
    not safe against a second process doing the same (two sweeps started at once on a new store
    failed with "table already exists"). Once the tables exist this is one quick query."""
    import fcntl

    import mlflow

    with open(folder / ".init.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            mlflow.MlflowClient().search_experiments(max_results=1)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


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


def experiment_at(uri: str, name: str, artifact_location: str) -> str:
    """The experiment NAME in the store at URI, created with its artifacts at ARTIFACT_LOCATION
    if it is new (an existing one keeps its own)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location)


def redacted(uri: str) -> str:
    """The URI without a password, for messages and logs."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _probe(uri: str) -> str | None:
    """None if the store answers now, else why not (one short phrase)."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=CHECK_TIMEOUT) as r:
                return None if r.status == 200 else f"its /health answered {r.status}"
        except urllib.error.HTTPError as exc:
            return f"its /health answered {exc.code}"
        except (OSError, ValueError) as exc:
            return str(getattr(exc, "reason", exc))
    if (folder := sqlite_dir(uri)) is not None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return f"cannot create {folder}: {exc.strerror}"
        return None if os.access(folder, os.W_OK) else f"{folder} is not writable"
    if parts.hostname:  # a database server (postgresql://, mysql://): is anything listening?
        default_port = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}
        port = parts.port or default_port.get(parts.scheme.split("+")[0], 0)
        try:
            socket.create_connection((parts.hostname, port), timeout=CHECK_TIMEOUT).close()
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def check(uri: str | None = None) -> str:
    """Fail within seconds, naming the store, when it does not answer; before any slow work."""
    uri = uri or tracking_uri()
    why = None
    for attempt in range(CHECK_ATTEMPTS):
        if (why := _probe(uri)) is None:
            return uri
        if attempt + 1 < CHECK_ATTEMPTS:
            time.sleep(1)
    raise StoreUnavailable(
        f"the MLflow tracking store {redacted(uri)} does not answer ({why}); "
        "start it, or unset MLFLOW_TRACKING_URI to use the project's "
        "sqlite store"
    )


def answers(uri: str | None = None) -> bool:
    """Whether the store answers right now (one quick probe)."""
    return _probe(uri or tracking_uri()) is None
