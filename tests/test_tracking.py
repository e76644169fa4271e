"""The tracking package's rules: tag keys defined once, and a finished run keeps its status when
more is logged to it later."""

from __future__ import annotations

import re
from pathlib import Path

import mlflow
import pytest

from catdog.tracking import queries, runs, store, tags

PACKAGE = Path(__file__).resolve().parents[1] / "catdog"


def test_tag_keys_are_written_only_in_the_tags_module():
    offenders = [
        f"{p.relative_to(PACKAGE)}:{n}"
        for p in PACKAGE.rglob("*.py")
        if p.name != "tags.py"
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(r"\"catdog\.", line)
    ]
    assert not offenders, f"catdog.* tag keys outside catdog/tracking/tags.py: {offenders}"


def test_filter_strings_are_built_from_tag_keys():
    where = {tags.SWEEP_KEY: "k-1", tags.KIND: tags.KIND_TRIAL}
    assert queries.filter_string(where, status="FINISHED") == (
        "tags.`catdog.sweep_key` = 'k-1' and tags.`catdog.kind` = 'trial' and "
        "attributes.status = 'FINISHED'"
    )


@pytest.mark.parametrize("crash", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_a_reopened_run_keeps_its_status_and_end_time(workdir, crash):
    store.configure()
    with runs.active_run(experiment="catdog", run_name="done") as run:
        mlflow.log_metric("val_accuracy", 0.7)
    before = mlflow.MlflowClient().get_run(run.info.run_id).info
    with pytest.raises(type(crash)):
        with runs.reopened(run.info.run_id):
            mlflow.log_metric("test_accuracy", 0.6)
            raise crash
    after = mlflow.MlflowClient().get_run(run.info.run_id)
    assert after.info.status == "FINISHED" and after.info.end_time == before.end_time
    assert after.data.metrics["test_accuracy"] == 0.6
    assert mlflow.active_run() is None
