"""Distributed sweep: a real `mlflow server` on 127.0.0.1, a KerasTuner chief and two workers as
subprocesses. Every trial appears exactly once, under the right parent."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import mlflow
import pytest

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_chief_and_two_workers_share_one_sweep(tiny_prepared, workdir):
    (workdir / "exp.toml").write_text('archs = ["baseline", "bn_dropout"]\ntuner = "random"\n'
                                      'trials = 3\nepochs = 2\nimage_size = 32\nbatch_size = 8\n')
    tracking_port, oracle_port = _free_port(), _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run([sys.executable, "-m", "catdog", "distributed", "exp.toml", "--data",
                           str(tiny_prepared), "--workers", "2", "--tracking-port",
                           str(tracking_port), "--oracle-port", str(oracle_port)],
                          cwd=workdir, env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]

    mlflow.set_tracking_uri(f"sqlite:///{workdir}/mlruns/mlflow.db")
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert not [r for r in runs if r.info.status == "RUNNING"]
    kinds = {k: [r for r in runs if r.data.tags.get("catdog.kind") == k]
             for k in ("sweep", "arch", "trial")}
    assert len(kinds["sweep"]) == 1
    parent = kinds["sweep"][0].info.run_id
    arch_runs = {r.info.run_id: r.data.tags["catdog.arch"] for r in kinds["arch"]}
    assert sorted(arch_runs.values()) == ["baseline", "bn_dropout"]
    assert all(r.data.tags["mlflow.parentRunId"] == parent for r in kinds["arch"])
    seen = sorted((r.data.tags["catdog.arch"], r.data.tags["catdog.trial_id"])
                  for r in kinds["trial"])
    assert seen == sorted((a, str(t)) for a in ("baseline", "bn_dropout") for t in range(3)), \
        "every trial exactly once"
    for r in kinds["trial"]:
        assert arch_runs[r.data.tags["mlflow.parentRunId"]] == r.data.tags["catdog.arch"]
        assert r.data.tags["catdog.tuner_id"] in {"tuner0", "tuner1"}
    assert {r.data.tags["catdog.tuner_id"] for r in kinds["trial"]} == {"tuner0", "tuner1"}, \
        "both workers ran trials"
