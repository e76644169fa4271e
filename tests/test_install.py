"""What a new machine meets before any training: `make install` at the locked versions (and the
`gpu` extra where nvidia-smi lists a GPU), the targets that need the `postgres` extra installing it,
`make sweep-distributed` with no arguments running a sweep that can be distributed on the HOST
given, sweep files that run anywhere, and `catdog distributed` starting its processes quietly.

The Makefile is read with `make -n -B` (print every command, run none); a GPU machine is played
by an `nvidia-smi` on PATH that lists one."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from click.testing import CliRunner

from catdog import distributed, runtime, sweepfile
from catdog.cli import main
from catdog.errors import CatdogError
from catdog.search import strategies

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "constraints.txt"

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


@pytest.fixture
def gpu_machine(tmp_path):
    """PATH with an nvidia-smi that lists one GPU."""
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA L4 (UUID: GPU-0)'\n")
    fake.chmod(0o755)
    return f"{tmp_path}{os.pathsep}{os.environ['PATH']}"


@pytest.fixture
def cpu_machine(tmp_path):
    """PATH without the folders that hold an nvidia-smi."""
    path = [d for d in os.environ["PATH"].split(os.pathsep)
            if not (Path(d) / "nvidia-smi").exists()]
    return os.pathsep.join(path)


def make_n(target: str, *args: str, path: str) -> list[str]:
    # Nothing of the make that runs the tests (its MAKEFLAGS carry EXP=... given to it) leaks in.
    env = {k: v for k, v in os.environ.items()
           if k not in ("EXP", "DIST_EXP", "DATA", "HOST", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    proc = subprocess.run(["make", "-n", "-B", target, *args], cwd=ROOT, capture_output=True,
                          text=True, env={**env, "PATH": path}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return re.sub(r"\\\n\s*", " ", proc.stdout).splitlines()  # one line a command


def _the(lines: list[str], needle: str) -> str:
    found = [line for line in lines if needle in line]
    assert found, f"no line with {needle!r} in:\n" + "\n".join(lines)
    return found[-1]


# ------------------------------------------------------------------------------------ installs
def test_install_uses_the_lock(cpu_machine):
    line = _the(make_n("install", path=cpu_machine), "pip install")
    assert "-c constraints.txt" in line and '-e ".[dev]"' in line


def test_a_gpu_machine_installs_the_gpu_extra_and_sweeps_gpu_toml(gpu_machine):
    assert '-e ".[dev,gpu]"' in _the(make_n("install", path=gpu_machine), "pip install")
    assert "catdog sweep experiments/gpu.toml" in _the(make_n("sweep", path=gpu_machine),
                                                         "catdog sweep")
    assert "catdog distributed experiments/gpu.toml" in _the(
        make_n("sweep-distributed", path=gpu_machine), "catdog distributed")


@pytest.mark.parametrize("target", ["sweep-distributed", "test-slow"])
def test_the_targets_that_need_postgresql_install_the_postgres_extra(target, cpu_machine):
    lines = make_n(target, path=cpu_machine)
    assert '-c constraints.txt -e ".[dev,postgres]"' in _the(lines, "postgres]")


def test_make_lock_upgrades_the_lock_with_uv_for_python_3_11_on_linux(cpu_machine):
    line = _the(make_n("lock", path=cpu_machine), "pip compile")
    for part in ("uv pip compile pyproject.toml --all-extras --upgrade", "--python-version 3.11",
                 "x86_64-manylinux", "-o constraints.txt"):
        assert part in line, part


def _pins() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            name, _, version = line.partition("==")
            assert version, f"not an exact pin: {line}"
            pins[re.sub(r"[-_.]+", "-", name.lower())] = version
    return pins


def test_the_lock_pins_every_dependency_and_every_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted += extra
    pins = _pins()
    for requirement in wanted:
        name = re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", requirement).group().lower())
        assert name in pins, f"{requirement} is not in constraints.txt: run `make lock`"
    assert "psycopg2-binary" not in " ".join(project["dependencies"]), "it is the postgres extra"
    assert "nvidia-cudnn-cu12" in pins, "the gpu extra's CUDA wheels are locked too"


def test_this_environment_has_the_locked_versions():
    """`make install` installed what the lock says (the versions the README's figures were
    measured with); pip, setuptools and wheel come with the venv and do not count."""
    wrong = []
    for name, version in _pins().items():
        if name in ("pip", "setuptools", "wheel"):
            continue
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # an extra this machine does not install
        if installed != version:
            wrong.append(f"{name} {installed} (locked: {version})")
    assert not wrong, "installed versions differ from constraints.txt (make install): " + \
        ", ".join(wrong)


def test_check_database_names_the_missing_postgres_driver(monkeypatch):
    real = distributed.importlib.util.find_spec
    monkeypatch.setattr(distributed.importlib.util, "find_spec",
                        lambda name, *a: None if name == "psycopg2" else real(name, *a))
    with pytest.raises(CatdogError) as err:
        distributed.check_database("postgresql://catdog:s3cret@127.0.0.1:1/mlflow")
    message = str(err.value)
    assert "postgresql://catdog:***@127.0.0.1:1/mlflow" in message and "s3cret" not in message
    assert "psycopg2, which is not installed" in message and '".[postgres]"' in message


# ------------------------------------------------------------------- the cluster and smoke paths
def test_sweep_distributed_runs_a_distributable_sweep_on_the_host_given(cpu_machine):
    line = _the(make_n("sweep-distributed", "HOST=0.0.0.0", path=cpu_machine),
                "catdog distributed")
    assert "catdog distributed experiments/cpu-compare.toml" in line and "--host 0.0.0.0" in line
    for name in ("cpu-compare.toml", "gpu.toml"):  # what the chief accepts, before any process
        strategies.validate(sweepfile.load(ROOT / "experiments" / name), "chief")


def test_exp_still_chooses_the_sweep_of_sweep_distributed(cpu_machine):
    line = _the(make_n("sweep-distributed", "EXP=experiments/quick.toml", path=cpu_machine),
                "catdog distributed")
    assert "catdog distributed experiments/quick.toml" in line


def test_the_smoke_run_takes_data_like_the_others(cpu_machine):
    line = _the(make_n("smoke", "DATA=/photos", path=cpu_machine), "catdog sweep")
    assert "catdog sweep experiments/quick.toml --data /photos" in line


def test_no_sweep_file_names_a_path_outside_the_repository():
    for path in sorted((ROOT / "experiments").glob("*.toml")):
        assert "../" not in path.read_text(), f"{path.name} names a path outside the repository"


def test_make_clean_keeps_data_and_mlruns(cpu_machine):
    removed = " ".join(line for line in make_n("clean", path=cpu_machine) if "rm " in line)
    assert "data" not in removed and "mlruns" not in removed, removed


# --------------------------------------------------------------------------- catdog distributed
def test_distributed_help_says_a_dead_worker_is_restarted_as_the_code_does():
    text = " ".join(CliRunner().invoke(main, ["distributed", "--help"]).output.split())
    times = {1: "once", 2: "twice", 3: "three times"}[distributed.MAX_RESTARTS]
    assert f"in any architecture, at most {times}" in text, text


def test_the_processes_of_a_distributed_sweep_start_quietly(tmp_path, monkeypatch):
    """The tracking server, the chief and the workers get TensorFlow's logging down to errors
    (catdog --verbose brings it back), as `runtime.start` does for every other command."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    monkeypatch.delenv("CATDOG_VERBOSE", raising=False)
    monkeypatch.delenv("TF_FORCE_GPU_ALLOW_GROWTH", raising=False)
    envs = []

    class Recorder:
        def __init__(self, cmd, **kwargs):
            envs.append(kwargs.get("env", os.environ))

    monkeypatch.setattr(distributed.subprocess, "Popen", Recorder)
    distributed.start_tracking_server("127.0.0.1", 1)

    class Sweep:
        def __init__(self, args, env, **kwargs):
            envs.append(env)

        def start(self, fresh):
            pass

        def run(self):
            return 0

        forward = None

    monkeypatch.setattr(distributed, "Sweep", Sweep)
    monkeypatch.setattr(distributed.signal, "signal", lambda *a: None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")  # a server: none started
    (tmp_path / "one.toml").write_text('archs = ["baseline"]\ntrials = 1\n')
    assert distributed.launch("one.toml") == 0
    assert [env.get("TF_CPP_MIN_LOG_LEVEL") for env in envs] == ["3", "3"]
    assert envs[1]["TF_FORCE_GPU_ALLOW_GROWTH"] == "true", "workers share a GPU"
    monkeypatch.setenv("CATDOG_VERBOSE", "1")
    assert runtime.quiet_env() == {}


def test_make_screenshots_takes_the_store_and_the_folder(cpu_machine):
    line = _the(make_n("screenshots", "SHOTS_STORE=sqlite:////tmp/s/mlflow.db", "SHOTS_OUT=/tmp/o",
                       path=cpu_machine), "docs/screenshots.py")
    assert "--store 'sqlite:////tmp/s/mlflow.db' --out /tmp/o" in line
    assert '-e ".[dev,docs]"' in _the(make_n("screenshots", path=cpu_machine), "docs]")
