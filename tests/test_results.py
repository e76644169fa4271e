"""From a finished sweep to a champion in use: compare, register, evaluate and predict, chained
end to end on tiny generated images, read back through MLflow and the commands' JSON output."""

from __future__ import annotations

import json

import mlflow
import pytest
from click.testing import CliRunner

from catdog import sweepfile
from catdog.cli import main
from catdog.search import sweep
from tests.imagegen import write_jpeg


def cli(*args, code=0):
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == code, (result.output, result.exception)
    return result


@pytest.fixture
def finished_sweep(tiny_prepared, workdir):
    cfg = sweepfile.load(
        None,
        archs=("baseline", "bn_dropout"),
        tuner="random",
        trials=2,
        epochs=1,
        image_size=32,
        batch_size=8,
        data=str(tiny_prepared),
    )
    return sweep.run(cfg)


def test_sweep_compare_register_evaluate_predict(finished_sweep, tiny_prepared, workdir):
    client = mlflow.MlflowClient()
    # compare: one row per architecture, sorted by the metric, logged to the parent run
    rows = json.loads(cli("compare", "--format", "json", "--plot", "cmp.png").stdout)["rows"]
    assert [r["arch"] for r in rows] and len(rows) == 2
    assert rows[0]["val_accuracy"] >= rows[1]["val_accuracy"]
    for key in (
        "val_loss",
        "val_auc",
        "best_epoch",
        "gap_best",
        "gap_last",
        "params",
        "sec_per_epoch",
        "trials",
        "hyperparameters",
    ):
        assert key in rows[0]
    assert rows[0]["trials"] == 2 and rows[0]["params"] > 0
    # what each best model costs to run here, measured when its trial logged it
    for row in rows:
        assert row["ms_per_image"] > 0 and row["ms_per_image_batch32"] > 0
        assert row["model_bytes"] > 10_000, "the logged model's files on the store"
        run = client.get_run(row["run_id"])
        assert run.data.metrics["ms_per_image"] == pytest.approx(row["ms_per_image"])
    shown = cli("compare", "--plot", "c.png").stdout
    assert "ms_per_image_batch32" in shown and "model_mb" in shown
    assert (workdir / "cmp.png").stat().st_size > 10_000
    assert {a.path for a in client.list_artifacts(finished_sweep.parent_run_id)} >= {
        "comparison.csv",
        "comparison.png",
        "anytime.png",
        "anytime.csv",
        "plan.json",
    }
    for fmt in ("table", "markdown", "csv"):
        assert "baseline" in cli("compare", "--format", fmt, "--plot", "c.png").output

    # register: best by validation; what ships is its final fit on train+val, which the sweep
    # evaluated once on test; registered, made champion
    final = finished_sweep.final
    reg = json.loads(cli("register").stdout)
    assert reg["promoted"] and reg["version"] == "1" and reg["new_version"]
    assert reg["run_id"] == final["run_id"] and reg["arch"] == rows[0]["arch"]
    best_run = client.get_run(reg["run_id"])
    assert best_run.data.tags["catdog.kind"] == "final"
    assert best_run.data.tags["catdog.source_run_id"] == rows[0]["run_id"]
    assert best_run.data.params["trained_on"] == "train+val"
    from catdog.data.prepare import read_summary

    counts = read_summary(tiny_prepared)["counts"]
    assert int(best_run.data.params["n_train"]) == sum(
        sum(counts[split].values()) for split in ("train", "val")
    )
    assert best_run.data.metrics["test_accuracy"] == pytest.approx(final["test_accuracy"])
    assert {"test_accuracy", "test_loss", "test_auc"} <= set(best_run.data.metrics)
    # ... and tested against the runner-up architecture on the same images (McNemar)
    sig = reg["vs_runner_up"]
    assert sig["images"] == 24 and 0 <= sig["p_value"] <= 1
    assert sig["disagreements"] == sig["only_a_right"] + sig["only_b_right"]
    assert sig["a"] == reg["arch"] and sig["b"] != reg["arch"]
    import pandas as pd

    preds = pd.read_csv(
        client.download_artifacts(reg["run_id"], "test_predictions.csv", str(workdir))
    )
    assert (
        list(preds.columns) == ["path", "label", "predicted", "p_cat", "p_dog"] and len(preds) == 24
    )
    assert (preds["p_cat"] + preds["p_dog"]).round(6).eq(1).all()
    assert ((preds["p_dog"] >= 0.5) == (preds["predicted"] == "dog")).all()
    assert preds["label"].isin(["cat", "dog"]).all()
    assert ((preds["p_dog"] >= 0.5) == (preds["label"] == "dog")).mean() == pytest.approx(
        best_run.data.metrics["test_accuracy"]
    )
    # compare --test: the two best trials, on equal footing (neither saw val in training)
    tested = json.loads(cli("compare", "--test", "--format", "json", "--plot", "t.png").stdout)
    again = json.loads(cli("compare", "--test", "--format", "json", "--plot", "t.png").stdout)
    assert 0 <= tested["significance"]["p_value"] <= 1
    assert again["significance"] == tested["significance"], "read back, not re-evaluated"
    assert "McNemar exact p" in cli("compare", "--test", "--plot", "t.png").output

    # the data curve of the champion's configuration, then the report shows it
    said = cli("curve", "--fractions", "50%,100%", "--epochs", "1", "--plot", "curve.png").stdout
    sentence = client.get_run(finished_sweep.parent_run_id).data.tags["catdog.curve_verdict"]
    assert said.strip().endswith(sentence) and (workdir / "curve.png").is_file()

    # report: one self-contained HTML file, logged to the sweep's parent run
    path = cli("report", "--out", "reports/r.html").stdout.strip()
    page = (workdir / path).read_text()
    assert page.count("<img") >= 8 and 'src="http' not in page and "<table" in page
    assert "Would more photos help?" in page and 'alt="accuracy against inference cost"' in page
    assert "McNemar exact p" in page and "most confidently wrong" in page.lower()
    assert "report/r.html" in {
        a.path for a in client.list_artifacts(finished_sweep.parent_run_id, "report")
    }
    version = client.get_model_version_by_alias("catdog", "champion")
    assert str(version.version) == "1"
    for tag in (
        "catdog.arch",
        "catdog.run_id",
        "catdog.val_accuracy",
        "catdog.test_accuracy",
        "catdog.dataset_digest",
    ):
        assert version.tags.get(tag), tag
    again = json.loads(cli("register").stdout)
    assert not again["new_version"] and again["version"] == "1"
    assert len(client.search_model_versions("name = 'catdog'")) == 1, "no duplicate version"

    # evaluate the champion on a labelled folder (the salader root: its test/ split)
    ev = json.loads(
        cli(
            "evaluate",
            "--model",
            "models:/catdog@champion",
            "--data",
            str(tiny_prepared.parent / "raw"),
            "--format",
            "json",
        ).stdout
    )
    assert 0 <= ev["accuracy"] <= 1 and 0 <= ev["auc"] <= 1
    assert sum(map(sum, ev["confusion"])) == ev["n"] == 24
    assert {"precision_cat", "recall_cat", "precision_dog", "recall_dog", "macro_f1"} <= set(ev)
    assert ev["classes"] == ["cat", "dog"]
    text = cli("evaluate", "--data", str(tiny_prepared.parent / "raw" / "test")).output
    assert "accuracy" in text and "confusion" in text
    tta = json.loads(
        cli(
            "evaluate", "--data", str(tiny_prepared.parent / "raw"), "--tta", "--format", "json"
        ).stdout
    )
    assert tta["tta"] and not ev["tta"] and tta["n"] == 24
    assert tta["loss"] != ev["loss"], "the mirror images changed the predictions"

    # predict: files and folders, any mode; a corrupt file errors on its own line
    folder = workdir / "photos"
    write_jpeg(folder / "gray.jpg", 1, mode="L")
    write_jpeg(folder / "big.jpg", 2, size=(300, 200))
    from PIL import Image

    Image.new("RGBA", (50, 40), (10, 200, 30, 128)).save(folder / "alpha.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    result = cli("predict", str(folder), "--format", "json", code=1)
    preds = {p["path"].split("/")[-1]: p for p in json.loads(result.stdout)}
    assert preds["broken.jpg"]["error"] and preds["broken.jpg"]["label"] is None
    for name in ("gray.jpg", "big.jpg", "alpha.png"):
        assert preds[name]["label"] in ("cat", "dog") and 0 <= preds[name]["p_dog"] <= 1
        assert preds[name]["p_cat"] == pytest.approx(1 - preds[name]["p_dog"])
    ok = cli("predict", str(folder / "big.jpg"), "--model", f"runs:/{reg['run_id']}/model")
    assert "big.jpg" in ok.output
    # compare --arch filters and refuses an unknown architecture, one line each.
    rows = json.loads(
        cli("compare", "--arch", "bn_dropout", "--format", "json", "--plot", "x.png").stdout
    )["rows"]
    assert [r["arch"] for r in rows] == ["bn_dropout"]
    logged = mlflow.artifacts.load_text(f"runs:/{finished_sweep.parent_run_id}/comparison.csv")
    assert "baseline" in logged and "bn_dropout" in logged, (
        "a comparison of some architectures does not replace the sweep's own"
    )
    bad = cli("compare", "--arch", "alexnet", code=2)
    assert "alexnet" in bad.output and "baseline, bn_dropout" in bad.output
    assert cli("register", "--metric", "test_accuracy", code=2).output.count("\n") == 1

    # The alias does not move to a worse model: make the champion unbeatable on the same test
    # split, and the runner-up architecture's model is registered but not promoted, unless forced.
    champion = reg["version"]
    client.set_model_version_tag("catdog", champion, "catdog.test_accuracy", "1.0")
    other = sig["b"]
    second = json.loads(cli("register", "--arch", other).stdout)
    assert second["new_version"] and not second["promoted"]
    assert "does not beat" in second["reason"]
    assert str(client.get_model_version_by_alias("catdog", "champion").version) == champion
    forced = json.loads(cli("register", "--arch", other, "--force").stdout)
    assert forced["promoted"] and forced["version"] == second["version"]
    assert str(client.get_model_version_by_alias("catdog", "champion").version) == second["version"]


def test_register_refuses_a_test_metric_from_python_too(workdir):
    from catdog.errors import CatdogError
    from catdog.register import register

    with pytest.raises(CatdogError, match="validation metric"):
        register(metric="test_accuracy")


def test_should_promote_rules():
    from catdog.register import should_promote

    assert should_promote(0.8, None, True, False)[0]
    assert should_promote(0.8, 0.7, True, False)[0]
    assert not should_promote(0.7, 0.7, True, False)[0]
    assert not should_promote(0.9, 0.7, False, False)[0], "different test split: not comparable"
    assert should_promote(0.5, 0.9, True, True)[0]


def test_errors_are_one_sentence(workdir):
    assert "no sweep found" in cli("compare", code=2).output
    assert "does not exist" in cli("predict", "nope.jpg", "--model", "missing/model", code=2).output
    out = cli("evaluate", "--model", "models:/catdog@champion", "--data", str(workdir), code=2)
    assert out.output.startswith("error: ") and out.output.count("\n") == 1
    assert "unknown architecture" in cli("train", "--arch", "alexnet", "--data", ".", code=2).output
