"""The cluster path as the README gives it, on tiny data: `make sweep-distributed` with two
workers and a 3-minute budget ends within the budget plus its set-up, with a registered champion
in the tracking server's store, and `catdog report` then works on that store. Run over SQLite
(tests/test_distributed.py) and PostgreSQL (tests/test_postgres.py)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import mlflow

from tests.procs import free_port
from tests.project import copy_project, make_env, run_make

BUDGET_S = 180
# Set-up outside the budget's clock: make, the tracking server, TensorFlow's import and decoding
# the photos in three processes at once, before; registering the champion (the test split read
# once, the model version logged), after. Measured here at well under a minute each.
SET_UP_S = 150
SWEEP = f"""archs = ["baseline", "bn_dropout"]
strategy = "compare"
tuner = "random"
trials = 40
epochs = 3
image_size = 32
batch_size = 8
budget = "{BUDGET_S // 60}m"
"""


def sweep_distributed(tmp: Path, data: Path, backend: str | None = None) -> tuple[Path, float]:
    """`make sweep-distributed` in a copy of the project; (the copy, wall seconds)."""
    project = copy_project(tmp / "project")
    (project / "budget3m.toml").write_text(SWEEP)
    args = [
        "sweep-distributed",
        "WORKERS=2",
        "DIST_EXP=budget3m.toml",
        f"DATA={data}",
        f"ORACLE_PORT={free_port()}",
        f"TRACKING_PORT={free_port()}",
    ]
    args += [f"BACKEND={backend}"] if backend else []
    t0 = time.monotonic()
    proc = run_make(project, args, timeout=BUDGET_S + SET_UP_S + 300)
    seconds = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout[-5000:]
    assert "registered " in proc.stdout, proc.stdout[-3000:]
    return project, seconds


def check_the_store(project: Path, store: str, seconds: float) -> None:
    """Within the budget, stopped by it, a registered champion, and a report from STORE."""
    client = mlflow.MlflowClient(store.replace("postgresql://", "postgresql+psycopg2://"))
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, max_results=5000)
    assert not [r for r in runs if r.info.status == "RUNNING"], "no run left RUNNING"
    (parent,) = [r for r in runs if r.data.tags.get("catdog.kind") == "sweep"]
    trials = [r for r in runs if r.data.tags.get("catdog.kind") == "trial"]
    spent = parent.data.metrics["sweep_seconds"]
    print(
        f"\nmake sweep-distributed: {seconds:.0f}s in all, {spent:.0f}s on the budget's clock "
        f"of {BUDGET_S}s, {len(trials)} trial runs, "
        f"{len([r for r in runs if r.data.tags.get('catdog.kind') == 'final'])} final fit"
    )
    assert parent.data.tags.get("catdog.time_limited") == "true", "the budget ended the search"
    assert len(trials) < 2 * 40, "the budget, not the sweep file's trials, ended it"
    assert spent <= BUDGET_S + 30, "the chief's clock: the budget and at most an epoch's overrun"
    assert seconds <= BUDGET_S + SET_UP_S, "within the budget plus set-up"
    location = client.get_experiment(parent.info.experiment_id).artifact_location
    assert location.startswith("file:"), f"artifacts readable without the server: {location}"

    (model,) = client.search_registered_models()
    version = client.get_model_version_by_alias(model.name, "champion")
    assert version.run_id, "the champion is registered in the server's store"

    env = {**make_env(), "MLFLOW_TRACKING_URI": store}
    report = subprocess.run(
        [str(project / ".venv" / "bin" / "catdog"), "report"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    assert list((project / "reports").glob("*.html")), report.stderr[-2000:]
