"""A distributed sweep whose tracking server writes to PostgreSQL: a throwaway cluster (Debian's
initdb/pg_ctl) on 127.0.0.1, `catdog distributed --backend-store-uri postgresql://...`, then every
run counted straight from the database. And an unreachable database fails fast, in a sentence."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from click.testing import CliRunner

from catdog.cli import main
from tests.procs import free_port

ARCHS = ("baseline", "bn_dropout")
TRIALS = 3


def _postgres_bin() -> Path | None:
    """The newest Debian PostgreSQL's bin folder, else wherever initdb is on PATH."""
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if found:
        newest = max(
            found, key=lambda p: [int(x) for x in Path(p).parts[-3].split(".") if x.isdigit()]
        )
        return Path(newest).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _as_owner(cmd: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: as root, run them as the postgres user."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 with an empty database; its URI."""
    psycopg2 = pytest.importorskip(
        "psycopg2",
        reason="psycopg2 is not installed: it is catdog's `postgres` extra, which "
        '`make test-slow` installs (pip install -c constraints.txt -e ".[postgres]")',
    )

    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL's initdb is not installed (Debian: apt-get install postgresql)")
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no postgres user to own the cluster")
    # Not under pytest's tmp_path: as root that is private to root, and the cluster is not.
    root = Path(tempfile.mkdtemp(prefix="catdog-pg-"))
    if os.geteuid() == 0:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    data, port = root / "data", free_port()
    run = dict(check=True, capture_output=True, text=True, timeout=120)
    try:
        subprocess.run(
            _as_owner(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ]
            ),
            **run,
        )
        subprocess.run(
            _as_owner(
                [
                    str(bindir / "pg_ctl"),
                    "-D",
                    str(data),
                    "-l",
                    str(root / "server.log"),
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    f"-h 127.0.0.1 -p {port} -k {root} -F",
                    "start",
                ]
            ),
            **run,
        )
        admin = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute("CREATE DATABASE mlflow")
        admin.close()
        yield f"postgresql://postgres@127.0.0.1:{port}/mlflow"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(
                _as_owner([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.heavy
def test_distributed_sweep_writes_every_run_to_postgres(postgres, tiny_prepared, workdir):
    (workdir / "exp.toml").write_text(
        'archs = ["baseline", "bn_dropout"]\ntuner = "random"\n'
        "trials = 3\nepochs = 2\nimage_size = 32\nbatch_size = 8\n"
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("MLFLOW_TRACKING_URI", None)
    t0 = time.monotonic()
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
            str(free_port()),
            "--oracle-port",
            str(free_port()),
            "--backend-store-uri",
            postgres,
        ],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    seconds = time.monotonic() - t0
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert not (workdir / "mlruns" / "mlflow.db").exists(), "nothing went to the sqlite store"
    assert any((workdir / "mlruns" / "artifacts").rglob("*.png")), "artifacts in mlruns/artifacts"

    client = mlflow.MlflowClient(postgres.replace("postgresql://", "postgresql+psycopg2://"))
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, max_results=1000)
    trials = [r for r in runs if r.data.tags.get("catdog.kind") == "trial"]
    finished = Counter(
        (r.data.tags["catdog.arch"], r.data.tags["catdog.trial_id"])
        for r in trials
        if r.info.status == "FINISHED"
    )
    statuses = Counter(r.info.status for r in runs)
    per_arch = Counter(arch for arch, _ in finished.elements())
    print(
        f"\npostgres: {len(runs)} runs written ({len(trials)} trial runs, FINISHED per arch "
        f"{dict(per_arch)}; statuses {dict(statuses)}) by a sweep of {seconds:.0f}s"
    )
    assert statuses["RUNNING"] == 0, "no run left RUNNING"
    assert finished == {(a, str(t)): 1 for a in ARCHS for t in range(TRIALS)}, (
        "every trial has exactly one FINISHED run"
    )
    finals = [r for r in runs if r.data.tags.get("catdog.kind") == "final"]
    assert len(finals) == 1, "the chief's final fit of the winner"
    assert len(runs) == 1 + len(ARCHS) + len(trials) + 1, (
        "one sweep run, one run per architecture, the trials and the final fit"
    )


def test_unreachable_database_fails_fast_naming_it_without_the_password(workdir):
    uri = f"postgresql://catdog:s3cret@127.0.0.1:{free_port()}/mlflow"  # nothing listens there
    t0 = time.monotonic()
    result = CliRunner().invoke(main, ["distributed", "--backend-store-uri", uri])
    seconds = time.monotonic() - t0
    assert result.exit_code == 2, result.output
    message = result.output.strip()
    assert len(message.splitlines()) == 1 and message.startswith("error: "), message
    assert f"postgresql://catdog:***@127.0.0.1:{uri.rsplit(':', 1)[1]}" in message
    assert "s3cret" not in message
    assert seconds < 15, f"took {seconds:.1f}s"
    assert not (workdir / "mlruns").exists(), "no tracking server was started"


@pytest.mark.parametrize(
    "uri",
    [
        "postgresql//catdog:s3cret@127.0.0.1/mlflow",
        "postgresql://catdog:s3@cret@127.0.0.1:1/mlflow",
    ],
)
def test_a_malformed_database_uri_is_refused_without_echoing_it(uri, workdir):
    result = CliRunner().invoke(main, ["distributed", "--backend-store-uri", uri])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: --backend-store-uri "), result.output
    assert "cret" not in result.output


@pytest.mark.slow
def test_make_sweep_distributed_on_postgres_keeps_its_budget_and_registers(
    postgres, tiny_prepared, tmp_path
):
    from tests.distributed_journey import check_the_store, sweep_distributed

    project, seconds = sweep_distributed(tmp_path, tiny_prepared, backend=postgres)
    assert not (project / "mlruns" / "mlflow.db").exists(), "nothing went to the sqlite store"
    check_the_store(project, postgres, seconds)
