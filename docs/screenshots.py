"""Take the pictures the docs show, from a finished sweep, for real.

    make screenshots [SHOTS_STORE=URI] [SHOTS_OUT=docs]   # default: the project's store
    python docs/screenshots.py --store sqlite:////abs/path/mlruns/mlflow.db --out docs
                               [--sweep RUN_ID] [--project DIR]

It starts `mlflow ui` on the store, in the folder the sweep ran in (the one holding the store's
mlruns/, or the current one: runs name their data by relative paths), opens it in headless
Chromium (Debian's `chromium`, driven by Playwright's Python client, the `docs` extra: no browser
is downloaded) and writes three 1280x800 PNGs:

    mlflow-runs.png        the experiment's runs with the sweep's tree expanded: the sweep, one
                           run per architecture, and each architecture's trials
    mlflow-comparison.png  the sweep run's comparison.png artifact, as the MLflow UI shows it
    report.png             the top of `catdog report`'s HTML page for the sweep

Each is reduced to a 256-colour palette with Pillow, which keeps it well under 250 KB.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SIZE = {"width": 1280, "height": 800}
RUN_COLUMNS = [
    "metrics.`best_val_accuracy`",
    "metrics.`test_accuracy`",
    "tags.`catdog.arch`",
    "metrics.`trials`",
    "metrics.`best_epoch`",
]
WIDEN = {"attributes.`Run Name`": 60, "metrics.`best_val_accuracy`": 60}  # px, so names show
QUIET = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--store",
        default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlruns/mlflow.db"),
        help="tracking URI of the store that holds the sweep (default: the project's)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent,
        help="folder for the PNGs (default: docs/)",
    )
    p.add_argument("--experiment", default="catdog")
    p.add_argument("--sweep", default=None, help="the sweep's parent run id (default: latest)")
    p.add_argument("--chromium", default=CHROMIUM, help=f"browser binary (default: {CHROMIUM})")
    p.add_argument(
        "--project",
        type=Path,
        default=None,
        help="the folder the sweep ran in, where its data/ is (default: the folder "
        "holding the store's mlruns/, else the current one)",
    )
    args = p.parse_args(argv)
    if not Path(args.chromium).exists():
        sys.exit(f"no Chromium at {args.chromium}: apt-get install chromium, or pass --chromium")
    args.out = args.out.resolve()
    os.chdir(args.project or project_of(args.store))  # relative paths in runs and the store
    exp_id, sweep, runs = find_sweep(args.store, args.experiment, args.sweep)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="catdog-shots-") as tmp:
        report = write_report(args.store, args.experiment, sweep, Path(tmp))
        with mlflow_ui(args.store) as url, browser(args.chromium) as context:
            shots = {
                "mlflow-runs.png": lambda page: runs_tree(page, url, exp_id, sweep, runs),
                "mlflow-comparison.png": lambda page: comparison(page, url, exp_id, sweep),
                "report.png": lambda page: page.goto(report.as_uri(), wait_until="load"),
            }
            for name, show in shots.items():
                page = context.new_page()
                show(page)
                page.wait_for_timeout(1500)  # fonts and charts settle
                save(page.screenshot(), args.out / name)
                page.close()
    return 0


# --------------------------------------------------------------------------------- the sweep
def project_of(store: str) -> Path:
    """The folder a sweep ran in: what holds mlruns/ for sqlite:////.../mlruns/mlflow.db, else
    the current folder (a relative store is read from it, as `make ui` does)."""
    if not store.startswith("sqlite:///"):
        return Path.cwd()
    db = Path(store.removeprefix("sqlite:///"))
    if not db.is_file():
        sys.exit(f"no store at {db.resolve()}: run a sweep first (make sweep), or pass --store")
    db = db.resolve()
    return db.parents[1] if db.parent.name == "mlruns" else Path.cwd()


def find_sweep(store: str, experiment: str, sweep: str | None) -> tuple[str, str, dict]:
    """(experiment id, the sweep's run id, {run id: run name} of the sweep and its children),
    read through catdog's door to MLflow."""
    from catdog.errors import CatdogError
    from catdog.tracking import queries

    os.environ["MLFLOW_TRACKING_URI"] = store
    try:
        parent = queries.find_sweep(sweep or "latest", experiment)
    except CatdogError as exc:
        sys.exit(str(exc))
    exp_id, sweep = parent.info.experiment_id, parent.info.run_id
    children = queries.search(exp_id, {"mlflow.parentRunId": sweep})
    return (
        exp_id,
        sweep,
        {sweep: parent.info.run_name} | {r.info.run_id: r.info.run_name for r in children},
    )


def write_report(store: str, experiment: str, sweep: str, folder: Path) -> Path:
    """`catdog report` for the sweep, as a user runs it; the path of its HTML file."""
    out = folder / "report.html"
    subprocess.run(
        [
            sys.executable,
            "-I",
            "-m",
            "catdog",
            "report",
            "--sweep",
            sweep,
            "--experiment",
            experiment,
            "--out",
            str(out),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        env={**os.environ, **QUIET, "MLFLOW_TRACKING_URI": store},
    )
    return out


# ------------------------------------------------------------------------- the UI and browser
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_ui(store: str, timeout: float = 180):
    """`mlflow ui` on STORE at a free port on 127.0.0.1, for as long as the block runs."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "ui",
            "--backend-store-uri",
            store,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, **QUIET},
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                log.seek(0)
                sys.exit(
                    f"mlflow ui exited with code {proc.returncode}:\n"
                    + log.read().decode(errors="replace")[-2000:]
                )
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    sys.exit(f"mlflow ui did not answer on {url} within {timeout:.0f}s")
                time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@contextlib.contextmanager
def browser(executable: str):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield chromium.new_context(viewport=SIZE, device_scale_factor=1)
        finally:
            chromium.close()


# ------------------------------------------------------------------------------- the pictures
# Local storage the MLflow UI (3.x) reads on load: the assistant panel stays shut.
UI_STORAGE = {
    "mlflow.assistant.panelOpen_v1": "false",
    "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true",
}


def _open(page, url: str, storage: dict[str, str]) -> None:
    """Go to URL with STORAGE in the page's local storage, then fold the side bar away."""
    items = json.dumps({**UI_STORAGE, **storage})
    page.add_init_script(
        f"(s => {{ for (const [k, v] of Object.entries(s)) localStorage.setItem(k, v); }})({items})"
    )
    page.goto(url)
    toggle = page.get_by_label("Toggle sidebar")
    toggle.wait_for(timeout=60_000)
    toggle.click()


def runs_tree(page, url: str, exp_id: str, sweep: str, runs: dict[str, str]) -> None:
    """The runs table in the "Model training" view, the sweep and its architecture runs
    expanded, with the columns that rank them."""
    state = {
        "runsExpanded": dict.fromkeys(runs, True),
        "autoRefreshEnabled": False,
        "selectedColumns": RUN_COLUMNS,
        "orderByKey": "attributes.start_time",
        "orderByAsc": False,
        "startTime": "ALL",
        "lifecycleFilter": "Active",
    }
    _open(
        page,
        f"{url}/#/experiments/{exp_id}/runs?workflowType=machine_learning",
        {
            f'MLflowLocalStorage-1.1-ExperimentPage-["{exp_id}"]-ReactComponentState': json.dumps(
                state
            ),
            f"MLflowLocalStorage-1.1-ExperimentView-{exp_id}-expandRows": "true",
        },
    )
    for name in runs.values():  # every row of the tree is drawn
        page.get_by_text(name, exact=True).first.wait_for(timeout=60_000)
    for column, px in WIDEN.items():  # drag the edge of its header: the UI keeps no width given
        edge = page.locator(f'.ag-header-cell[col-id="{column}"] .ag-header-cell-resize').first
        box = edge.bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        edge.hover()  # the grid arms its resize on hover; a press without it sorts instead
        page.mouse.down()
        page.mouse.move(x + px / 2, y, steps=10)
        page.mouse.move(x + px, y, steps=10)
        page.mouse.up()


def comparison(page, url: str, exp_id: str, sweep: str) -> None:
    """The sweep run's artifacts tab with comparison.png selected."""
    _open(
        page,
        f"{url}/#/experiments/{exp_id}/runs/{sweep}/artifacts?workflowType=machine_learning",
        {},
    )
    page.get_by_text("comparison.png", exact=True).first.click(timeout=60_000)
    image = page.get_by_role("img", name="comparison.png")
    image.wait_for(timeout=60_000)
    page.wait_for_function("i => i.complete && i.naturalWidth > 0", arg=image.element_handle())


def save(png: bytes, path: Path) -> None:
    """Write PNG as a 256-colour palette image: a UI screenshot loses nothing visible."""
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        path, optimize=True
    )
    print(f"{path} ({image.width}x{image.height}, {path.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    sys.exit(main())
