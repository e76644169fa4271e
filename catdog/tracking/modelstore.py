"""Models in MLflow: the model a run logged, loading a model by URI, and the model registry
(versions, their tags, the alias that marks the champion)."""

from __future__ import annotations

from catdog.errors import CatdogError
from catdog.tracking import tags


def _client():
    import mlflow

    return mlflow.MlflowClient()


def logged_model_uri(run) -> str:
    """The Keras model a run logged (its `model`), as a models:/ URI."""
    import mlflow

    found = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run.info.run_id}' and name = 'model'",
        output_format="list")
    if not found:
        raise CatdogError(f"run {run.info.run_id} ({run.data.tags.get(tags.ARCH)}) has no logged "
                          "model: a sweep logs models for each architecture's best trials by "
                          "val_accuracy, so choose by that metric")
    return f"models:/{found[0].model_id}"


def load(uri: str) -> tuple[object, tuple[str, ...] | None]:
    """The Keras model behind URI (a Keras flavour model, or the `keras_model` of catdog's
    serving model, a pyfunc) and the class names logged with it (None for models logged before
    class names were)."""
    import mlflow

    from catdog.tracking import store
    from catdog.tracking.artifacts import CLASSES

    try:
        info = mlflow.models.get_model_info(uri)
    except Exception as exc:
        raise CatdogError(f"could not find model {uri} in {store.tracking_uri()} "
                          f"({type(exc).__name__}); run `catdog register` first or check the URI"
                          ) from None
    recorded = (info.metadata or {}).get(CLASSES)
    classes = tuple(str(c) for c in recorded) if recorded else None
    if "keras" in info.flavors:
        return mlflow.keras.load_model(uri), classes
    model = mlflow.pyfunc.load_model(uri).unwrap_python_model()
    if hasattr(model, "keras_model"):
        return model.keras_model, classes
    raise CatdogError(f"model {uri} is neither a Keras model nor a catdog serving model")


def versions_of_run(name: str, run_id: str) -> list:
    """The registered versions of NAME that hold RUN_ID's model (none if NAME is new)."""
    client = _client()
    try:
        client.get_registered_model(name)
    except Exception:
        return []
    return [v for v in client.search_model_versions(f"name = '{name}'")
            if v.tags.get(tags.RUN_ID) == run_id]


def register(model_uri: str, name: str, version_tags: dict):
    import mlflow

    return mlflow.register_model(model_uri, name, tags=version_tags)


def by_alias(name: str, alias: str):
    """The version of NAME that ALIAS points at, or None."""
    try:
        return _client().get_model_version_by_alias(name, alias)
    except Exception:
        return None


def set_alias(name: str, alias: str, version: str) -> None:
    _client().set_registered_model_alias(name, alias, version)
