"""`mlflow models serve -m models:/catdog@champion` on 127.0.0.1 answers the README's request:
base64 image bytes in a `dataframe_records` JSON body."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from catdog import sweepfile
from catdog.search import sweep
from catdog.register import register
from tests.imagegen import image_bytes

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_served_champion_answers_a_base64_image(tiny_prepared, workdir):
    cfg = sweepfile.load(None, archs=("baseline",), tuner="random", trials=1, epochs=1,
                          image_size=32, batch_size=8, data=str(tiny_prepared))
    sweep.run(cfg)
    register()
    port = _free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir}/mlruns/mlflow.db",
           # mlflow starts `uvicorn` by name: the venv's bin must be on PATH, as `make serve` does
           "PATH": f"{os.path.dirname(sys.executable)}:{os.environ.get('PATH', '')}"}
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/catdog@champion",
         "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                assert server.poll() is None, server.stdout.read()[-3000:]
                assert time.monotonic() < deadline, "server did not come up"
                time.sleep(1)
        photo = base64.b64encode(image_bytes(11, size=(120, 90))).decode()
        png = base64.b64encode(image_bytes(12, mode="RGBA", fmt="PNG")).decode()
        junk = base64.b64encode(b"not an image").decode()
        status, answer = _post(f"http://127.0.0.1:{port}/invocations",
                               {"dataframe_records": [{"image": photo}, {"image": png},
                                                      {"image": junk}]})
        assert status == 200, answer
        rows = answer["predictions"]
        assert [r["label"] in ("cat", "dog") for r in rows[:2]] == [True, True]
        assert all(0 <= r["p_dog"] <= 1 for r in rows[:2])
        assert rows[2]["label"] not in ("cat", "dog") and rows[2]["error"] == "not an image"
    finally:
        server.terminate()
        server.wait(timeout=30)
