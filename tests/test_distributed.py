"""Distributed sweep: a real `mlflow server` on 127.0.0.1, a KerasTuner chief and two workers as
subprocesses. Every trial appears exactly once, under the right parent; a worker killed mid-trial
is restarted (past the first architecture) and its trial run again. And how `launch` watches its
processes, with stand-ins for the chief and the workers: a worker that keeps dying stops the
sweep instead of leaving the chief waiting forever, restarts are bounded, a worker left behind is
stopped."""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from catdog import distributed
from catdog.distributed import wait_for_server
from catdog.errors import CatdogError
from tests.procs import free_port


@pytest.mark.slow
@pytest.mark.heavy
def test_chief_and_two_workers_share_one_sweep(tiny_prepared, workdir):
    (workdir / "exp.toml").write_text(
        'archs = ["baseline", "bn_dropout"]\ntuner = "random"\n'
        "trials = 3\nepochs = 2\nimage_size = 32\nbatch_size = 8\n"
    )
    tracking_port, oracle_port = free_port(), free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "catdog",
            "distributed",
            "exp.toml",
            "--data",
            str(tiny_prepared),
            "--workers",
            "2",
            "--tracking-port",
            str(tracking_port),
            "--oracle-port",
            str(oracle_port),
        ],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]

    mlflow.set_tracking_uri(f"sqlite:///{workdir}/mlruns/mlflow.db")
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert not [r for r in runs if r.info.status == "RUNNING"]
    kinds = {
        k: [r for r in runs if r.data.tags.get("catdog.kind") == k]
        for k in ("sweep", "arch", "trial")
    }
    assert len(kinds["sweep"]) == 1
    parent = kinds["sweep"][0].info.run_id
    arch_runs = {r.info.run_id: r.data.tags["catdog.arch"] for r in kinds["arch"]}
    assert sorted(arch_runs.values()) == ["baseline", "bn_dropout"]
    assert all(r.data.tags["mlflow.parentRunId"] == parent for r in kinds["arch"])
    seen = sorted(
        (r.data.tags["catdog.arch"], r.data.tags["catdog.trial_id"]) for r in kinds["trial"]
    )
    assert seen == sorted((a, str(t)) for a in ("baseline", "bn_dropout") for t in range(3)), (
        "every trial exactly once"
    )
    for r in kinds["trial"]:
        assert arch_runs[r.data.tags["mlflow.parentRunId"]] == r.data.tags["catdog.arch"]
        assert r.data.tags["catdog.tuner_id"] in {"tuner0", "tuner1"}
    assert {r.data.tags["catdog.tuner_id"] for r in kinds["trial"]} == {"tuner0", "tuner1"}, (
        "both workers ran trials"
    )


def _listening_hosts(port: int) -> set[str]:
    """The IPv4 addresses something listens on at PORT, from /proc/net/tcp (0.0.0.0: all)."""
    hosts = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        addr, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
            hosts.add(socket.inet_ntoa(bytes.fromhex(addr)[::-1]))
    return hosts


def _running_trial(client, launcher, deadline, arch):
    """The first trial run of ARCH seen RUNNING (the server is polled once it answers)."""
    while time.monotonic() < deadline and launcher.poll() is None:
        try:
            experiments = [e.experiment_id for e in client.search_experiments()]
            found = client.search_runs(
                experiments,
                "tags.`catdog.kind` = 'trial' and "
                f"tags.`catdog.arch` = '{arch}' and "
                "attributes.status = 'RUNNING'",
            )
        except mlflow.exceptions.MlflowException:
            found = []
        if found:
            return found[0]
        time.sleep(0.3)
    pytest.fail("no trial run was seen RUNNING")


@pytest.mark.slow
def test_a_worker_killed_mid_trial_is_restarted_and_its_trial_run_again(tiny_prepared, workdir):
    (workdir / "exp.toml").write_text(
        'archs = ["baseline", "bn_dropout"]\ntuner = "random"\n'
        "trials = 2\nepochs = 2\nimage_size = 32\nbatch_size = 8\n"
    )
    tracking_port, oracle_port = free_port(), free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log_path = workdir / "distributed.log"
    t0 = time.monotonic()
    with open(log_path, "w") as log_file:
        launcher = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "catdog",
                "distributed",
                "exp.toml",
                "--data",
                str(tiny_prepared),
                "--workers",
                "2",
                "--tracking-port",
                str(tracking_port),
                "--oracle-port",
                str(oracle_port),
            ],
            cwd=workdir,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        try:
            wait_for_server(f"http://127.0.0.1:{tracking_port}", launcher)
        except CatdogError:
            pytest.fail(log_path.read_text()[-4000:])
        assert _listening_hosts(tracking_port) == {"127.0.0.1"}, "tracking server on loopback"
        client = mlflow.MlflowClient(f"http://127.0.0.1:{tracking_port}")
        # In the second architecture: the restarted worker must skip the first, whose oracle
        # the chief has closed, and join the one being searched.
        victim = _running_trial(client, launcher, time.monotonic() + 300, "bn_dropout")
        tuner_id = victim.data.tags["catdog.tuner_id"]
        pids = re.findall(rf"worker {tuner_id} started \(pid (\d+)\)", log_path.read_text())
        os.kill(int(pids[-1]), signal.SIGKILL)
        killed_at = time.time()
        launcher.wait(timeout=600)
        launcher_seconds = time.time() - killed_at
    finally:
        if launcher.poll() is None:  # the launcher stops the server and the sweep on SIGTERM
            os.killpg(launcher.pid, signal.SIGTERM)
            launcher.wait(timeout=60)
    out = log_path.read_text()
    assert launcher.returncode == 0, out[-4000:]
    assert f"worker {tuner_id} ended with signal SIGKILL; restarting it" in out, out[-4000:]

    mlflow.set_tracking_uri(f"sqlite:///{workdir}/mlruns/mlflow.db")
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert not [r for r in runs if r.info.status == "RUNNING"], "no run left RUNNING"
    trials = [r for r in runs if r.data.tags.get("catdog.kind") == "trial"]
    finished = [r for r in trials if r.info.status == "FINISHED"]
    assert sorted(
        (r.data.tags["catdog.arch"], r.data.tags["catdog.trial_id"]) for r in finished
    ) == [(a, str(t)) for a in ("baseline", "bn_dropout") for t in range(2)], (
        "each trial exactly one FINISHED run"
    )
    dead = mlflow.MlflowClient().get_run(victim.info.run_id)
    assert dead.info.status == "KILLED" and dead.data.tags.get("catdog.orphaned") == "true"
    rerun = [
        r
        for r in finished
        if r.data.tags["catdog.arch"] == victim.data.tags["catdog.arch"]
        and r.data.tags["catdog.trial_id"] == victim.data.tags["catdog.trial_id"]
    ][0]
    assert rerun.data.tags["catdog.tuner_id"] == tuner_id, "the restarted worker re-ran it"
    print(
        f"\nkilled worker {tuner_id} in trial {victim.data.tags['catdog.arch']}/"
        f"{victim.data.tags['catdog.trial_id']}: its re-run finished "
        f"{rerun.info.end_time / 1000 - killed_at:.0f}s after the kill, launch returned "
        f"{launcher_seconds:.0f}s after it; test {time.monotonic() - t0:.0f}s; "
        f"{len(finished)} FINISHED trial runs, {len(trials) - len(finished)} KILLED"
    )


# ------------------------------------------------------------- launch's watch, with stand-ins
STAND_IN = """
import os, signal, socket, time
me, port = os.environ["KERASTUNER_TUNER_ID"], int(os.environ["KERASTUNER_ORACLE_PORT"])
act = os.environ["STAND_IN_" + me.upper()].split()
if act[0] == "serve":  # a chief serving the first architecture's oracle, then stuck in the next
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen()
    time.sleep(float(act[1]))
    s.close()
    time.sleep(3600)
elif act[0] == "die":
    time.sleep(float(act[1]))
    os.kill(os.getpid(), signal.SIGKILL)
elif act[0] == "exit":
    time.sleep(float(act[1]))
    raise SystemExit(int(act[2]))
else:
    time.sleep(3600)
"""


@pytest.fixture
def messages():
    """What catdog logs during the test."""
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logger = logging.getLogger("catdog")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield seen
    logger.removeHandler(handler)
    logger.setLevel(level)


def _stand_in_sweep(workdir, max_restarts=2, **acts) -> distributed.Sweep:
    (workdir / "stand_in.py").write_text(STAND_IN)
    env = {
        **os.environ,
        "KERASTUNER_ORACLE_IP": "127.0.0.1",
        "KERASTUNER_ORACLE_PORT": str(free_port()),
        "MLFLOW_TRACKING_URI": f"sqlite:///{workdir}/mlruns/mlflow.db",
        **{f"STAND_IN_{who.upper()}": act for who, act in acts.items()},
    }
    return distributed.Sweep(
        [sys.executable, str(workdir / "stand_in.py")],
        env,
        workers=2,
        host="127.0.0.1",
        oracle_port=int(env["KERASTUNER_ORACLE_PORT"]),
        max_restarts=max_restarts,
    )


def test_a_worker_that_keeps_dying_is_restarted_then_stops_the_sweep(workdir, messages):
    client = mlflow.MlflowClient(f"sqlite:///{workdir}/mlruns/mlflow.db")
    exp = client.create_experiment("catdog")
    # The chief serves the first oracle for 5s, then waits; tuner0 dies 6s after each start,
    # past the first architecture: restarted (it skips what the chief finished), then stopped.
    sweep = _stand_in_sweep(workdir, max_restarts=1, chief="serve 5", tuner0="die 6", tuner1="wait")
    orphan = client.create_run(exp, tags={"catdog.kind": "trial", "catdog.tuner_id": "tuner0"})
    sweep.start([])
    t0 = time.monotonic()
    code = sweep.run()
    assert code == 128 + signal.SIGKILL
    assert time.monotonic() - t0 < 40, "the sweep was stopped, not left waiting"
    assert all(p.poll() is not None for p in sweep.processes()), "chief and workers stopped"
    assert sweep.restarts["tuner0"] == 1
    assert any("tuner0 ended with signal" in m and "restarting it" in m for m in messages), messages
    run = client.get_run(orphan.info.run_id)
    assert run.info.status == "KILLED" and run.data.tags["catdog.orphaned"] == "true"


def test_restarts_are_bounded(workdir, messages):
    sweep = _stand_in_sweep(
        workdir, max_restarts=2, chief="serve 3600", tuner0="exit 0.5 3", tuner1="wait"
    )
    sweep.start([])
    assert sweep.run() == 3
    assert sweep.restarts == {"tuner0": 2, "tuner1": 0}
    assert sum("tuner0 ended with exit code 3; restarting it" in m for m in messages) == 2
    assert any("it was restarted 2 time(s) already" in m for m in messages), messages
    assert all(p.poll() is not None for p in sweep.processes())


def test_a_worker_still_running_after_the_chief_finished_is_stopped(workdir, messages, monkeypatch):
    monkeypatch.setattr(distributed, "GRACE_SECONDS", 2)
    sweep = _stand_in_sweep(workdir, chief="exit 1 0", tuner0="exit 0 0", tuner1="wait")
    sweep.start([])
    assert sweep.run() == 0
    assert sweep.workers["tuner1"].returncode == -signal.SIGTERM
    assert any("tuner1 still running" in m for m in messages), messages


@pytest.mark.slow
@pytest.mark.heavy
def test_make_sweep_distributed_keeps_its_budget_and_registers_a_champion(tiny_prepared, tmp_path):
    from tests.distributed_journey import check_the_store, sweep_distributed

    project, seconds = sweep_distributed(tmp_path, tiny_prepared)
    check_the_store(project, f"sqlite:///{project}/mlruns/mlflow.db", seconds)


class _OutOfTime:
    """A strategy whose budget check says the share is used once ALLOWED trials exist."""

    def __init__(self, allowed: int):
        self.allowed, self.asked = allowed, 0

    def before_trial(self, tuner):
        from catdog.search.context import TimeLimitReached

        self.asked += 1
        if len(tuner.oracle.trials) >= self.allowed:
            raise TimeLimitReached("the share is used up")


@pytest.mark.parametrize("allowed", [0, 2])
def test_a_chiefs_oracle_stops_handing_out_trials_when_the_budget_says(allowed, tmp_path):
    """KerasTuner's own STOPPED answer, also before any trial (a cap of 0 would mean none)."""
    from types import SimpleNamespace

    import keras_tuner as kt

    from catdog.search.tuner import hand_out_within_budget

    hp = kt.HyperParameters()
    hp.Float("lr", 1e-4, 1e-2)
    oracle = kt.oracles.RandomSearchOracle(
        objective="val_accuracy", max_trials=10, hyperparameters=hp, seed=1
    )
    oracle._set_project_dir(str(tmp_path), "p")
    strategy = _OutOfTime(allowed)
    tuner = SimpleNamespace(oracle=oracle, arch="baseline", ctx=SimpleNamespace(strategy=strategy))
    hand_out_within_budget(tuner)
    handed = [oracle.create_trial(f"tuner{i}") for i in range(allowed)]
    assert [t.status for t in handed] == ["RUNNING"] * allowed
    for t in handed:
        oracle.update_trial(t.trial_id, {"val_accuracy": 0.5})
        t.status = "COMPLETED"
        oracle.end_trial(t)
    stopped = oracle.create_trial("tuner9")
    assert stopped.status == "STOPPED"
    assert "tuner9" not in oracle.tuner_ids, "a stopped worker is let go, so the chief can end"
    assert oracle.create_trial("tuner8").status == "STOPPED"
    assert tuner.time_limited == "the share is used up"
    assert strategy.asked == allowed + 1, "once out of time, the check is not asked again"


def test_a_worker_ends_its_trial_at_the_batch_that_passes_the_deadline():
    import keras
    import numpy as np

    from catdog.search.tuner import StopAtDeadline

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    x = np.zeros((8, 2), "float32")
    seen = []
    count = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: seen.append(1))
    history = model.fit(
        x, x[:, :1], epochs=5, batch_size=2, verbose=0, callbacks=[StopAtDeadline(0.0, "t"), count]
    )
    assert len(history.history["loss"]) == 1 and len(seen) == 1, "one batch, then stopped"
    later = StopAtDeadline(time.time() + 3600, "t")
    history = model.fit(x, x[:, :1], epochs=3, verbose=0, callbacks=[later])
    assert len(history.history["loss"]) == 3
