"""Reading and writing runs by id: params, metrics, tags, text and files, statuses.

Everything outside `catdog/tracking/` that touches a run does it through these functions (or
`runs`, `queries`, `artifacts`, `modelstore`), never through `mlflow` itself, so there is one
door to MLflow. A `run_id` of None means the active run of `runs.active_run`.
"""

from __future__ import annotations

from pathlib import Path


def _client():
    import mlflow

    return mlflow.MlflowClient()


def get(run_id: str):
    """The run (info, params, metrics, tags)."""
    return _client().get_run(run_id)


def active_id() -> str:
    """The id of the active run (inside `runs.active_run`)."""
    import mlflow

    return mlflow.active_run().info.run_id


def status(run_id: str) -> str:
    return get(run_id).info.status


def log_params(params: dict, run_id: str | None = None, *, only_new: bool = False) -> None:
    """Log PARAMS; ONLY_NEW skips keys the run already has (params cannot change, and a
    resumed sweep logs its parent's params again)."""
    import mlflow

    if run_id is None:
        mlflow.log_params(params)
        return
    if only_new:
        existing = get(run_id).data.params
        params = {k: v for k, v in params.items() if k not in existing}
    if params:
        _client().log_batch(
            run_id, params=[mlflow.entities.Param(k, str(v)) for k, v in params.items()]
        )


def log_metrics(values: dict, run_id: str | None = None) -> None:
    import mlflow

    if run_id is None:
        mlflow.log_metrics(values)
        return
    client = _client()
    for k, v in values.items():
        client.log_metric(run_id, k, v)


def set_tag(run_id: str, key: str, value: str) -> None:
    _client().set_tag(run_id, key, value)


def log_text(run_id: str, text: str, path: str) -> None:
    _client().log_text(run_id, text, path)


def log_file(path: str | Path, run_id: str | None = None, artifact_path: str | None = None) -> None:
    import mlflow

    if run_id is None:
        mlflow.log_artifact(str(path), artifact_path=artifact_path)
    else:
        _client().log_artifact(run_id, str(path), artifact_path=artifact_path)


def has_file(run_id: str, name: str) -> bool:
    return any(a.path == name for a in _client().list_artifacts(run_id))


def read_text(run_id: str, name: str) -> str:
    import mlflow

    return mlflow.artifacts.load_text(f"runs:/{run_id}/{name}")


def history(run_id: str, metric: str) -> list[tuple[int, float]]:
    """A metric's (step, value) pairs, by step (step = epoch)."""
    found = sorted(_client().get_metric_history(run_id, metric), key=lambda m: m.step)
    return [(m.step, m.value) for m in found]


def finish(run_id: str, status: str = "FINISHED") -> None:
    _client().set_terminated(run_id, status)
