"""Faults in the middle of real sweeps, in subprocesses: the tracking server going away and
coming back (or not), two sweeps writing to one SQLite store, kill -9 while a model is being
logged or the data prepared, and the memory of a 20-trial sweep. Afterwards every trial is in
the store exactly once and no run is left RUNNING."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from tests.procs import free_port, wait_for

pytestmark = pytest.mark.slow

SWEEP = """archs = ["baseline"]
tuner = "random"
trials = {trials}
epochs = {epochs}
patience = 100
image_size = 32
batch_size = 4
seed = {seed}
"""

# Test-only hooks, loaded by Python at start-up from PYTHONPATH: they make one step slow and say
# when it starts, so the test can strike while that step is under way. catdog has no hooks.
SITECUSTOMIZE = """
import os, sys, time
where = os.environ.get("CATDOG_TEST_SLOW_AT")
if where == "model":
    from catdog.tracking import artifacts
    original = artifacts.log_keras_model
    def slow(*args, **kwargs):
        print("TEST: logging a model", flush=True)
        time.sleep(4)
        return original(*args, **kwargs)
    artifacts.log_keras_model = slow
elif where == "prepare":
    import importlib
    prepare = importlib.import_module("catdog.data.prepare")  # the module, not the function
    original = prepare.check_image
    def slow(raw):
        print("TEST: preparing", flush=True)
        time.sleep(0.2)
        return original(raw)
    prepare.check_image = slow
"""


def _env(workdir: Path, **extra) -> dict:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **extra}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(extra)
    return env


def _sweep(workdir: Path, data, name="exp", trials=3, epochs=8, seed=1337, **env):
    (workdir / f"{name}.toml").write_text(SWEEP.format(trials=trials, epochs=epochs, seed=seed))
    return subprocess.Popen(
        [sys.executable, "-m", "catdog", "sweep", f"{name}.toml", "--data", str(data)],
        cwd=workdir,
        env=_env(workdir, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _server(workdir: Path, port: int) -> subprocess.Popen:
    (workdir / "mlruns" / "artifacts").mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{workdir}/mlruns/mlflow.db",
            "--artifacts-destination",
            str(workdir / "mlruns" / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    from catdog.distributed import wait_for_server

    wait_for_server(f"http://127.0.0.1:{port}", timeout=90)
    return proc


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _runs(workdir: Path):
    mlflow.set_tracking_uri(f"sqlite:///{workdir}/mlruns/mlflow.db")
    try:
        return mlflow.search_runs(search_all_experiments=True, output_format="list")
    finally:
        mlflow.set_tracking_uri(None)


def _assert_complete(workdir: Path, trials: int, sweeps: int = 1) -> list:
    runs = _runs(workdir)
    assert not [r for r in runs if r.info.status == "RUNNING"], "no run left RUNNING"
    by_sweep: dict[str, list[str]] = {}
    for r in runs:
        if r.data.tags.get("catdog.kind") == "trial" and r.info.status == "FINISHED":
            by_sweep.setdefault(r.data.tags["catdog.sweep_key"], []).append(
                r.data.tags["catdog.trial_id"]
            )
    assert len(by_sweep) == sweeps, by_sweep
    for key, ids in by_sweep.items():
        # KerasTuner pads trial ids when there are ten or more ("00", "01", ...)
        assert sorted(map(int, ids)) == list(range(trials)), f"{key}: each trial exactly once"
    return runs


# ------------------------------------------------------------------- the tracking server fails
@pytest.mark.heavy
def test_a_server_that_blips_mid_sweep_costs_nothing(tiny_prepared, workdir):
    """Logging waits (bounded retries) while the server restarts, and the sweep goes on."""
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = _server(workdir, port)
    try:
        proc = _sweep(workdir, tiny_prepared, MLFLOW_TRACKING_URI=uri)
        wait_for(proc, "[baseline t1] epoch 2/")
        _stop(server)
        down = time.monotonic()
        time.sleep(3)
        server = _server(workdir, port)
        print(f"server down for {time.monotonic() - down:.1f}s mid-trial")
        out = proc.communicate(timeout=600)[0]
        assert proc.returncode == 0, out[-3000:]
    finally:
        _stop(server)
    _assert_complete(workdir, trials=3)


def test_a_server_that_stays_down_stops_the_sweep_cleanly_and_it_resumes(tiny_prepared, workdir):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = _server(workdir, port)
    # A shorter bound than catdog's default (about a minute) keeps the test short.
    short = {
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    }
    try:
        proc = _sweep(workdir, tiny_prepared, **short)
        wait_for(proc, "[baseline t1] epoch 2/")
        down = time.monotonic()
        _stop(server)
        out = proc.communicate(timeout=300)[0]
        waited = time.monotonic() - down
        print(f"sweep stopped {waited:.1f}s after the server went down")
        assert proc.returncode == 2, out[-3000:]
        assert "Traceback" not in out, out[-3000:]
        assert f"the MLflow tracking store {uri} stopped answering" in out
        assert waited < 120

        server = _server(workdir, port)
        rerun = _sweep(workdir, tiny_prepared, **short)
        out = rerun.communicate(timeout=600)[0]
        assert rerun.returncode == 0, out[-3000:]
        assert "resuming: 1 trial(s) already done" in out
    finally:
        _stop(server)
    runs = _assert_complete(workdir, trials=3)
    killed = [
        r for r in runs if r.data.tags.get("catdog.kind") == "trial" and r.info.status == "KILLED"
    ]
    assert [r.data.tags["catdog.trial_id"] for r in killed] == ["1"], "the cut trial, retired"


# ------------------------------------------------------------------ two sweeps, one SQLite file
@pytest.mark.heavy
def test_two_sweeps_at_once_on_one_sqlite_store_both_finish(tiny_prepared, workdir):
    a = _sweep(workdir, tiny_prepared, name="a", epochs=3, seed=1)
    b = _sweep(workdir, tiny_prepared, name="b", epochs=3, seed=2)
    out_a, out_b = a.communicate(timeout=900)[0], b.communicate(timeout=900)[0]
    assert a.returncode == 0, out_a[-3000:]
    assert b.returncode == 0, out_b[-3000:]
    runs = _assert_complete(workdir, trials=3, sweeps=2)
    print(f"two concurrent sweeps on one SQLite store: {len(runs)} runs written, none lost")


# ------------------------------------------------------------------------------ kill -9 mid-step
@pytest.mark.parametrize(
    "where, needle",
    [
        ("model", "TEST: logging a model"),
        pytest.param("prepare", "TEST: preparing", marks=pytest.mark.heavy),
    ],
)
def test_kill9_mid_step_then_resume(tiny_prepared, workdir, tmp_path_factory, where, needle):
    hooks = tmp_path_factory.mktemp("hooks")
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    data = tiny_prepared.parent / "raw" if where == "prepare" else tiny_prepared
    env = {
        "PYTHONPATH": os.pathsep.join([str(hooks), os.environ.get("PYTHONPATH", "")]),
        "CATDOG_TEST_SLOW_AT": where,
    }
    proc = _sweep(workdir, data, trials=2, epochs=2, **env)
    wait_for(proc, needle)
    proc.kill()
    proc.wait()
    if where == "prepare":
        prepared = workdir / "data" / "prepared"
        assert not [p for p in prepared.iterdir() if not p.name.startswith(".")], (
            "a half-prepared dataset never sits under a real name"
        )

    rerun = _sweep(workdir, data, trials=2, epochs=2)
    out = rerun.communicate(timeout=600)[0]
    assert rerun.returncode == 0, out[-3000:]
    runs = _assert_complete(workdir, trials=2)
    best = [r for r in runs if r.data.tags.get("catdog.best_trial") == "true"]
    assert len(best) == 1 and best[0].info.status == "FINISHED"
    mlflow.set_tracking_uri(f"sqlite:///{workdir}/mlruns/mlflow.db")
    try:
        model = mlflow.keras.load_model(f"runs:/{best[0].info.run_id}/model")
    finally:
        mlflow.set_tracking_uri(None)
    assert model.count_params() > 0, "the best trial's model is whole"


# ------------------------------------------------------------------------------- a long sweep
# The same fits with nothing of catdog's around them: Keras 3 on TensorFlow 2.21 keeps about
# 15 MB per `model.fit` even after `clear_session()` (keras-team/keras#17458 and #20552, open).
BARE_KERAS = """
import sys
from catdog import runtime
runtime.start()
import gc, keras
from catdog import models, pipeline
dec = pipeline.decoded(sys.argv[1], "train", 32)
x, y = dec.images.astype("float32"), dec.labels
for i in range(20):
    keras.backend.clear_session(); gc.collect()
    m = models.get("baseline").build(models.fixed_hyperparameters({}), image_size=32)
    m.fit(x, y, batch_size=4, epochs=1, verbose=0)
    del m
    runtime.release_memory()
    print(runtime.rss_mb()[0], flush=True)
"""


@pytest.mark.heavy
def test_memory_over_20_trials_grows_no_more_than_keras_itself(tiny_prepared, workdir):
    proc = _sweep(workdir, tiny_prepared, trials=20, epochs=1)
    out = proc.communicate(timeout=1500)[0]
    assert proc.returncode == 0, out[-3000:]
    runs = _assert_complete(workdir, trials=20)
    trials = sorted(
        (r for r in runs if r.data.tags.get("catdog.kind") == "trial"),
        key=lambda r: int(r.data.tags["catdog.trial_id"]),
    )
    rss = [r.data.metrics["rss_mb"] for r in trials]
    per_trial = (rss[-1] - rss[4]) / 15  # after a warm-up of 5 trials
    bare = subprocess.run(
        [sys.executable, "-c", BARE_KERAS, str(tiny_prepared)],
        capture_output=True,
        text=True,
        timeout=900,
        env=_env(workdir),
    )
    assert bare.returncode == 0, bare.stderr[-2000:]
    keras_rss = [float(v) for v in bare.stdout.split()]
    per_fit = (keras_rss[-1] - keras_rss[4]) / 15
    print(
        f"resident memory over 20 trials: trial 1 {rss[0]:.0f} MB, trial 5 {rss[4]:.0f} MB, "
        f"trial 20 {rss[-1]:.0f} MB: {per_trial:+.1f} MB per trial after warm-up; bare Keras "
        f"fits of the same model: {per_fit:+.1f} MB per fit"
    )
    assert per_trial <= per_fit + 5, "catdog's trial adds memory beyond Keras's own fit"
