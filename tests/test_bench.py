"""Smoke run of the benchmark (`python -m benchmarks --quick`) on the real photos."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.heavy
@pytest.mark.real_data
def test_quick_bench_writes_every_item(real_data, tmp_path):
    out = tmp_path / "results" / "bench.json"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("MLFLOW_TRACKING_URI", None)
    # cwd=REPO: the real photos are prepared once under the project's data/, as `make bench` does.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--data",
            str(real_data),
            "--out",
            str(out),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert json.loads((out.parent / "latest.json").read_text()) == res
    for item in (
        "ceiling",
        "pipeline",
        "training",
        "notebook",
        "sweep",
        "scaling",
        "time_to_accuracy",
        "serving",
    ):
        assert "error" not in res[item], res[item]
    served = res["serving"]["runs"]
    assert {(r["tta"], r["requests"]) for r in served} == {
        (False, 40),
        (False, 100),
        (True, 40),
        (True, 100),
    }
    assert all(r["lost"] == 0 and r["rps"] > 0 for r in served), served
    acc = res["time_to_accuracy"]
    assert acc["notebook"]["epochs"] == 1 and 0 <= acc["notebook"]["target"] <= 1
    [cd] = acc["sweeps"]
    assert cd["exit_code"] is not None, "the sweep process ended (or was stopped)"
    if cd["ratio"] is not None:
        assert cd["reached"]["val_accuracy"] >= acc["notebook"]["target"]
        assert cd["ratio"] == pytest.approx(cd["seconds"] / acc["notebook"]["seconds"])
    assert len(res["sweep"]["trials"]) == 4
    assert {r["arch"] for r in res["training"]["rows"]} >= {"baseline", "bn_dropout", "vgg"}
    assert {t["result"] for t in res["targets"]} <= {"PASS", "MISS", "n/a"}
    assert "Targets" in proc.stdout and "1. Matmul ceiling" in proc.stdout


def test_missing_data_is_a_clear_error(tmp_path):
    # cwd=REPO: `benchmarks` is a top-level folder of the repository, not part of the package.
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--data", str(tmp_path / "absent")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "no data at" in proc.stderr


def test_the_serving_load_counts_answers_and_losses():
    """Item 8's load generator against a local server that fails every fifth request and
    answers another without a label: those are lost, the rest answered and timed."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from benchmarks.serving import load

    seen = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(json.loads(body)["dataframe_records"][0]["image"])
            n = len(seen)
            status, rows = (500, []) if n % 5 == 0 else (200, [{"label": None if n == 3 else "x"}])
            answer = json.dumps({"predictions": rows}).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        bodies = [json.dumps({"dataframe_records": [{"image": str(i)}]}).encode() for i in range(3)]
        r = load(server.server_address[1], bodies, 40, 4, max_seconds=30)
    finally:
        server.shutdown()
    assert len(seen) == r["sent"] == 40 and set(seen) == {"0", "1", "2"}
    assert r["lost"] == 8 + 1 and r["answered"] == 31
    assert r["rps"] == pytest.approx(31 / r["seconds"])
    assert 0 < r["p50_ms"] <= r["p99_ms"] <= r["max_ms"]


def test_serving_targets_judge_make_serves_workers():
    from benchmarks.render import render
    from benchmarks.serving import make_serve_workers
    from benchmarks.targets import targets

    workers = make_serve_workers()
    floor = {
        "image_size": 128,
        "predict_on_batch_ms": 7.0,
        "predict_on_batch_pair_ms": 14.0,
        "direct_call_ms": 60.0,
        "predict_ms": 90.0,
        "classify_ms": 10.0,
        "classify_tta_ms": 17.0,
        "others_cpu_share": 0.1,
    }

    def run(tta, w, n, c, rps, p99, lost):
        return {
            "tta": tta,
            "workers": w,
            "requests": n,
            "concurrency": c,
            "rps": rps,
            "p50_ms": p99 / 2,
            "p99_ms": p99,
            "max_ms": p99,
            "lost": lost,
            "others_cpu_share": 0.0,
        }

    sv = {
        "source": "given",
        "floor": floor,
        "make_serve_workers": workers,
        "runs": [
            run(False, workers, 200, 8, 75.0, 200.0, 0),
            run(False, workers, 1000, 32, 70.0, 600.0, 0),
            run(True, workers, 200, 8, 40.0, 400.0, 0),
            run(True, workers, 1000, 32, 38.0, 900.0, 2),
            run(False, workers + 1, 200, 8, 5.0, 9000.0, 100),
        ],
    }
    got = {t["target"]: t["result"] for t in targets({"serving": sv})}
    assert got == {
        "served one-photo answers/s, 200 at 8 concurrent": "PASS",
        "served p99 latency, 200 at 8 concurrent": "PASS",
        "served requests lost, 1,000 at 32 concurrent": "PASS",
        "served one-photo answers/s, 200 at 8 concurrent, TTA on": "MISS",
        "served p99 latency, 200 at 8 concurrent, TTA on": "MISS",
        "served requests lost, 1,000 at 32 concurrent, TTA on": "MISS",
    }
    res = {
        "machine": {
            "date": "today",
            "cpu": "cpu",
            "cores": 2,
            "cpu_bf16": False,
            "tensorflow": "2",
            "keras": "3",
            "loadavg_start": "0",
        },
        "settings": {"quick": False},
        "data": "d",
        "splits": {"test": 1},
        "wall_seconds": 60,
        "serving": sv,
        "targets": targets({"serving": sv}),
    }
    text = render(res)
    assert "8. Serving" in text and "(make serve)" in text and "143" in text  # 1000 / 7 ms


def test_the_standin_is_prepared_outside_data_prepared(tmp_path, monkeypatch):
    """The stand-in is a prepared dataset of its own at --out, used as it is: the latest
    dataset under data/prepared, which a bare `make sweep` trains on, is never the stand-in."""
    from benchmarks import standin
    from catdog.data.prepared import is_prepared, read_summary
    from catdog.data.resolve import latest_prepared, resolve_data
    from tests.imagegen import make_layout

    sample = make_layout(tmp_path / "sample", "salader", 3, seed=3)  # 12 photos
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "standin"
    assert standin.main(["--data", str(sample), "--out", str(out)]) == 0
    counts = read_summary(out)["counts"]
    assert is_prepared(out) and sum(sum(c.values()) for c in counts.values()) == 5 * 12
    assert resolve_data(out) == out, "a prepared dataset is used as it is"
    assert latest_prepared() is None, "nothing was prepared under data/prepared"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sample", "standin"], (
        "the photos it was prepared from are gone, and nothing went under data/"
    )
    with pytest.raises(SystemExit):
        standin.main(["--data", str(sample), "--out", "data/prepared/standin"])


def test_the_test_size_benchmark_scores_the_same_weights_at_each_size(tiny_prepared):
    import keras

    from benchmarks.testsize import accuracies, at_size
    from catdog import metrics, models, pipeline

    keras.utils.set_random_seed(3)
    model = models.get("xception").build(models.fixed_hyperparameters({"width": 8}), image_size=32)
    rows = accuracies(model, tiny_prepared, [32, 48])
    assert [r["size"] for r in rows] == [32, 48]
    dec = pipeline.decoded(tiny_prepared, "val", 32)
    own = np.mean(metrics.predicted(pipeline.predict(model, dec, 64)) == dec.labels.astype(int))
    assert rows[0]["plain"] == pytest.approx(own)  # at its own size, the model itself
    assert all(r["n"] == len(dec.labels) and 0 <= r["flip_tta"] <= 1 for r in rows)
    resized = at_size(model, 48)
    assert resized.input_shape[1] == 48
    assert all(np.array_equal(a, b) for a, b in zip(resized.get_weights(), model.get_weights()))
    flat = models.get("baseline").build(image_size=32)
    with pytest.raises(ValueError, match="32 px only"):
        at_size(flat, 48)


def test_the_tta_views_benchmark_scores_each_set_and_the_cost_of_each_count(tiny_prepared):
    import keras

    from benchmarks import ttaviews
    from catdog import inference, metrics, models, pipeline

    keras.utils.set_random_seed(3)
    model = models.get("xception").build(models.fixed_hyperparameters({"width": 8}), image_size=32)
    scores = ttaviews.accuracies(model, tiny_prepared)
    assert list(scores) == [*ttaviews.SETS, "flip at 32 and 64 px"]
    dec = pipeline.decoded(tiny_prepared, "val", 32)
    pixels = np.asarray(dec.images, np.float32)
    for name, tta in (("plain", False), ("flip", True)):  # as catdog serves the model
        probs = inference.probabilities(model, pixels, tta)
        assert scores[name] == pytest.approx(np.mean(metrics.predicted(probs) == dec.labels))
    costs = ttaviews.floor_ms(model, steps=3)
    assert list(costs) == list(ttaviews.VIEW_COUNTS) and all(ms > 0 for ms in costs.values())


def test_the_model_the_bench_serves_is_built_as_the_sweeps_champion():
    from benchmarks.serving import sweep_values

    values = sweep_values("xception", 128, "experiments/cpu.toml")
    assert values["width"] == 16, "cpu.toml fixes the Xception-style model's width at 16"
    assert "lr" not in values, "a searched range is not a fixed value"
