"""The README's journeys, run as it writes them: `make sweep DATA=...`, `.venv/bin/catdog ...`,
`make serve MODEL=...` and the docs' curl request, on tiny generated photos, so a README command
that stops working fails `make test-slow`.

They run in a copy of the project in a temporary folder (the files git knows, mtimes kept, and
`.venv` a link to this one's), since the commands write data/, mlruns/, .tuner/ and reports/
where they run. The copy is shared by the journeys, as a user's folder is: the second dataset is
swept into the store that already holds the first one's champion. The sweep is a tiny one
passed in the environment (`EXP=`, which the Makefile reads from there too), so every command
line is exactly the README's.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.imagegen import make_layout, write_jpeg
from tests.procs import free_port
from tests.project import copy_project, make_env
from tests.test_docs import split

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SERVE_DOC = REPO / "docs" / "results.md"

# make sweep's focus strategy as cpu.toml runs it (a screen, then the winner's long fit, which
# is what registers), shrunk: one architecture at 32 px, one 1-epoch screening trial, and
# without a budget a long fit of 8 screening trials' length.
JOURNEY_SWEEP = """\
archs = ["baseline"]
strategy = "focus"
tuner = "random"
trials = 1
epochs = 1
image_size = 32
image_sizes = [32]
batch_size = 8
"""

# "Your own images", as the README gives the three commands.
OWN_IMAGES = (
    "make sweep DATA=horses-zebras",
    "catdog predict --model models:/horses-zebras@champion photo.jpg",
    "make serve MODEL=horses-zebras",
)
OWN_CLASSES = ("donkeys", "horses", "zebras")


# ------------------------------------------------------------------------------- the project
class Project:
    """A copy of the project and the environment a user's shell gives its commands."""

    def __init__(self, root: Path, env: dict):
        self.root, self.env = root, env
        self.times: dict[str, float] = {}

    def run(self, command: str, timeout: float = 600, **env) -> str:
        """Run COMMAND in bash in the project, as typed; its stdout."""
        started = time.monotonic()
        proc = subprocess.run(
            command,
            shell=True,
            executable="/bin/bash",
            cwd=self.root,
            env={**self.env, **env},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        self.times[command] = time.monotonic() - started
        assert proc.returncode == 0, (
            f"`{command}` exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
        return proc.stdout

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=f"sqlite:///{self.root}/mlruns/mlflow.db")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    base = tmp_path_factory.mktemp("journeys")
    root = copy_project(base / "catdog")
    (base / "journey.toml").write_text(JOURNEY_SWEEP)
    env = make_env()
    # As `source .venv/bin/activate` does, for the README's bare `catdog` lines.
    env.update(
        PATH=f"{root / '.venv' / 'bin'}:{env.get('PATH', '')}",
        VIRTUAL_ENV=str(root / ".venv"),
        EXP=str(base / "journey.toml"),
    )
    project = Project(root, env)
    # The copy shares this project's .venv: make must not install into it from the copy (which
    # would point the editable install at a temporary folder), and the commands must run this
    # project's catdog.
    dry = project.run("make -n sweep report serve DATA=x")
    if "bootstrap-venv" in dry or "pip install" in dry:
        pytest.fail(f"make would install .venv again: run `make install` in {REPO} first\n{dry}")
    imported = project.run(".venv/bin/python -I -c 'import catdog; print(catdog.__file__)'")
    if Path(imported.strip()).parent != REPO / "catdog":
        pytest.fail(f".venv's editable install imports {imported.strip()}, not {REPO}: reinstall")
    write_jpeg(root / "photo.jpg", seed=9_000_001, size=(48, 36))
    yield project
    print("\nthe journeys' commands (seconds):")  # shown with -s, or -rA
    for command, seconds in project.times.items():
        print(f"{seconds:7.1f}  {command}")


@pytest.fixture(scope="module")
def catdog_sweep(project) -> str:
    """The quick start on a Dogs-vs-Cats-shaped folder (`train/cats/cat.1.jpg`, `test/...`):
    `make sweep DATA=...`, whose output is returned."""
    photos = make_layout(project.root.parent / "dogs-vs-cats-mini", "salader", 10, seed=11)
    return project.run(f"make sweep DATA={photos}")


def _champion(project: Project, name: str):
    return project.client().get_model_version_by_alias(name, "champion")


# ------------------------------------------------------------------------------- the journeys
def test_quick_start_registers_catdog_and_the_results_commands_read_it(project, catdog_sweep):
    assert "chosen with EXP=" in catdog_sweep, "make sweep names the sweep file it was given"
    champion = _champion(project, "catdog")
    assert int(champion.version) == 1

    compared = project.run(".venv/bin/catdog compare")
    assert "baseline" in compared and "top" in compared, compared

    project.run("make report")
    assert list((project.root / "reports").glob("*.html")), "make report writes reports/*.html"

    predicted = project.run(".venv/bin/catdog predict photo.jpg")
    line = next(li for li in predicted.splitlines() if li.startswith("photo.jpg\t"))
    assert line.split("\t")[1] in ("cat", "dog") and "p_cat=" in line and "p_dog=" in line, line


def test_your_own_images_sweep_predict_and_serve_beside_the_catdog_champion(project, catdog_sweep):
    readme = README.read_text()
    for command in OWN_IMAGES:
        assert command in readme, f"the README no longer says `{command}`: update this journey"
    before = _champion(project, "catdog")
    for c, name in enumerate(OWN_CLASSES):
        for split_name in ("train", "test"):
            for i in range(8 if split_name == "train" else 4):
                seed = 5_000_000 + 1000 * c + 100 * (split_name == "test") + i
                write_jpeg(project.root / "horses-zebras" / split_name / name / f"{i}.jpg", seed)

    swept, predict, serve = OWN_IMAGES
    project.run(swept)
    assert int(_champion(project, "horses-zebras").version) == 1
    after = _champion(project, "catdog")
    assert (after.version, after.run_id) == (before.version, before.run_id), (
        "the catdog champion is not replaced by another dataset's"
    )

    predicted = project.run(predict)
    line = next(li for li in predicted.splitlines() if li.startswith("photo.jpg\t"))
    assert line.split("\t")[1] in OWN_CLASSES, line
    assert sorted(re.findall(r"p_(\w+)=", line)) == sorted(OWN_CLASSES), line

    answer = _serve_and_ask(project, serve)
    assert answer["label"] in OWN_CLASSES and answer["error"] is None, answer
    probs = {k.removeprefix("p_"): v for k, v in answer.items() if k.startswith("p_")}
    assert sorted(probs) == sorted(OWN_CLASSES), answer
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-4), answer


# ------------------------------------------------------------------------------- serving


def _docs_request() -> str:
    """The curl request of docs/results.md's Serve section, as written."""
    _, fenced, _ = split(SERVE_DOC.read_text())
    found = [c for c in fenced if c.lstrip().startswith("curl") and "/invocations" in c]
    assert len(found) == 1, f"expected one curl request to /invocations in {SERVE_DOC}: {found}"
    assert "127.0.0.1:5002" in found[0], found[0]
    return found[0]


def _serve_and_ask(project: Project, command: str) -> dict:
    """Start COMMAND (make serve ...) on a free SERVE_PORT, wait for /health, send the docs'
    curl request for photo.jpg, and stop the server's whole process group, whatever happens."""
    port = free_port()
    log = project.root.parent / "serve.log"
    started = time.monotonic()
    with log.open("w") as out:
        server = subprocess.Popen(
            command,
            shell=True,
            executable="/bin/bash",
            cwd=project.root,
            env={**project.env, "SERVE_PORT": str(port)},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # make, mlflow and uvicorn's workers: one group to stop
        )
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                assert server.poll() is None, f"`{command}` ended:\n{log.read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"no /health:\n{log.read_text()[-3000:]}"
                time.sleep(1)
        request = _docs_request().replace("127.0.0.1:5002", f"127.0.0.1:{port}")
        answer = json.loads(project.run(request))
    finally:
        _stop(server)
        project.times[command] = time.monotonic() - started
    assert len(answer["predictions"]) == 1, answer
    return answer["predictions"][0]


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's whole process group, then SIGKILL to whatever is left of it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _group_alive(proc):
        time.sleep(0.5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def _group_alive(proc: subprocess.Popen) -> bool:
    proc.poll()  # reap make itself, or its zombie would keep the group alive
    try:
        os.killpg(proc.pid, 0)
    except ProcessLookupError:
        return False
    return True
