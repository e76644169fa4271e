"""The command line: resolve the data, run every item in a scratch directory, write the JSON
and print the table."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import benchmarks
from benchmarks.accuracy import time_to_accuracy
from benchmarks.measure import (
    ceiling,
    input_pipeline,
    scaling,
    sweep_costs,
    training,
)
from benchmarks.notebook import versus_notebook
from benchmarks.probes import _split_sizes, machine_info
from benchmarks.render import render
from benchmarks.serving import serving
from benchmarks.settings import FULL, QUICK, Settings
from benchmarks.targets import targets
from catdog import runtime
from catdog.log import get_logger, setup

log = get_logger(__name__)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "dogs-vs-cats-mini"
RESULTS_DIR = REPO / "benchmarks" / "results"


@contextlib.contextmanager
def scratch_workdir() -> Iterator[Path]:
    """A temporary working directory and MLflow store, so the bench never touches the user's."""
    work = Path(tempfile.mkdtemp(prefix="catdog-bench-"))
    env = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "CATDOG_CACHE_DIR": str(work / "cache"),
    }
    dropped = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")
    saved = {k: os.environ.get(k) for k in (*env, *dropped)}
    cwd = os.getcwd()
    os.environ.update(env)
    for k in dropped:
        os.environ.pop(k, None)
    os.chdir(work)
    try:
        yield work
    finally:
        os.chdir(cwd)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(work, ignore_errors=True)


def quick_subset(root: Path, work: Path, per_class: int) -> Path:
    """A small prepared dataset drawn from ROOT (salader layout -> prepare), for --quick."""
    from catdog.data.prepare import load_manifest, prepare
    from catdog.data.sources import DOGS_VS_CATS as LABELS

    manifest = load_manifest(root).sort_values("path")
    raw = work / "quick-raw"
    for splits, dest, k in (
        (("train", "val"), "train", per_class),
        (("test",), "test", max(per_class // 5, 4)),
    ):
        for label in LABELS:
            rows = manifest[manifest["split"].isin(splits) & (manifest["label"] == label)]
            folder = raw / dest / f"{label}s"
            folder.mkdir(parents=True, exist_ok=True)
            for i, path in enumerate(rows["abspath"].head(k)):
                shutil.copyfile(path, folder / f"{label}.{i}.jpg")
    return prepare(raw, work / "quick-prepared").root


def _attempt(name: str, fn: Callable[..., dict], *args) -> dict:
    log.info("=== bench: %s", name)
    t0 = time.perf_counter()
    try:
        out = fn(*args)
    except Exception as exc:  # one failed item must not lose the others' figures
        log.exception("bench item %s failed", name)
        out = {"error": f"{type(exc).__name__}: {exc}"}
    out["wall_seconds"] = time.perf_counter() - t0
    log.info("=== bench: %s done in %.0fs", name, out["wall_seconds"])
    return out


ITEMS = (
    "ceiling",
    "sweep",
    "pipeline",
    "training",
    "notebook",
    "scaling",
    "time_to_accuracy",
    "serving",
)


def run_bench(root: Path, settings: Settings, only: tuple[str, ...] = ()) -> dict:
    """Every item (or ONLY those), in an order that keeps each honest (see the package
    docstring)."""
    if only:
        res = {name: _attempt(name, _ITEM_FNS[name], root, settings) for name in only}
        res["run_order"] = list(only)
        return res
    res: dict[str, Any] = {}
    res["ceiling"] = _attempt("1. ceiling", ceiling, settings)
    res["sweep"] = _attempt("5. sweep", sweep_costs, root, settings)
    res["pipeline"] = _attempt("2. input pipeline", input_pipeline, root, settings)
    res["training"] = _attempt(
        "3. training throughput", training, root, settings, res["ceiling"], res["pipeline"]
    )
    res["notebook"] = _attempt(
        "4. epoch vs notebook", versus_notebook, root, settings, res["pipeline"]
    )
    res["scaling"] = _attempt("6. scaling", scaling, root, settings)
    res["time_to_accuracy"] = _attempt("7. time to accuracy", time_to_accuracy, root, settings)
    res["serving"] = _attempt("8. serving", serving, root, settings)
    # Again at the end: how much the machine's speed drifted while the bench ran.
    res["ceiling_end"] = _attempt("1'. ceiling again", ceiling, settings)
    res["run_order"] = [*ITEMS, "ceiling_end"]
    return res


# The items `--only` can run alone: those that need no other item's figures.
_ITEM_FNS: dict[str, Callable[..., dict]] = {
    "ceiling": lambda root, settings: ceiling(settings),
    "sweep": sweep_costs,
    "scaling": scaling,
    "time_to_accuracy": time_to_accuracy,
    "serving": serving,
}


def write_results(res: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(res, indent=2, default=str) + "\n"
    out.write_text(text)
    (out.parent / "latest.json").write_text(text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks", description=benchmarks.__doc__.split("\n")[0]
    )
    p.add_argument(
        "--data", help=f"dataset zip, folder or prepared dataset (default {DEFAULT_DATA})"
    )
    p.add_argument(
        "--out",
        help="JSON results file (default benchmarks/results/bench-<UTC "
        "time>.json; latest.json is written beside it)",
    )
    p.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, a few minutes")
    p.add_argument(
        "--only",
        action="append",
        choices=sorted(_ITEM_FNS),
        default=[],
        help="run only this item (repeat for more); its row in the table, the rest absent",
    )
    p.add_argument(
        "--serve-model",
        metavar="URI",
        help="serving (item 8): serve this model, e.g. models:/catdog@champion from "
        "the project's store (MLFLOW_TRACKING_URI or mlruns/), instead of one "
        "trained for the bench",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup()
    data = Path(args.data) if args.data else DEFAULT_DATA
    if not data.exists():
        log.error(
            "no data at %s: pass --data (or DATA= to make bench) pointing at a "
            "Dogs-vs-Cats folder, zip or prepared dataset.",
            data,
        )
        return 2
    runtime.start()
    settings = QUICK if args.quick else FULL
    if args.serve_model:  # in the store in effect here, not the bench's scratch one
        from catdog.tracking import store

        settings = replace(settings, serve_model=args.serve_model, serve_store=store.tracking_uri())
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out).resolve() if args.out else RESULTS_DIR / f"bench-{stamp}.json"

    from catdog.data import resolve_data

    t0 = time.perf_counter()
    data = data.resolve()  # before leaving the project directory
    root = resolve_data(data).resolve()
    with scratch_workdir() as work:
        log.info("bench working directory (deleted at the end): %s", work)
        if settings.quick:
            root = quick_subset(root, work, settings.quick_per_class)
        res: dict[str, Any] = {
            "machine": machine_info(),
            "settings": asdict(settings),
            "data": str(data),
            "prepared": str(root),
            "splits": _split_sizes(root),
        }
        res.update(run_bench(root, settings, tuple(args.only)))
        res["machine"]["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        res["targets"] = targets(res)
        res["wall_seconds"] = time.perf_counter() - t0
    write_results(res, out)
    print(render(res), flush=True)
    log.info("results written to %s (and %s)", out, out.parent / "latest.json")
    failed = [k for k, v in res.items() if isinstance(v, dict) and "error" in v]
    if failed:
        log.error("bench items failed: %s", ", ".join(failed))
    return 1 if failed else 0
