"""Item 8, serving: how fast `mlflow models serve` answers one-photo requests, next to the
model's own floor, both measured in this run on the same model.

The model: the one `--serve-model URI` names (e.g. the project's champion,
models:/catdog@champion, read from the store the bench was started with), else one trained here
(`catdog train` of settings.serve_arch at serve_size for serve_epochs, with the hyperparameters
serve_sweep fixes for it, as `make sweep`'s champion has them, in the bench's scratch store)
and logged as catdog's serving model, with flip TTA part of it when serve_tta says so (as it is
for a `focus` champion that kept it: two forward passes per photo).

The floor, in this process, on one test photo: the Keras model alone through `predict_on_batch`
(what the serving model calls: the photo, or the photo and its mirror image with TTA), a direct
call `model(x)`, and `model.predict` for reference; then catdog's whole answer to one photo
(`inference.classify`: check, decode, resize, model). Each the median of FLOOR_REPS calls after
warm-up.

The served rate: `mlflow models serve` of the same model on 127.0.0.1, with each worker count of
serve_workers in turn, sent one-photo requests (a `dataframe_records` body with one base64 test
photo) by a pool of threads, each over its own keep-alive connection (http.client), for each
(requests, concurrency) of serve_loads: answers per second over the load's wall time, p50 and p99
latency, and how many were lost (no 200 with one labelled row, or no answer within
REQUEST_TIMEOUT). The client runs on the same cores as the server, so the rate is a lower bound
of the server's; "others" is the CPU share of processes other than the bench and its server.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from benchmarks.probes import CpuShare, median_ms
from benchmarks.settings import Settings
from catdog.log import get_logger

log = get_logger(__name__)

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
REQUEST_TIMEOUT = 30.0  # seconds without an answer: the request is lost
START_TIMEOUT = 300.0  # for the server to load the model in every worker
FLOOR_REPS = 50
PHOTOS = 50  # distinct test photos the requests cycle through
WARMUP_REQUESTS = 16


def make_serve_workers() -> int:
    """The worker count `make serve` runs with (the Makefile's SERVE_WORKERS), so the targets
    judge the configuration that ships."""
    found = re.search(r"^SERVE_WORKERS\s*\?=\s*(\d+)", (REPO / "Makefile").read_text(), re.M)
    return int(found.group(1)) if found else 1


def serving(root: Path, settings: Settings) -> dict:
    served, store_uri, about = _models(root, settings)
    photos = _photos(root)
    with _store(store_uri):
        floor = _floor(served[0][0], photos[0])
    bodies = [
        json.dumps({"dataframe_records": [{"image": base64.b64encode(raw).decode()}]}).encode()
        for raw in photos
    ]
    runs = []
    for model_uri, tta in served:
        for workers in settings.serve_workers:
            with _server(model_uri, store_uri, workers) as (port, pid):
                load(port, bodies, WARMUP_REQUESTS, 2 * workers, settings.serve_seconds)
                for requests, concurrency in settings.serve_loads:
                    r = load(port, bodies, requests, concurrency, settings.serve_seconds, pid)
                    runs.append({"model_uri": model_uri, "tta": tta, "workers": workers, **r})
                    log.info(
                        "served (TTA %s) by %d worker(s), %d requests at %d concurrent: "
                        "%.1f answers/s, p50 %.0f ms, p99 %.0f ms, %d lost",
                        "on" if tta else "off",
                        workers,
                        requests,
                        concurrency,
                        r["rps"],
                        r["p50_ms"] or float("nan"),
                        r["p99_ms"] or float("nan"),
                        r["lost"],
                    )
    return {**about, "floor": floor, "runs": runs, "make_serve_workers": make_serve_workers()}


def _models(root: Path, settings: Settings) -> tuple[list[tuple[str, bool]], str, dict]:
    """The models to serve as (URI, flip TTA part of it), the store they are in, and what they
    are: the given one, or one trained here and logged as a serving model once per setting of
    serve_tta (the same weights)."""
    from catdog.inference import load_classifier, with_tta
    from catdog.tracking import store

    if settings.serve_model:
        store_uri = settings.serve_store or store.tracking_uri()
        with _store(store_uri):
            tta = load_classifier(settings.serve_model).tta
        return [(settings.serve_model, tta)], store_uri, {"source": "given"}
    from catdog import train
    from catdog.serving import log_serving_model
    from catdog.tracking import runs

    values = sweep_values(settings.serve_arch, settings.serve_size, settings.serve_sweep)
    result = train.train(
        settings.serve_arch,
        root,
        image_size=settings.serve_size,
        epochs=settings.serve_epochs,
        pretrained=False,
        hparams=values,
        run_name="bench-serving",
    )
    classifier, example = load_classifier(result.model_uri), _photos(root, 1)[0]
    served = []
    with runs.reopened(result.run_id):
        for tta in settings.serve_tta:
            info = log_serving_model(
                with_tta(classifier, tta), example, name=f"serving-tta-{'on' if tta else 'off'}"
            )
            served.append((info.model_uri, tta))
    return (
        served,
        store.tracking_uri(),
        {
            "source": "trained here",
            "arch": settings.serve_arch,
            "size": settings.serve_size,
            "epochs": settings.serve_epochs,
            "hyperparameters": values,
            "val_accuracy": result.summary.get("best_val_accuracy"),
        },
    )


def sweep_values(arch: str, size: int, sweep: str) -> dict:
    """The hyperparameters the sweep file SWEEP fixes for ARCH (not those it searches): the
    model trained to serve is built as that sweep's champion is (the Xception-style model at
    width 16 under experiments/cpu.toml, a quarter of width 32's cost per photo)."""
    from catdog import models, sweepfile

    cfg = sweepfile.load(REPO / sweep)
    spec = cfg.hp_for(arch, models.get(arch).search_space(size).values)
    return {k: v for k, v in spec.items() if not isinstance(v, dict)}  # a table is searched


def _photos(root: Path, n: int = PHOTOS) -> list[bytes]:
    from catdog.data.prepare import load_manifest

    m = load_manifest(root)
    paths = m[m["split"] == "test"].sort_values("path")["abspath"].head(n)
    return [Path(p).read_bytes() for p in paths]


@contextlib.contextmanager
def _store(uri: str) -> Iterator[None]:
    """MLFLOW_TRACKING_URI pointed at URI for a while (the given model's store may be the
    project's, not the bench's scratch one)."""
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        yield
    finally:
        os.environ["MLFLOW_TRACKING_URI"] = saved or ""
        if saved is None:
            os.environ.pop("MLFLOW_TRACKING_URI")


def _floor(model_uri: str, photo: bytes) -> dict:
    """The model's own cost for one photo, and catdog's whole answer to it, in this process."""
    from catdog.inference import classify, load_classifier, to_pixels, with_tta

    classifier = load_classifier(model_uri)
    model = classifier.model
    x, _ = to_pixels([photo], classifier.image_size)
    pair = np.concatenate([x, x[:, :, ::-1, :]])
    cpu = CpuShare()
    out = {
        "image_size": classifier.image_size,
        "predict_on_batch_ms": median_ms(lambda: model.predict_on_batch(x), FLOOR_REPS),
        "predict_on_batch_pair_ms": median_ms(lambda: model.predict_on_batch(pair), FLOOR_REPS),
        "direct_call_ms": median_ms(lambda: model(x, training=False), FLOOR_REPS),
        "predict_ms": median_ms(lambda: model.predict(x, verbose=0), FLOOR_REPS // 2),
        "classify_ms": median_ms(
            lambda: classify(with_tta(classifier, False), [photo]), FLOOR_REPS
        ),
        "classify_tta_ms": median_ms(
            lambda: classify(with_tta(classifier, True), [photo]), FLOOR_REPS
        ),
        "others_cpu_share": cpu.others(),
    }
    log.info(
        "floor, one photo at %d px: predict_on_batch %.1f ms (with its mirror %.1f ms), "
        "direct call %.1f ms, model.predict %.1f ms; classify %.1f ms (with TTA %.1f ms)",
        out["image_size"],
        out["predict_on_batch_ms"],
        out["predict_on_batch_pair_ms"],
        out["direct_call_ms"],
        out["predict_ms"],
        out["classify_ms"],
        out["classify_tta_ms"],
    )
    return out


def model_ms(floor: dict, tta: bool) -> float:
    """What the served model's predict step costs per one-photo request: one image, or the
    image and its mirror image with TTA."""
    return floor["predict_on_batch_pair_ms" if tta else "predict_on_batch_ms"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _server(model_uri: str, store_uri: str, workers: int) -> Iterator[tuple[int, int]]:
    """`mlflow models serve` of MODEL_URI with WORKERS uvicorn workers on a free port of
    127.0.0.1, once every worker has loaded the model: (its port, its process group). The group
    is stopped after."""
    port = _free_port()
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": store_uri,
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        # mlflow starts `uvicorn` by name: the venv's bin must be on PATH, as `make serve` has
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    }
    log_path = Path.cwd() / f"serve-{workers}.log"
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "models",
        "serve",
        "-m",
        model_uri,
        "--env-manager",
        "local",
        "-h",
        HOST,
        "-p",
        str(port),
        "--workers",
        str(workers),
    ]
    log.info("serving %s with %d worker(s) on port %d (log %s)", model_uri, workers, port, log_path)
    with open(log_path, "w") as out:
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while log_path.read_text(errors="replace").count("Application startup complete") < workers:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"mlflow models serve did not come up with {workers} "
                    f"worker(s): {log_path.read_text(errors='replace')[-2000:]}"
                )
            time.sleep(0.5)
        yield port, proc.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def _answered(status: int, data: bytes) -> bool:
    """A 200 with one row that has a label."""
    if status != 200:
        return False
    try:
        rows = json.loads(data)["predictions"]
    except (ValueError, KeyError, TypeError):
        return False
    return len(rows) == 1 and rows[0].get("label") is not None


def load(
    port: int,
    bodies: list[bytes],
    requests: int,
    concurrency: int,
    max_seconds: float,
    server_pid: int | None = None,
) -> dict:
    """REQUESTS POSTs to /invocations on 127.0.0.1:PORT from CONCURRENCY threads, each over its
    own keep-alive connection, none started after MAX_SECONDS: answers/s, latency, losses."""
    tickets = itertools.count()
    results: list[tuple[float, bool]] = []
    lock = threading.Lock()
    stop = time.monotonic() + max_seconds
    headers = {"Content-Type": "application/json"}

    def client() -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT)
        while (i := next(tickets)) < requests and time.monotonic() < stop:
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/invocations", bodies[i % len(bodies)], headers)
                reply = conn.getresponse()
                ok = _answered(reply.status, reply.read())
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()  # a fresh connection for the next request
            with lock:
                results.append((time.perf_counter() - t0, ok))
        conn.close()

    cpu, server = CpuShare(), _ticks(server_pid)
    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max_seconds + REQUEST_TIMEOUT + 5)
    seconds = time.perf_counter() - t0
    with lock:
        done = list(results)
    answered = sorted(s for s, ok in done if ok)
    ms = lambda q: 1000 * float(np.percentile(answered, q)) if answered else None
    return {
        "requests": requests,
        "concurrency": concurrency,
        "sent": len(done),
        "answered": len(answered),
        "lost": requests - len(answered),
        "seconds": seconds,
        "rps": len(answered) / seconds,
        "p50_ms": ms(50),
        "p99_ms": ms(99),
        "max_ms": ms(100),
        "others_cpu_share": _others(cpu, server_pid, server),
    }


def _ticks(pid: int | None) -> int | None:
    """CPU ticks (user + system) used so far by PID's process group (the server and its
    workers); None without /proc or a server."""
    if pid is None:
        return None
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pid:  # the process group id
            total += int(fields[11]) + int(fields[12])
    return total


def _others(cpu: CpuShare, pid: int | None, before: int | None) -> float | None:
    """Other processes' share of the machine's CPU during a load: `CpuShare.others` with the
    server's time taken out too."""
    end, after = CpuShare._snapshot(), _ticks(pid)
    start = cpu._start
    if start is None or end is None or end[0] <= start[0]:
        return None
    total, busy, own = (e - s for e, s in zip(end, start))
    server = after - before if before is not None and after is not None else 0
    return min(max((busy - own - server) / total, 0.0), 1.0)
