"""Finding runs by their tags: a sweep's runs, interrupted trials, the latest sweep.

Filters are built from a dict of tag key -> value (keys from `tags`), so no caller writes MLflow's
filter syntax by hand.
"""

from __future__ import annotations

import time

from catdog.errors import CatdogError
from catdog.log import get_logger
from catdog.tracking import runs, tags

log = get_logger(__name__)

MAX_RESULTS = 5000
POLL_SECONDS = 600  # how long a worker waits for the chief to create a run it needs


def filter_string(where: dict[str, str], *, status: str | None = None) -> str:
    parts = [f"tags.`{key}` = '{value}'" for key, value in where.items()]
    if status:
        parts.append(f"attributes.status = '{status}'")
    return " and ".join(parts)


def search(
    experiment_id: str,
    where: dict[str, str],
    statuses: tuple[str, ...] | None = None,
    *,
    newest_first: bool = False,
    max_results: int = MAX_RESULTS,
) -> list:
    """Runs carrying every tag in `where` (and one of `statuses`), oldest first by default."""
    import mlflow

    order = "DESC" if newest_first else "ASC"
    found = mlflow.MlflowClient().search_runs(
        [experiment_id],
        filter_string(where),
        max_results=max_results,
        order_by=[f"attributes.start_time {order}"],
    )
    return [r for r in found if statuses is None or r.info.status in statuses]


def histories(where: dict[str, str], metric: str, tracking_uri: str | None = None) -> list:
    """(run, METRIC's history) of every run, in any experiment, carrying the tags in WHERE, from
    the store at TRACKING_URI (default: the configured one); a history's points have `step`,
    `value` and `timestamp` (ms)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    found = client.search_runs(ids, filter_string(where), max_results=MAX_RESULTS) if ids else []
    return [(run, client.get_metric_history(run.info.run_id, metric)) for run in found]


def find_or_create(
    experiment_id: str, where: dict[str, str], run_name: str, parent: str | None, *, create: bool
) -> str:
    """The run carrying these tags, reopened if it exists; created if allowed, else awaited
    (a distributed worker waits for the chief to create the sweep's runs)."""
    import mlflow

    client = mlflow.MlflowClient()
    deadline = time.monotonic() + POLL_SECONDS
    while True:
        found = search(experiment_id, where)
        if found:
            run_id = found[-1].info.run_id
            if create:  # the owner reopens it; workers only log under it
                client.update_run(run_id, status=runs.RUNNING)
            return run_id
        if create:
            all_tags = {**where, **tags.environment_tags()}
            if parent:
                all_tags[tags.PARENT_RUN_ID] = parent
            return client.create_run(experiment_id, tags=all_tags, run_name=run_name).info.run_id
        if time.monotonic() > deadline:
            raise CatdogError(
                f"no run tagged {where} appeared on the tracking server within "
                f"{POLL_SECONDS}s; is the chief running?"
            )
        time.sleep(2)


def retire(
    experiment_id: str, where: dict[str, str], statuses: tuple[str, ...] = (runs.RUNNING,)
) -> int:
    """Mark runs left behind by an interrupted process (or about to be re-run) as orphaned and
    KILLED, so none stays RUNNING and none is counted twice."""
    import mlflow

    return _orphan(mlflow.MlflowClient(), search(experiment_id, where, statuses))


def retire_everywhere(where: dict[str, str], since: float, tracking_uri: str) -> int:
    """`retire` the RUNNING runs carrying WHERE's tags in any experiment of the store at
    TRACKING_URI, started since SINCE (a Unix time)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return _orphan(
        client,
        client.search_runs(
            experiments,
            filter_string(where, status=runs.RUNNING)
            + f" and attributes.start_time >= {int(since * 1000)}",
        ),
    )


def _orphan(client, found) -> int:
    """Tag FOUND's runs orphaned and end them KILLED; how many."""
    for run in found:
        client.set_tag(run.info.run_id, tags.ORPHANED, tags.TRUE)
        client.set_terminated(run.info.run_id, runs.KILLED)
    return len(found)


def retire_sweep(experiment_id: str, key: str) -> None:
    """--fresh: earlier runs of this sweep stay in MLflow for the record but are not resumed."""
    import mlflow

    client = mlflow.MlflowClient()
    for run in search(experiment_id, {tags.SWEEP_KEY: key}):
        client.set_tag(run.info.run_id, tags.SWEEP_KEY, f"{key}-retired-{int(time.time())}")
        if run.info.status == runs.RUNNING:
            client.set_terminated(run.info.run_id, runs.KILLED)


def sweep_trials(
    experiment_id: str,
    key: str,
    arch: str | None = None,
    statuses: tuple[str, ...] | None = (runs.FINISHED,),
) -> list:
    """A sweep's trial runs (of one architecture, if given)."""
    where = {tags.SWEEP_KEY: key, tags.KIND: tags.KIND_TRIAL}
    if arch:
        where[tags.ARCH] = arch
    return search(experiment_id, where, statuses)


def find_sweep(sweep: str = "latest", experiment: str | None = None):
    """The parent run of a sweep: by run id, or the most recent one in EXPERIMENT, or in the
    whole store when EXPERIMENT is None (each dataset sweeps in an experiment of its own)."""
    import mlflow

    from catdog.tracking import store

    store.configure()
    client = mlflow.MlflowClient()
    if sweep != "latest":
        try:
            run = client.get_run(sweep)
        except Exception:
            raise CatdogError(
                f"no MLflow run with id {sweep!r} in {store.tracking_uri()}"
            ) from None
        if run.data.tags.get(tags.KIND) != tags.KIND_SWEEP:
            raise CatdogError(f"run {sweep} is not a sweep's parent run")
        return run
    if experiment is None:
        ids = [e.experiment_id for e in client.search_experiments()]
    else:
        exp = client.get_experiment_by_name(experiment)
        ids = [] if exp is None else [exp.experiment_id]
    found = (
        client.search_runs(
            ids,
            filter_string({tags.KIND: tags.KIND_SWEEP}),
            max_results=1,
            order_by=["attributes.start_time DESC"],
        )
        if ids
        else []
    )
    if not found:
        where = f"in experiment {experiment!r} " if experiment is not None else ""
        raise CatdogError(
            f"no sweep found {where}at {store.tracking_uri()}; run `make sweep` first"
        )
    return found[0]
