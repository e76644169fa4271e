"""Models in MLflow: the model a run logged, loading a model by URI, whether flip TTA is part of
a model, and the model registry (versions, their tags, the alias that marks the champion).

Flip test-time augmentation (the mean of an image's and its mirror image's probabilities) is part
of a model when it was kept for it, and then every figure and every answer uses it. Where that is
recorded: a serving model (what `register` logs and `mlflow models serve` runs) holds it in its
config and metadata (`keys.TTA`); a Keras model logged by a run holds it in the run's
`catdog.tta` tag (`set_tta`, which the `focus` long fit calls once validation has decided).
`load` and `tta_of` are the only readers."""

from __future__ import annotations

from catdog import keys
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
        output_format="list",
    )
    if not found:
        raise CatdogError(
            f"run {run.info.run_id} ({run.data.tags.get(tags.ARCH)}) has no logged "
            "model: a sweep logs models for each architecture's best trials by "
            "val_accuracy, so choose by that metric"
        )
    return f"models:/{found[0].model_id}"


def model_bytes(model_id: str, path: str | None = None) -> int:
    """The bytes a logged model (MLflow 3's model id) takes on the store: every file of it."""
    return sum(
        model_bytes(model_id, f.path) if f.is_dir else (f.file_size or 0)
        for f in _client().list_logged_model_artifacts(model_id, path)
    )


def set_tta(run_id: str, kept: bool) -> None:
    """Record whether flip TTA is part of the model RUN_ID logged (it is when it beat the plain
    model on validation)."""
    _client().set_tag(run_id, tags.TTA, tags.TRUE if kept else tags.FALSE)


def tta_of(run) -> bool:
    """Whether flip TTA is part of the model RUN logged (see `set_tta`)."""
    return run.data.tags.get(tags.TTA) == tags.TRUE


def _recorded_tta(info) -> bool:
    """A model's own TTA setting: its metadata's, else (a Keras model a run logged) its run's."""
    recorded = (info.metadata or {}).get(keys.TTA)
    if recorded is not None:
        return bool(recorded)
    if "keras" not in info.flavors or not info.run_id:
        return False  # a serving model logged before TTA was recorded serves without it
    try:
        return tta_of(_client().get_run(info.run_id))
    except Exception:  # a model folder from another store: no run to ask
        return False


def load(uri: str) -> tuple[object, tuple[str, ...] | None, bool]:
    """The Keras model behind URI (a Keras flavour model, or the `keras_model` of catdog's
    serving model, a pyfunc), the class names logged with it (None for models logged before
    class names were), and whether flip TTA is part of it."""
    import mlflow

    from catdog.tracking import store
    from catdog.tracking.artifacts import CLASSES

    try:
        info = mlflow.models.get_model_info(uri)
    except Exception as exc:
        raise CatdogError(
            f"could not find model {uri} in {store.tracking_uri()} "
            f"({type(exc).__name__}){_registered_hint(uri)}; run `catdog register` "
            "first or check the URI"
        ) from None
    recorded = (info.metadata or {}).get(CLASSES)
    classes = tuple(str(c) for c in recorded) if recorded else None
    tta = _recorded_tta(info)
    if "keras" in info.flavors:
        # The metric compiled into the model and the whitening layer: Keras must know them.
        import catdog.models.balanced  # noqa: F401
        import catdog.models.whitening  # noqa: F401

        return mlflow.keras.load_model(uri), classes, tta
    model = mlflow.pyfunc.load_model(uri).unwrap_python_model()
    if hasattr(model, "keras_model"):
        return model.keras_model, classes, tta
    raise CatdogError(f"model {uri} is neither a Keras model nor a catdog serving model")


def registered_names() -> list[str]:
    """The names of the store's registered models, sorted (one per dataset, by default)."""
    return sorted(m.name for m in _client().search_registered_models())


def _registered_hint(uri: str) -> str:
    """For a models:/ URI that is not there: the names that are, and how to choose one."""
    if not uri.startswith("models:/"):
        return ""
    try:
        names = registered_names()
    except Exception:  # the store itself is the problem; the error says so already
        return ""
    if not names:
        return "; no model is registered there yet"
    return (
        f"; registered there: {', '.join(names)} (choose one with --model "
        f"models:/NAME@champion, MODEL=NAME with make serve)"
    )


def versions_of_run(name: str, run_id: str) -> list:
    """The registered versions of NAME that hold RUN_ID's model (none if NAME is new)."""
    client = _client()
    try:
        client.get_registered_model(name)
    except Exception:
        return []
    return [
        v
        for v in client.search_model_versions(f"name = '{name}'")
        if v.tags.get(tags.RUN_ID) == run_id
    ]


def register(model_uri: str, name: str, version_tags: dict):
    import mlflow

    return mlflow.register_model(model_uri, name, tags=version_tags)


def by_alias(name: str, alias: str):
    """The version of NAME that ALIAS points at, or None when there is no such model or alias.
    Any other error (a store that does not answer) is raised: it must not read as "no
    champion", which would let `register` move the alias."""
    from mlflow.exceptions import MlflowException

    try:
        return _client().get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        missing = exc.error_code == "RESOURCE_DOES_NOT_EXIST" or (
            exc.error_code == "INVALID_PARAMETER_VALUE"
            and "alias" in str(exc)
            and "not found" in str(exc)
        )
        if missing:
            return None
        raise


def set_alias(name: str, alias: str, version: str) -> None:
    _client().set_registered_model_alias(name, alias, version)
