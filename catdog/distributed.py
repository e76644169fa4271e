"""Run one sweep on this machine the way it runs across machines: an MLflow tracking server with
a database backend, a KerasTuner chief (serves the oracle) and N workers (run trials), each its
own process. KerasTuner's oracle hands out the trials; this module only starts the processes.

    catdog distributed experiments/quick.toml --data DIR --workers 2

Across machines, run the same pieces by hand (see the README): `mlflow server` on one host, then
`catdog sweep` with KERASTUNER_TUNER_ID=chief on one host and tuner0, tuner1, ... elsewhere, all
with the same KERASTUNER_ORACLE_IP/PORT and MLFLOW_TRACKING_URI.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

from catdog.log import get_logger

log = get_logger(__name__)


def wait_for_server(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"MLflow server at {url} did not come up within {timeout:.0f}s")


def start_tracking_server(host: str, port: int) -> subprocess.Popen:
    os.makedirs("mlruns/artifacts", exist_ok=True)
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
           "sqlite:///mlruns/mlflow.db", "--artifacts-destination", "mlruns/artifacts",
           "--host", host, "--port", str(port), "--workers", "1"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def launch(sweep_file: str | None = None, data: str | None = None, *, workers: int = 2,
           host: str = "127.0.0.1", oracle_port: int = 8000, tracking_port: int = 5001,
           fresh: bool = False) -> int:
    """Start a tracking server (unless MLFLOW_TRACKING_URI names one), a KerasTuner chief and
    WORKERS workers for one sweep; wait for them and return the first non-zero exit code."""
    server = None
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri.startswith("http"):
        uri = f"http://{host}:{tracking_port}"
        server = start_tracking_server(host, tracking_port)
        wait_for_server(uri)
        log.info("MLflow tracking server on %s (backend sqlite:///mlruns/mlflow.db)", uri)
    args = [sys.executable, "-m", "catdog", "sweep"]
    args += [sweep_file] if sweep_file else []
    args += ["--data", data] if data else []
    base = {**os.environ, "MLFLOW_TRACKING_URI": uri, "KERASTUNER_ORACLE_IP": host,
            "KERASTUNER_ORACLE_PORT": str(oracle_port)}
    procs = [subprocess.Popen(args + (["--fresh"] if fresh else []),
                              env={**base, "KERASTUNER_TUNER_ID": "chief"})]
    time.sleep(2)  # the chief creates the sweep's runs; workers wait for them anyway
    procs += [subprocess.Popen(args, env={**base, "KERASTUNER_TUNER_ID": f"tuner{i}"})
              for i in range(workers)]
    log.info("chief and %d worker(s) started: pids %s", workers, [p.pid for p in procs])

    def forward(signum, frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    try:
        codes = [p.wait() for p in procs]
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    failed = [c for c in codes if c]
    return failed[0] if failed else 0
