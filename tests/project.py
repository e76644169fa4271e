"""A copy of the project in a temporary folder, for tests that run `make` targets as the README
gives them: they write data/, mlruns/, .tuner/ and reports/ where they run, so they run there.

The tracked (and new, not ignored) files are copied with their times, and `.venv` is the
project's own, so make finds its install up to date and installs nothing. The editable install
imports catdog from the project itself: the same code. make must find its install up to date
(`.ci/run` and `make test-slow` install first).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAMP = ".installed-"  # the Makefile's install stamps: .venv/.installed-<extras>


def copy_project(dest: Path) -> Path:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    _borrow_venv(dest / ".venv")
    return dest


def _borrow_venv(venv: Path) -> None:
    """The project's .venv, entry by entry, with the copy's own install stamps, fresh: make
    must never install from the copy, which would point the editable install at it."""
    venv.mkdir()
    for entry in (ROOT / ".venv").iterdir():
        if not entry.name.startswith(STAMP):
            (venv / entry.name).symlink_to(entry)
    for extra in ("dev", "dev-gpu", "postgres", "docs"):
        (venv / f"{STAMP}{extra}").touch()


def make_env() -> dict[str, str]:
    """The environment a user's shell gives make: no tracking URI or KerasTuner role set."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    for var in (
        "MLFLOW_TRACKING_URI",
        "KERASTUNER_TUNER_ID",
        "KERASTUNER_ORACLE_IP",
        "KERASTUNER_ORACLE_PORT",
        "MAKEFLAGS",
        "MFLAGS",
        "MAKELEVEL",
    ):
        env.pop(var, None)
    return env


def run_make(project: Path, args: list[str], timeout: float, **env) -> subprocess.CompletedProcess:
    """`make ARGS` in PROJECT, in a process group of its own that is killed if it overruns."""
    proc = subprocess.Popen(
        ["make", *args],
        cwd=project,
        env={**make_env(), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # SIGTERM first: catdog stops what it started (a tracking server in its own session).
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        raise AssertionError(f"make {' '.join(args)} ran over {timeout:.0f}s:\n{out[-4000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")
