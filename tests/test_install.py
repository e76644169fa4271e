"""What a new machine meets before any training: a Python make checks before creating `.venv`,
`make install` at the locked versions (and the `gpu` extra where nvidia-smi lists a GPU), one
lock for Linux x86_64 and aarch64 and macOS arm64, the targets that need the `postgres` extra
installing it, `make sweep-distributed` with no arguments running a sweep that can be distributed
on the HOST given, sweep files that run anywhere, and `catdog distributed` starting its processes
quietly.

The Makefile is read with `make -n -B` (print every command, run none); a GPU machine is played
by an `nvidia-smi` on PATH that lists one. make's check of the Python it creates `.venv` with runs
for real, in a temporary copy of the Makefile, with stand-in Pythons."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from click.testing import CliRunner
from packaging.markers import Marker
from packaging.requirements import Requirement

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
    path = [
        d for d in os.environ["PATH"].split(os.pathsep) if not (Path(d) / "nvidia-smi").exists()
    ]
    return os.pathsep.join(path)


def _make_env(path: str) -> dict[str, str]:
    # Nothing of the make that runs the tests (its MAKEFLAGS carry EXP=... given to it) leaks in.
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in ("EXP", "DIST_EXP", "DATA", "HOST", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "PYTHON")
    }
    return {**env, "PATH": path}


def make_n(target: str, *args: str, path: str) -> list[str]:
    proc = subprocess.run(
        ["make", "-n", "-B", target, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=_make_env(path),
        timeout=60,
    )
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
    assert "catdog sweep experiments/gpu.toml" in _the(
        make_n("sweep", path=gpu_machine), "catdog sweep"
    )
    assert "catdog distributed experiments/gpu.toml" in _the(
        make_n("sweep-distributed", path=gpu_machine), "catdog distributed"
    )


@pytest.mark.parametrize("target", ["sweep-distributed", "test-slow"])
def test_the_targets_that_need_postgresql_install_the_postgres_extra(target, cpu_machine):
    lines = make_n(target, path=cpu_machine)
    assert '-c constraints.txt -e ".[dev,postgres]"' in _the(lines, "postgres]")


def test_make_lock_upgrades_one_lock_with_uv_for_python_3_11_on_three_platforms(cpu_machine):
    lines = make_n("lock", path=cpu_machine)
    line = _the(lines, "--universal")
    for part in (
        "uv pip compile pyproject.toml --all-extras --universal --upgrade",
        "--python-version 3.11",
        "-o constraints.txt",
    ):
        assert part in line, part
    check = _the(lines, "--no-build")  # each platform resolves the locked versions from wheels
    for part in (
        "x86_64-manylinux_2_28 aarch64-manylinux_2_28 aarch64-apple-darwin",
        "--python-platform $platform -c constraints.txt",
        "--python-version 3.11",
    ):
        assert part in check, part


# The machines the lock is for: what their Python reports to an environment marker.
PLATFORMS = {
    "linux-x86_64": {
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
    },
    "linux-aarch64": {
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "aarch64",
    },
    "macos-arm64": {
        "sys_platform": "darwin",
        "platform_system": "Darwin",
        "platform_machine": "arm64",
    },
}
CPYTHON_3_11 = {
    "python_version": "3.11",
    "python_full_version": "3.11.9",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name.lower())


def _locked() -> list[tuple[str, str, Marker | None]]:
    """(name, version, marker) for each pin in the lock."""
    found = []
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            req = Requirement(line)
            pinned = [s.version for s in req.specifier if s.operator == "=="]
            assert len(pinned) == 1 and len(req.specifier) == 1, f"not an exact pin: {line}"
            found.append((_norm(req.name), pinned[0], req.marker))
    return found


def _pins(environment: dict[str, str] | None = None) -> dict[str, str]:
    """The pins that apply to ENVIRONMENT (a marker environment; None: this machine's)."""
    pins = {}
    for name, version, marker in _locked():
        if marker is None or marker.evaluate(environment):
            assert name not in pins, f"{name} is pinned twice for {environment or 'this machine'}"
            pins[name] = version
    return pins


def _wanted() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted += extra
    return [Requirement(r) for r in wanted]


def test_the_lock_pins_every_dependency_and_every_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = _pins({**CPYTHON_3_11, **PLATFORMS["linux-x86_64"]})
    for requirement in _wanted():
        assert _norm(requirement.name) in pins, (
            f"{requirement} is not in constraints.txt: run `make lock`"
        )
    assert "psycopg2-binary" not in " ".join(project["dependencies"]), "it is the postgres extra"
    assert "nvidia-cudnn-cu12" in pins, "the gpu extra's CUDA wheels are locked too"


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_the_lock_pins_the_same_versions_on_each_platform(platform):
    """One lock, three machines: each gets every dependency its Python asks for, at one version,
    the same versions as Linux x86_64 (where the figures were measured); CUDA only on Linux."""
    environment = {**CPYTHON_3_11, **PLATFORMS[platform]}
    pins = _pins(environment)
    for requirement in _wanted():
        if requirement.marker is None or requirement.marker.evaluate(environment):
            assert _norm(requirement.name) in pins, f"{requirement} is not locked for {platform}"
    reference = _pins({**CPYTHON_3_11, **PLATFORMS["linux-x86_64"]})
    differ = {n: (v, reference[n]) for n, v in pins.items() if n in reference and reference[n] != v}
    assert not differ, f"{platform} pins other versions than Linux x86_64: {differ}"
    cuda = sorted(n for n in pins if n.startswith("nvidia-"))
    assert bool(cuda) == (environment["sys_platform"] == "linux"), cuda
    assert "tensorflow" in pins and "keras" in pins


@pytest.mark.parametrize(
    "platform", ["x86_64-manylinux_2_28", "aarch64-manylinux_2_28", "aarch64-apple-darwin"]
)
def test_each_platform_has_a_wheel_of_every_locked_version(platform, tmp_path):
    """What `make lock` checks, again from uv's cache (no network): every locked version has a
    wheel for the platform (`--no-build`)."""
    uv = Path(sys.executable).with_name("uv")
    if not uv.exists():
        pytest.skip("uv is not installed in this environment (`make lock` installs it)")
    proc = subprocess.run(
        [
            str(uv),
            "pip",
            "compile",
            "pyproject.toml",
            "--all-extras",
            "--python-version",
            "3.11",
            "--python-platform",
            platform,
            "--no-build",
            "-c",
            str(LOCK),
            "--offline",
            "--quiet",
            "-o",
            str(tmp_path / "resolved.txt"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode and "network was disabled" in proc.stderr:
        pytest.skip("uv's cache lacks what the lock needs (run `make lock LOCK_OPTS=` online)")
    assert proc.returncode == 0, proc.stderr
    resolved = {
        _norm(line.partition("==")[0]): line.partition("==")[2].split()[0]
        for line in (tmp_path / "resolved.txt").read_text().splitlines()
        if "==" in line and not line.startswith((" ", "#"))
    }
    assert resolved == {
        n: v
        for n, v in _pins(
            {
                **CPYTHON_3_11,
                **PLATFORMS[
                    {
                        "x86_64-manylinux_2_28": "linux-x86_64",
                        "aarch64-manylinux_2_28": "linux-aarch64",
                        "aarch64-apple-darwin": "macos-arm64",
                    }[platform]
                ],
            }
        ).items()
        if n in resolved
    }
    assert "tensorflow" in resolved


def test_this_environment_has_the_locked_versions():
    """`make install` installed what the lock says (the versions the README's figures were
    measured with), of the pins whose markers apply here; pip, setuptools and wheel come with the
    venv and do not count."""
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
    assert not wrong, "installed versions differ from constraints.txt (make install): " + ", ".join(
        wrong
    )


def test_check_database_names_the_missing_postgres_driver(monkeypatch):
    real = distributed.importlib.util.find_spec
    monkeypatch.setattr(
        distributed.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "psycopg2" else real(name, *a),
    )
    with pytest.raises(CatdogError) as err:
        distributed.check_database("postgresql://catdog:s3cret@127.0.0.1:1/mlflow")
    message = str(err.value)
    assert "postgresql://catdog:***@127.0.0.1:1/mlflow" in message and "s3cret" not in message
    assert "psycopg2, which is not installed" in message and '".[postgres]"' in message


# --------------------------------------------------------------- the Python make creates .venv with
@pytest.fixture
def project(tmp_path):
    """A copy of what `make install` reads before it installs anything, in a temporary folder."""
    root = tmp_path / "project"
    for name in ("Makefile", "pyproject.toml", "constraints.txt", "scripts/bootstrap-venv"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, root / name)
    return root


def _fake_python(folder: Path, name: str, body: str) -> Path:
    script = folder / name
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return script


def _make_install(root: Path, python: str, path: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "install", f"PYTHON={python}"],
        cwd=root,
        capture_output=True,
        text=True,
        env=_make_env(path),
        timeout=120,
    )


def _sentence(proc: subprocess.CompletedProcess) -> str:
    """The bootstrap's own line: make's "*** [...] Error 1" after it is make's."""
    ours = [line for line in proc.stderr.splitlines() if not line.startswith("make: ***")]
    assert len(ours) == 1, proc.stderr
    assert ours[0].startswith("make: ") and ours[0].endswith(".") and ours[0].count(". ") == 0
    return ours[0]


def test_a_python_3_13_is_refused_before_any_venv_naming_the_versions_to_use(project, cpu_machine):
    python = _fake_python(project, "python3.13", "echo 3.13")
    proc = _make_install(project, str(python), cpu_machine)
    assert proc.returncode != 0
    sentence = _sentence(proc)
    assert f"{python} is Python 3.13, and catdog needs Python 3.11 or 3.12" in sentence
    assert "PYTHON=python3.12" in sentence
    assert not (project / ".venv").exists()


def test_a_python_without_venvs_pip_says_to_install_python3_venv_and_leaves_no_venv(
    project, cpu_machine
):
    """Debian's and Ubuntu's python3 without python3-venv: `-m venv` creates .venv/bin/python,
    then fails in ensurepip; every later make would die with "No module named pip"."""
    python = _fake_python(
        project,
        "debian-python3",
        f"""
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
    "{sys.executable}" -m venv --without-pip "$3"
    echo "The virtual environment was not created successfully because ensurepip is not" >&2
    exit 1
fi
exec "{sys.executable}" "$@"
""",
    )
    proc = _make_install(project, str(python), cpu_machine)
    assert proc.returncode != 0
    sentence = _sentence(proc)
    assert "cannot create a virtual environment with pip" in sentence
    assert "apt install python3-venv" in sentence and "PYTHON=python3.12" in sentence
    assert not (project / ".venv").exists()
    # A .venv such a python left behind before (python, no pip) is removed, not reused.
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(project / ".venv")], check=True
    )
    proc = _make_install(project, str(python), cpu_machine)
    assert proc.returncode != 0 and ".venv cannot be used (it has no pip)" in proc.stderr
    assert not (project / ".venv").exists()


def test_a_missing_python_is_one_sentence(project, cpu_machine):
    proc = _make_install(project, "python3.99-nowhere", cpu_machine)
    assert proc.returncode != 0
    assert _sentence(proc) == (
        "make: python3.99-nowhere was not found: install Python 3.11 or 3.12 and name it with "
        "PYTHON= (make install PYTHON=python3.12)."
    )


def test_a_venv_without_pip_is_repaired_and_a_working_one_kept(project):
    """The real thing with this Python: a .venv with no pip is created again, with pip."""
    venv = project / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    bootstrap = ["sh", "scripts/bootstrap-venv", sys.executable, ".venv"]
    proc = subprocess.run(bootstrap, cwd=project, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (
        subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "--version"], capture_output=True
        ).returncode
        == 0
    )
    marker = venv / "kept"
    marker.write_text("")
    proc = subprocess.run(bootstrap, cwd=project, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == "" and marker.exists()


def test_the_install_bootstraps_the_venv_through_the_check(cpu_machine):
    lines = make_n("install", "PYTHON=python3.12", path=cpu_machine)
    assert "sh scripts/bootstrap-venv 'python3.12' .venv" in lines
    assert lines.index("sh scripts/bootstrap-venv 'python3.12' .venv") < lines.index(
        _the(lines, "pip install")
    )


# ------------------------------------------------------------------- the cluster and smoke paths
def test_sweep_distributed_runs_a_distributable_sweep_on_the_host_given(cpu_machine):
    line = _the(make_n("sweep-distributed", "HOST=0.0.0.0", path=cpu_machine), "catdog distributed")
    assert "catdog distributed experiments/cpu-compare.toml" in line and "--host 0.0.0.0" in line
    for name in ("cpu-compare.toml", "gpu.toml"):  # what the chief accepts, before any process
        strategies.validate(sweepfile.load(ROOT / "experiments" / name), "chief")


def test_exp_still_chooses_the_sweep_of_sweep_distributed(cpu_machine):
    line = _the(
        make_n("sweep-distributed", "EXP=experiments/quick.toml", path=cpu_machine),
        "catdog distributed",
    )
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


def test_the_processes_of_a_distributed_sweep_start_quietly(tmp_path, monkeypatch, tiny_prepared):
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

        def start(self, chief_args):
            pass

        def run(self):
            return 0

        forward = None

    monkeypatch.setattr(distributed, "Sweep", Sweep)
    monkeypatch.setattr(distributed.signal, "signal", lambda *a: None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")  # a server: none started
    (tmp_path / "one.toml").write_text('archs = ["baseline"]\ntrials = 1\n')
    assert distributed.launch("one.toml", str(tiny_prepared)) == 0
    assert [env.get("TF_CPP_MIN_LOG_LEVEL") for env in envs] == ["3", "3"]
    assert envs[1]["TF_FORCE_GPU_ALLOW_GROWTH"] == "true", "workers share a GPU"
    monkeypatch.setenv("CATDOG_VERBOSE", "1")
    assert runtime.quiet_env() == {}


def test_make_screenshots_takes_the_store_and_the_folder(cpu_machine):
    line = _the(
        make_n(
            "screenshots",
            "SHOTS_STORE=sqlite:////tmp/s/mlflow.db",
            "SHOTS_OUT=/tmp/o",
            path=cpu_machine,
        ),
        "docs/screenshots.py",
    )
    assert "--store 'sqlite:////tmp/s/mlflow.db' --out /tmp/o" in line
    assert '-e ".[dev,docs]"' in _the(make_n("screenshots", path=cpu_machine), "docs]")
