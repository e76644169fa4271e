"""Smoke run of the benchmark (`python -m benchmarks --quick`) on the real photos."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.real_data
def test_quick_bench_writes_every_item(real_data, tmp_path):
    out = tmp_path / "results" / "bench.json"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("MLFLOW_TRACKING_URI", None)
    # cwd=REPO: the real photos are prepared once under the project's data/, as `make bench` does.
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--data",
                           str(real_data), "--out", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert json.loads((out.parent / "latest.json").read_text()) == res
    for item in ("ceiling", "pipeline", "training", "notebook", "sweep", "scaling",
                 "time_to_accuracy"):
        assert "error" not in res[item], res[item]
    acc = res["time_to_accuracy"]
    assert acc["notebook"]["epochs"] == 1 and 0 <= acc["notebook"]["target"] <= 1
    [cd] = acc["sweeps"]
    assert cd["exit_code"] is not None, "the sweep process ended (or was stopped)"
    if cd["ratio"] is not None:
        assert cd["reached"]["val_accuracy"] >= acc["notebook"]["target"]
        assert cd["ratio"] == pytest.approx(cd["seconds"] / acc["notebook"]["seconds"])
    assert len(res["sweep"]["trials"]) == 4
    assert {r["arch"] for r in res["training"]["rows"]} >= {"baseline", "bn_dropout", "vgg"}
    assert {t["result"] for t in res["targets"]} <= {"PASS", "MISS", "n/a"}
    assert "Targets" in proc.stdout and "1. Matmul ceiling" in proc.stdout


def test_missing_data_is_a_clear_error(tmp_path):
    # cwd=REPO: `benchmarks` is a top-level folder of the repository, not part of the package.
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--data",
                           str(tmp_path / "absent")], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert "no data at" in proc.stderr
