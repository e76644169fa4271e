"""Resume after SIGINT, SIGTERM and kill -9 in the middle of a trial, in real subprocesses: the
re-run completes the sweep with every trial exactly once in MLflow and no run left RUNNING."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import mlflow
import pytest

from tests.procs import wait_for

pytestmark = pytest.mark.slow

SWEEP = """archs = ["baseline"]
tuner = "random"
trials = 3
epochs = 25
patience = 100
image_size = 32
batch_size = 4
"""


def _start(workdir, data):
    (workdir / "exp.toml").write_text(SWEEP)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("MLFLOW_TRACKING_URI", None)
    # A terminal's Ctrl-C: SIGINT with its default action, even where this test itself runs in
    # the background (a non-interactive shell starts background jobs with SIGINT ignored).
    return subprocess.Popen(
        [sys.executable, "-m", "catdog", "sweep", "exp.toml", "--data", str(data)],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _trial_runs(workdir):
    mlflow.set_tracking_uri(f"sqlite:///{workdir}/mlruns/mlflow.db")
    return mlflow.search_runs(search_all_experiments=True, output_format="list")


SIGNALS = {
    "sigint": (signal.SIGINT, 130),
    "sigterm": (signal.SIGTERM, 143),
    "kill9": (signal.SIGKILL, -9),
}


@pytest.mark.parametrize(
    "how",
    [
        pytest.param("sigint", marks=pytest.mark.heavy),
        pytest.param("sigterm", marks=pytest.mark.heavy),
        "kill9",
    ],
)
def test_interrupted_sweep_resumes_with_each_trial_once(tiny_prepared, workdir, how):
    proc = _start(workdir, tiny_prepared)
    wait_for(proc, "[baseline t1] epoch 2/")  # trial 0 done, trial 1 in progress
    signum, code = SIGNALS[how]
    proc.send_signal(signum)
    out = proc.communicate(timeout=120)[0]
    runs = _trial_runs(workdir)
    running = [r for r in runs if r.info.status == "RUNNING"]
    assert proc.returncode == code, out
    if how != "kill9":
        assert "Traceback" not in out, out[-3000:]
        assert "run the same command again to resume" in out
        assert not running, "SIGINT closes every run with a status"
        killed = [r for r in runs if r.info.status == "KILLED"]
        assert {r.data.tags["catdog.kind"] for r in killed} == {"trial", "arch", "sweep"}
    else:
        assert running, "kill -9 leaves the trial's run RUNNING until the sweep resumes"

    rerun = _start(workdir, tiny_prepared)
    out = rerun.communicate(timeout=600)[0]
    assert rerun.returncode == 0, out[-3000:]
    assert "resuming: 1 trial(s) already done" in out
    runs = _trial_runs(workdir)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    trials = [r for r in runs if r.data.tags.get("catdog.kind") == "trial"]
    finished = sorted(r.data.tags["catdog.trial_id"] for r in trials if r.info.status == "FINISHED")
    assert finished == ["0", "1", "2"], "every trial present exactly once"
    orphans = [r for r in trials if r.info.status != "FINISHED"]
    assert [r.data.tags["catdog.trial_id"] for r in orphans] == ["1"]
    assert orphans[0].info.status == "KILLED"
    sweeps = [r for r in runs if r.data.tags.get("catdog.kind") == "sweep"]
    assert len(sweeps) == 1 and sweeps[0].info.status == "FINISHED", (
        "parent reopened, not duplicated"
    )
