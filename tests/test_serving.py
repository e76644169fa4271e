"""`mlflow models serve -m models:/catdog@champion` on 127.0.0.1 answers the README's request:
base64 image bytes in a `dataframe_records` JSON body, with the label and a probability per class
(p_<class>): for Dogs-vs-Cats, with flip TTA when it is part of the model (the probabilities its
test figures were made with), and for ten classes (scikit-learn's handwritten digits)."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from catdog import choose, heldout, keys, sweepfile
from catdog.data import load_manifest
from catdog.register import register
from catdog.search import sweep
from catdog.tracking import modelstore, runlog
from tests.imagegen import image_bytes
from tests.procs import free_port

pytestmark = pytest.mark.slow


def _post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


@contextlib.contextmanager
def served_champion(workdir, name: str = "catdog"):
    """`mlflow models serve -m models:/NAME@champion` on a free port: yields its URL."""
    port = free_port()
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{workdir}/mlruns/mlflow.db",
        # mlflow starts `uvicorn` by name: the venv's bin must be on PATH, as `make serve` does
        "PATH": f"{os.path.dirname(sys.executable)}:{os.environ.get('PATH', '')}",
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            f"models:/{name}@champion",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
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
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def _ask(url: str, images: list[bytes]) -> list[dict]:
    status, answer = _post(
        f"{url}/invocations",
        {"dataframe_records": [{"image": base64.b64encode(raw).decode()} for raw in images]},
    )
    assert status == 200, answer
    return answer["predictions"]


def test_served_champion_answers_a_base64_image(tiny_prepared, workdir):
    cfg = sweepfile.load(
        None,
        archs=("baseline",),
        tuner="random",
        trials=1,
        epochs=1,
        image_size=32,
        batch_size=8,
        data=str(tiny_prepared),
    )
    sweep.run(cfg)
    chosen = choose.champion(choose.table("latest", (), keys.OBJECTIVE, "catdog"))
    modelstore.set_tta(chosen.run.info.run_id, True)  # as the focus long fit records it
    reg = register()
    assert reg.tta
    tested = heldout.test_predictions(runlog.get(reg.run_id), chosen.parent)  # with TTA
    test = load_manifest(tiny_prepared).query("split == 'test'").sort_values("path")
    with served_champion(workdir) as url:
        rows = _ask(
            url,
            [
                image_bytes(11, size=(120, 90)),
                image_bytes(12, mode="RGBA", fmt="PNG"),
                b"not an image",
            ],
        )
        photos = _ask(url, [open(p, "rb").read() for p in test["abspath"]])
    assert [r["label"] in ("cat", "dog") for r in rows[:2]] == [True, True]
    assert all(0 <= r["p_dog"] <= 1 and abs(r["p_cat"] + r["p_dog"] - 1) < 1e-6 for r in rows[:2])
    assert rows[2]["label"] not in ("cat", "dog") and rows[2]["error"] == "not an image"
    # the test photos get the probabilities register tested: the mean over photo and mirror
    columns = [keys.probability(c) for c in ("cat", "dog")]
    np.testing.assert_allclose(
        [[r[c] for c in columns] for r in photos], tested[columns].to_numpy(float), atol=1e-5
    )
    assert [r["label"] for r in photos] == list(tested[keys.PREDICTED])


def test_served_ten_class_champion_names_its_classes(digits_folder, workdir):
    from catdog.data import load_manifest, prepare

    root = prepare(digits_folder, workdir / "digits").root
    cfg = sweepfile.load(
        None,
        archs=("baseline",),
        tuner="random",
        trials=1,
        epochs=3,
        image_size=32,
        batch_size=32,
        data=str(root),
    )
    sweep.run(cfg)
    assert register().name == "digits"  # a dataset of its own registers under its own name
    test = load_manifest(root).query("split == 'test'").head(30)
    with served_champion(workdir, "digits") as url:
        rows = _ask(url, [open(p, "rb").read() for p in test["abspath"]] + [b"junk"])
    digits = [str(d) for d in range(10)]
    assert all(set(r) == {"label", "error", *(f"p_{d}" for d in digits)} for r in rows)
    assert all(
        r["label"] in digits and abs(sum(r[f"p_{d}"] for d in digits) - 1) < 1e-4 for r in rows[:-1]
    )
    right = sum(r["label"] == label for r, label in zip(rows, test["label"]))
    assert right / len(test) >= 0.5, f"{right} of {len(test)} served answers right"
    assert rows[-1]["error"] == "not an image" and rows[-1]["label"] not in digits
