"""Run one sweep on this machine the way it runs across machines: an MLflow tracking server with
a database backend, a KerasTuner chief (serves the oracle) and N workers (run trials), each its
own process. KerasTuner's oracle hands out the trials; this module starts the processes and
watches them.

    catdog distributed experiments/quick.toml --data DIR --workers 2
    catdog distributed ... --backend-store-uri postgresql://user@127.0.0.1:5432/mlflow

The server's database is the project's sqlite store unless --backend-store-uri names another
(MLflow recommends a database server when many processes write); artifacts always go to
mlruns/artifacts. The server, like the oracle, listens on 127.0.0.1 unless --host says otherwise.

A worker that dies (a crash, `kill -9`): KerasTuner 1.4's oracle has no heartbeat, so the trial
it was running stays assigned to its tuner id and the chief would wait for it forever. The
oracle hands that same trial back to a worker that asks with the same id, so the worker is
restarted under its id (at most MAX_RESTARTS times) and re-runs the trial; its interrupted
MLflow run is marked KILLED. A restarted worker skips the architectures whose runs the chief has
already finished (their oracles are closed) and joins the one being searched. A worker that
keeps dying stops the sweep with a message; running the same command again resumes it.

Across machines, run the same pieces by hand (see the README): `mlflow server` on one host, then
`catdog sweep` with KERASTUNER_TUNER_ID=chief on one host and tuner0, tuner1, ... elsewhere, all
with the same KERASTUNER_ORACLE_IP/PORT and MLFLOW_TRACKING_URI.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from catdog import runtime
from catdog.errors import CatdogError
from catdog.log import get_logger
from catdog.tracking.store import (
    DEFAULT_TRACKING_URI,
    answers,
    experiment_at,
    redacted,
    with_driver,
)

log = get_logger(__name__)

ARTIFACTS = "mlruns/artifacts"
SERVER_LOG = "mlruns/mlflow-server.log"  # the tracking server's own output, rewritten each time
DB_TIMEOUT = 5  # seconds to reach the tracking server's database before giving up
MAX_RESTARTS = 2  # per worker
GRACE_SECONDS = 60  # a worker still running this long after the chief finished is stopped
POLL_SECONDS = 1.0


# ------------------------------------------------------------------------- the tracking server
def check_database(uri: str, timeout: float = DB_TIMEOUT) -> None:
    """Connect once to the server's database, so an unreachable one fails now, in a sentence,
    rather than as a server that never answers."""
    if uri.startswith("sqlite:"):
        return  # created on first use
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    if urllib.parse.urlsplit(uri).netloc.count("@") > 1:  # not echoed: it holds a password
        raise CatdogError(
            "--backend-store-uri has more than one @ before its host; write an @ "
            "in a user name or password as %40"
        )
    try:
        url = sqlalchemy.engine.make_url(with_driver(uri))
    except sqlalchemy.exc.ArgumentError:  # not echoed: it may hold a password
        raise CatdogError(
            "--backend-store-uri is not a database URI such as "
            "postgresql://user@127.0.0.1:5432/mlflow"
        ) from None
    if url.get_driver_name() == "psycopg2" and importlib.util.find_spec("psycopg2") is None:
        raise CatdogError(
            f"the tracking database {redacted(uri)} needs PostgreSQL's driver, "
            "psycopg2, which is not installed: `make sweep-distributed` installs it "
            '(the postgres extra: pip install -c constraints.txt -e ".[postgres]")'
        )
    timed = url.get_backend_name() in ("postgresql", "mysql")
    try:
        engine = sqlalchemy.create_engine(
            url,
            poolclass=NullPool,
            connect_args=({"connect_timeout": int(timeout)} if timed else {}),
        )
        with engine.connect():
            pass
    except Exception as exc:  # the driver's own error, missing driver included
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        if url.password:
            reason = reason.replace(url.password, "***")
        raise CatdogError(
            f"cannot reach the tracking database {redacted(uri)} ({reason})"
        ) from None


def start_tracking_server(
    host: str, port: int, backend: str = DEFAULT_TRACKING_URI
) -> subprocess.Popen:
    os.makedirs(ARTIFACTS, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        backend,
        "--artifacts-destination",
        ARTIFACTS,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    with open(SERVER_LOG, "w") as out:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # MLflow 3's server also starts a job runner and four huey consumers, for its GenAI
            # jobs, which catdog never submits: five processes and a slower start, spared.
            env={
                **os.environ,
                **runtime.quiet_env(),
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            },
        )


def wait_for_server(url: str, server: subprocess.Popen | None = None, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server is not None and server.poll() is not None:
            raise CatdogError(
                f"the MLflow server for {url} exited with code {server.returncode} "
                f"before answering; its output is in {SERVER_LOG}"
            )
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise CatdogError(
        f"the MLflow server at {url} did not answer within {timeout:.0f}s; its "
        f"output is in {SERVER_LOG}"
    )


def wait_or_kill(proc: subprocess.Popen, timeout: float = 30) -> None:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        wait_or_kill(proc)


# --------------------------------------------------------------------------- the sweep's runs
def retire_runs_of(tracking_uri: str, tuner_id: str, since: float) -> int:
    """Mark the trial runs a dead worker left RUNNING (started by TUNER_ID since SINCE, a Unix
    time) as orphaned and KILLED, as a re-run of the trial would."""
    from catdog.tracking import queries, tags

    return queries.retire_everywhere(
        {tags.KIND: tags.KIND_TRIAL, tags.TUNER_ID: tuner_id}, since, tracking_uri
    )


# ---------------------------------------------------------------------------- the processes
def exit_code(returncode: int) -> int:
    """A process's exit code as a shell reports it: 128 + N when signal N ended it."""
    return 128 - returncode if returncode < 0 else returncode


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        return f"signal {signal.Signals(-returncode).name}"
    return f"exit code {returncode}"


class Sweep:
    """The chief and the workers of one distributed sweep, and what to do when one ends."""

    def __init__(
        self,
        args: list[str],
        env: dict[str, str],
        *,
        workers: int,
        host: str,
        oracle_port: int,
        max_restarts: int,
    ):
        self.args, self.env, self.host, self.oracle_port = args, env, host, oracle_port
        self.tuner_ids = [f"tuner{i}" for i in range(workers)]
        self.max_restarts = max_restarts
        self.restarts = dict.fromkeys(self.tuner_ids, 0)
        self.chief: subprocess.Popen | None = None
        self.workers: dict[str, subprocess.Popen] = {}
        self.started = time.time()
        self.stopping = False

    def start(self, chief_args: list[str]) -> None:
        self.chief = self._spawn("chief", chief_args)
        time.sleep(2)  # the chief plans and creates the sweep's runs; workers wait for them
        self.workers = {tuner_id: self._spawn(tuner_id) for tuner_id in self.tuner_ids}

    def _spawn(self, tuner_id: str, extra: list[str] = ()) -> subprocess.Popen:
        # No stdin: the processes share the terminal, and none of them may ask it anything.
        proc = subprocess.Popen(
            self.args + list(extra),
            stdin=subprocess.DEVNULL,
            env={**self.env, "KERASTUNER_TUNER_ID": tuner_id},
        )
        log.info(
            "%s started (pid %d)",
            tuner_id if tuner_id == "chief" else f"worker {tuner_id}",
            proc.pid,
        )
        return proc

    def processes(self) -> list[subprocess.Popen]:
        return [p for p in (self.chief, *self.workers.values()) if p is not None]

    def forward(self, signum, frame) -> None:
        self.stopping = True
        for p in self.processes():
            if p.poll() is None:
                p.send_signal(signum)

    def stop_all(self) -> None:
        """SIGTERM to every process (unless a signal was already forwarded), then wait."""
        if not self.stopping:
            self.forward(signal.SIGTERM, None)
        for p in self.processes():
            wait_or_kill(p)

    def run(self) -> int:
        """Watch the processes until the sweep ends; return its exit code."""
        while self.chief.poll() is None:
            for tuner_id, proc in list(self.workers.items()):
                if proc.poll() not in (None, 0) and not self.stopping:
                    code = self.worker_died(tuner_id, proc.returncode)
                    if code is not None:
                        return code
            time.sleep(POLL_SECONDS)
        if self.chief.returncode != 0 or self.stopping:
            self.stop_all()
            return exit_code(self.chief.returncode) or self.workers_code()
        self.let_workers_finish()
        return 0

    def let_workers_finish(self) -> None:
        """The chief has ended every trial: workers have only to exit; stop any that linger."""
        deadline = time.monotonic() + GRACE_SECONDS
        while time.monotonic() < deadline and any(p.poll() is None for p in self.workers.values()):
            time.sleep(POLL_SECONDS)
        running = [t for t, p in self.workers.items() if p.poll() is None]
        if running:
            log.warning(
                "worker(s) %s still running %ds after the chief finished the sweep; stopping them",
                ", ".join(running),
                GRACE_SECONDS,
            )
            self.stop_all()
        for tuner_id, proc in self.workers.items():
            if proc.returncode and tuner_id not in running:
                log.warning(
                    "worker %s ended with %s after the chief finished the sweep",
                    tuner_id,
                    describe_exit(proc.returncode),
                )

    def workers_code(self) -> int:
        codes = [exit_code(p.returncode) for p in self.workers.values() if p.returncode]
        return codes[0] if codes else 0

    def retire_runs_of(self, tuner_id: str) -> None:
        uri = self.env["MLFLOW_TRACKING_URI"]
        if not answers(uri):  # a re-run of the trial, on resume, retires them
            log.warning(
                "the tracking server %s does not answer: the runs worker %s left "
                "RUNNING stay so until its trial is re-run",
                redacted(uri),
                tuner_id,
            )
            return
        n = retire_runs_of(uri, tuner_id, self.started)
        if n:
            log.info("marked %d run(s) worker %s left RUNNING as KILLED", n, tuner_id)

    def worker_died(self, tuner_id: str, returncode: int) -> int | None:
        """Restart a dead worker under its id, or stop the sweep; None if it goes on."""
        how = describe_exit(returncode)
        self.retire_runs_of(tuner_id)
        if self.restarts[tuner_id] < self.max_restarts:
            self.restarts[tuner_id] += 1
            log.warning(
                "worker %s ended with %s; restarting it (%d of at most %d) to re-run its trial",
                tuner_id,
                how,
                self.restarts[tuner_id],
                self.max_restarts,
            )
            self.workers[tuner_id] = self._spawn(tuner_id)
            return None
        why = f"it was restarted {self.max_restarts} time(s) already"
        log.error(
            "worker %s ended with %s and is not restarted (%s): KerasTuner keeps its trial "
            "assigned to it, so the chief would wait forever; stopping the sweep, run the "
            "same command again to resume it",
            tuner_id,
            how,
            why,
        )
        self.stop_all()
        return exit_code(returncode)


def launch(
    sweep_file: str | None = None,
    data: str | None = None,
    *,
    workers: int = 2,
    host: str = "127.0.0.1",
    oracle_port: int = 8000,
    tracking_port: int = 5001,
    backend_store_uri: str | None = None,
    fresh: bool = False,
    register: bool = False,
    name: str | None = None,
    max_restarts: int = MAX_RESTARTS,
) -> int:
    """Start a tracking server (unless MLFLOW_TRACKING_URI names one) on BACKEND_STORE_URI, a
    KerasTuner chief and WORKERS workers for one sweep; restart a worker that dies while its
    trial can still be re-run; return the sweep's exit code. The data is prepared here, once,
    before any of them starts. The chief plans the sweep to its file's budget, stops handing
    out trials when it is used, runs the final fit and, with REGISTER, registers the champion
    (under NAME, default the dataset's) in the server's store."""
    from catdog import sweepfile
    from catdog.data import resolve_data, resolve_name
    from catdog.search import strategies

    runtime.start()  # loading the sweep file imports Keras: quietly, as in the processes below
    cfg = sweepfile.load(sweep_file, data=data)
    strategies.validate(cfg, "chief")  # before any process
    runtime.require_gpu(cfg.device, cfg.name)
    server, backend = None, None
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if uri.startswith("http"):
        if backend_store_uri:
            raise CatdogError(
                f"--backend-store-uri is for the tracking server catdog starts, "
                f"and MLFLOW_TRACKING_URI already names one ({uri})"
            )
    else:
        backend = backend_store_uri or DEFAULT_TRACKING_URI
        check_database(backend)
        uri = f"http://{host}:{tracking_port}"
    # After the store's check, which takes seconds; before any process, so it is done once.
    data_root = resolve_data(cfg.data)
    experiment = cfg.experiment or resolve_name(None, data_root)
    if backend is not None:
        server = start_tracking_server(host, tracking_port, with_driver(backend))
    try:
        if server is not None:
            wait_for_server(uri, server)
            log.info(
                "MLflow tracking server on %s (backend %s, artifacts in %s)",
                uri,
                redacted(backend),
                ARTIFACTS,
            )
            # Its artifacts in mlruns/artifacts, as the project's store keeps them, so `report`,
            # `register` and `make ui` read them with the server stopped too; a server left
            # to decide would answer mlflow-artifacts:/ URIs that work only through it.
            experiment_at(uri, experiment, Path(ARTIFACTS).resolve().as_uri())
        args = [sys.executable, "-m", "catdog", "sweep"]
        args += [sweep_file] if sweep_file else []
        args += ["--data", str(data_root)]
        # Processes that share a GPU each take what they need, not all of its memory at once.
        env = {
            "TF_FORCE_GPU_ALLOW_GROWTH": "true",
            **os.environ,
            **runtime.quiet_env(),
            "MLFLOW_TRACKING_URI": uri,
            "KERASTUNER_ORACLE_IP": host,
            "KERASTUNER_ORACLE_PORT": str(oracle_port),
        }
        sweep = Sweep(
            args,
            env,
            workers=workers,
            host=host,
            oracle_port=oracle_port,
            max_restarts=max_restarts,
        )
        signal.signal(signal.SIGINT, sweep.forward)
        signal.signal(signal.SIGTERM, sweep.forward)
        chief_args = ["--fresh"] if fresh else []
        chief_args += ["--register"] if register else []
        chief_args += ["--name", name] if name else []
        sweep.start(chief_args)
        return sweep.run()
    finally:
        if server is not None:
            stop(server)
