"""A run's lifecycle: every run catdog opens ends FINISHED, FAILED on an error, or KILLED on
Ctrl-C or SIGTERM; none is left RUNNING by a process that exits normally or is interrupted.

A process killed with SIGKILL cannot close its run; the sweep marks such orphans KILLED when it
resumes (see `queries.retire`).
"""

from __future__ import annotations

import contextlib
import signal

FINISHED, FAILED, KILLED, RUNNING = "FINISHED", "FAILED", "KILLED", "RUNNING"


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


def status_for(exc: BaseException | None) -> str:
    if exc is None:
        return FINISHED
    if isinstance(exc, (KeyboardInterrupt, Terminated)):
        return KILLED
    return FAILED


@contextlib.contextmanager
def active_run(
    *,
    run_id: str | None = None,
    experiment: str | None = None,
    run_name: str | None = None,
    parent_run_id: str | None = None,
    tags: dict | None = None,
):
    """A fluent MLflow run (new, or reopened by `run_id`) that always ends with a status."""
    import mlflow

    from catdog.tracking import store

    kwargs = {}
    if run_id is None:
        kwargs = dict(
            experiment_id=store.experiment_id(experiment or store.DEFAULT_EXPERIMENT),
            run_name=run_name,
            parent_run_id=parent_run_id,
            tags=tags,
        )
    run = mlflow.start_run(run_id=run_id, **kwargs)
    try:
        yield run
    except BaseException as exc:
        if isinstance(exc, Exception) and not store.answers():
            # Logging failed because the store went away (after MLflow's bounded retries):
            # closing the run would wait out the retries again, so say so and stop. The run
            # stays RUNNING until the next command retires it.
            end_unreachable()
            if isinstance(exc, store.StoreUnavailable):
                raise
            raise store.StoreUnavailable(
                f"the MLflow tracking store {store.redacted(store.tracking_uri())} stopped "
                f"answering ({_first_line(exc)}); start it again and run the same command to "
                "resume"
            ) from exc
        mlflow.end_run(status_for(exc))
        raise
    mlflow.end_run(FINISHED)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


@contextlib.contextmanager
def no_retries():
    """MLflow HTTP calls that fail at once instead of retrying (for a store known to be down)."""
    import os

    saved = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_HTTP_REQUEST_MAX_RETRIES", None)
        else:
            os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = saved


def end_unreachable() -> None:
    """Leave the active fluent run (so the next start_run is not nested in it) without waiting
    on a store that does not answer."""
    import mlflow

    with no_retries():
        try:
            mlflow.end_run(FAILED)
        except Exception:  # the store is down: the run is retired when the sweep resumes
            pass


def terminate(run_id: str, status: str) -> None:
    """Set a run's final status; a store that is down gets one attempt, not MLflow's retries."""
    import mlflow

    from catdog.tracking import store

    client = mlflow.MlflowClient()
    if store.answers():
        client.set_terminated(run_id, status)
        return
    with no_retries():
        try:
            client.set_terminated(run_id, status)
        except Exception:
            pass


@contextlib.contextmanager
def reopened(run_id: str):
    """Log more to a run that already ended (its test evaluation, its serving model) and leave
    its status and end time exactly as they were, whatever happens inside: a failure or Ctrl-C
    while adding to a finished run must not turn it FAILED or KILLED."""
    import mlflow

    client = mlflow.MlflowClient()
    before = client.get_run(run_id).info
    run = mlflow.start_run(run_id=run_id)
    try:
        yield run
    finally:
        mlflow.end_run()
        client.set_terminated(run_id, status=before.status, end_time=before.end_time)
