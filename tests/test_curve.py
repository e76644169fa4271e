"""The data curve (`catdog curve`): would more photos help the champion? Its sentence and
interval on made-up points both ways, the nested subsets, and real fits: a tiny three-class
sweep's champion trained on each fraction in runs of its own, and, where the real photos are,
a small set of them."""

from __future__ import annotations

import json
import os
import shutil

import mlflow
import numpy as np
import pytest
from click.testing import CliRunner

from catdog import curve
from catdog.cli import main
from catdog.errors import CatdogError


def cli(*args, code=0):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == code, (result.output, result.exception)
    return result


def made_up(accuracies, n_train=(250, 500, 1000), n_val=1000, seed=0) -> list[curve.Point]:
    """Points whose validation photos are right with the given probabilities."""
    rng = np.random.default_rng(seed)
    return [
        curve.Point(f, n, rng.random(n_val) < a)
        for f, n, a in zip((0.25, 0.5, 1.0), n_train, accuracies)
    ]


# ---------------------------------------------------------------- the sentence, on made-up points


def test_a_rising_curve_says_more_photos_would_help():
    c = curve.DataCurve("baseline", 32, 5, 1000, made_up((0.60, 0.68, 0.76)))
    low, high = c.gain_interval
    assert 0.07 < c.gain < 0.13 and 0 < low < c.gain < high
    assert c.sentence.startswith("more photos would likely help (+")
    assert f"{100 * c.gain:+.1f} points at 2x" in c.sentence
    assert c.fit_interval[0] < low and c.fit_interval[1] > high, (
        "three points: the fit's own interval is wider than the bootstrap's"
    )


@pytest.mark.parametrize("accuracies", [(0.75, 0.75, 0.75), (0.80, 0.78, 0.76)])
def test_a_flat_or_falling_curve_says_so(accuracies):
    c = curve.DataCurve("baseline", 32, 5, 1000, made_up(accuracies))
    assert c.gain_interval[0] <= 0
    assert c.sentence.startswith("the curve is flat: try a larger model or pretrained weights")


def test_a_small_rise_on_few_validation_photos_is_not_called_a_gain():
    """The same rise that is clear on 5,000 validation photos is noise on 60."""
    rise = (0.70, 0.73, 0.76)
    assert curve.DataCurve("a", 32, 5, 1000, made_up(rise, n_val=5000)).sentence.startswith(
        curve.HELPS
    )
    assert curve.DataCurve("a", 32, 5, 1000, made_up(rise, n_val=60)).sentence.startswith(
        curve.FLAT
    )


def test_one_point_is_no_curve_and_the_record_reads_back():
    c = curve.DataCurve("a", 32, 5, 1000, made_up((0.7,))[:1], ["skipped 50% (...)"])
    assert c.trend is None and c.gain is None and "too few fractions ran" in c.sentence
    assert "1 of 2" in c.sentence
    c = curve.DataCurve("a", 32, 5, 1000, made_up((0.6, 0.7, 0.8)))
    back = curve.DataCurve.from_json(c.to_json(), "run1")
    assert back.sentence == c.sentence and back.sweep_run_id == "run1"
    assert [p.accuracy for p in back.points] == [p.accuracy for p in c.points]
    assert json.loads(c.to_json())["gain"] == pytest.approx(c.gain)


def test_the_2x_reading_is_checked_on_the_curves_own_points():
    """Fitted on 25% and 50% alone and read at 100% (twice 50%): a curve that keeps its log-linear
    rise holds; one that flattens past 50% misses, and the check says by how much."""
    rising = curve.DataCurve("a", 32, 5, 2000, made_up((0.60, 0.66, 0.72), (500, 1000, 2000), 4000))
    check = rising.backtest
    assert (check.n_from, check.n_to) == (1000, 2000)
    assert check.predicted == pytest.approx(
        2 * rising.points[1].accuracy - rising.points[0].accuracy, abs=1e-6
    ), "two points at a doubling: the line through them, one doubling on"
    assert check.measured == pytest.approx(rising.points[2].accuracy)
    assert check.holds and check.error_interval[0] < 0 < check.error_interval[1]
    assert "the reading held" in check.sentence and "(2.0x)" in check.sentence
    flattened = curve.DataCurve(
        "a", 32, 5, 2000, made_up((0.60, 0.66, 0.66), (500, 1000, 2000), 4000)
    )
    missed = flattened.backtest
    assert not missed.holds and missed.error_interval[1] < 0 and missed.error < -0.03
    assert "the reading missed" in missed.sentence
    record = json.loads(flattened.to_json())["backtest"]
    assert record["holds"] is False and record["predicted"] == pytest.approx(missed.predicted)
    assert curve.DataCurve.from_json(flattened.to_json()).backtest == missed
    assert curve.DataCurve("a", 32, 5, 1000, made_up((0.6, 0.7))[:2]).backtest is None, (
        "two points: nothing left to check the reading against"
    )


def test_subsets_are_nested_stratified_and_fixed():
    labels = np.repeat([0, 1, 2], [40, 80, 20]).astype(np.float32)
    subsets = curve.nested_subsets(labels, (0.25, 0.5, 1.0), seed=3)
    assert [len(s) for s in subsets.values()] == [35, 70, 140]
    assert set(subsets[0.25]) <= set(subsets[0.5]) <= set(subsets[1.0])
    assert np.bincount(labels[subsets[0.25]].astype(int)).tolist() == [10, 20, 5]
    again = curve.nested_subsets(labels, (0.25, 0.5, 1.0), seed=3)
    assert all((again[f] == subsets[f]).all() for f in subsets)
    other = curve.nested_subsets(labels, (0.25,), seed=4)
    assert set(other[0.25]) != set(subsets[0.25]), "another seed, another draw"
    assert len(curve.nested_subsets(np.array([0.0, 1.0]), (0.1,), 0)[0.1]) == 2, (
        "at least one photo of each class"
    )


@pytest.mark.parametrize(
    "text, fractions", [("25%,50%,100%", (0.25, 0.5, 1.0)), ("1, 0.1", (0.1, 1.0))]
)
def test_fractions_are_read(text, fractions):
    assert curve.parse_fractions(text) == fractions


@pytest.mark.parametrize("text", ["half", "0.5", "0,1", "50%,150%", "0.5,50%"])
def test_impossible_fractions_are_refused(text):
    with pytest.raises(CatdogError, match="fraction"):
        curve.parse_fractions(text)


# ---------------------------------------------------------------- real fits


def three_classes(root, per_class: int):
    from catdog.data.prepare import prepare
    from tests.imagegen import write_jpeg

    for c, name in enumerate(("ibis", "heron", "stork")):
        for i in range(per_class):
            write_jpeg(root / "raw" / name / f"{i}.jpg", 1000 * c + i)
    return prepare(root / "raw", root / "prepared", seed=2).root


def tiny_sweep(data, **changes):
    from catdog import sweepfile
    from catdog.search import sweep

    settings = dict(
        archs=("baseline",),
        tuner="random",
        trials=1,
        epochs=2,
        image_size=32,
        batch_size=8,
        data=str(data),
        final_fit=False,
    )
    return sweep.run(sweepfile.load(None, **{**settings, **changes}))


def test_a_three_class_curve_comes_from_real_fits(workdir):
    from catdog.pipeline import load

    root = three_classes(workdir, per_class=16)
    recipe = curve.Recipe("baseline", {"lr": 0.002}, image_size=32, epochs=2, batch_size=8)
    c = curve.train_fractions(root, recipe, (0.25, 0.5, 1.0))
    splits = load(root, 32, 8)
    labels = splits.decoded("train").labels.astype(int)
    expected = [sum(max(1, round(f * n)) for n in np.bincount(labels)) for f in (0.25, 0.5, 1)]
    assert [p.n_train for p in c.points] == expected and expected[-1] == len(labels) == c.n_full
    client = mlflow.MlflowClient()
    for p in c.points:
        run = client.get_run(p.run_id)
        assert run.data.tags["catdog.kind"] == "curve" and run.info.status == "FINISHED"
        assert int(run.data.params["n_train"]) == p.n_train
        assert float(run.data.params["fraction"]) == p.fraction
        assert run.data.params["lr"] == "0.002", "the recipe's hyperparameters"
        assert len(p.correct) == splits.sizes["val"]
        # the point is the restored best epoch, as Keras measured it during the fit
        assert p.accuracy == pytest.approx(run.data.metrics["best_val_accuracy"], abs=1e-6)
        assert len(client.get_metric_history(p.run_id, "val_accuracy")) >= 1
    assert c.trend is not None and c.sentence.startswith((curve.HELPS, curve.FLAT))
    assert c.figure() is not None


@pytest.mark.slow
def test_catdog_curve_trains_the_sweeps_champion_and_logs_to_its_parent(workdir):
    root = three_classes(workdir, per_class=16)
    result = tiny_sweep(root)
    out = cli("curve", "--fractions", "25%,50%,100%", "--plot", "curve.png")
    verdict, check = out.stdout.strip().splitlines()[-2:]
    assert verdict.startswith(("more photos", "the curve is flat"))
    assert check.startswith("checked on this curve: fitted on the points up to ")
    client = mlflow.MlflowClient()
    parent = client.get_run(result.parent_run_id)
    logged = curve.logged(result.parent_run_id)
    assert logged.sentence == parent.data.tags["catdog.curve_verdict"]
    assert len(logged.points) == 3 and logged.n_full == logged.points[-1].n_train
    assert (workdir / "curve.png").stat().st_size > 20_000
    assert {"data_curve.png", "data_curve.json"} <= {
        a.path for a in client.list_artifacts(result.parent_run_id)
    }
    assert parent.data.metrics["curve_gain_2x"] == pytest.approx(logged.gain)
    assert parent.data.metrics["curve_backtest_measured"] == pytest.approx(
        logged.points[-1].accuracy
    )
    assert logged.backtest.sentence == check
    trial = client.get_run(curve.choose.table().iloc[0]["run_id"])
    for p in logged.points:
        run = client.get_run(p.run_id)
        assert run.data.tags["mlflow.parentRunId"] == result.parent_run_id
        assert run.data.tags["catdog.sweep_key"] == parent.data.tags["catdog.sweep_key"]
        for key in ("arch", "image_size", "epochs", "lr", "optimizer"):
            assert run.data.params[key] == trial.data.params[key], key


def test_fractions_that_do_not_fit_the_budget_are_skipped_saying_so(tiny_prepared, workdir):
    recipe = curve.Recipe("baseline", {}, image_size=32, epochs=1, batch_size=8)
    c = curve.train_fractions(
        tiny_prepared, recipe, (0.5, 1.0), budget_seconds=1, seconds_per_epoch=60
    )
    assert c.points == [] and len(c.skipped) == 2
    assert c.skipped[0].startswith("skipped 50% (") and "of the budget is left" in c.skipped[0]
    assert "too few fractions ran to draw a curve (0 of 2)" in c.sentence
    assert mlflow.search_runs(search_all_experiments=True).empty, "nothing was trained"


def test_the_curve_benchmark_checks_the_2x_reading_on_its_own_fractions(tiny_prepared, workdir):
    from benchmarks import curve as bench

    out = workdir / "curve.json"
    record = bench.main(
        ["--data", str(tiny_prepared), "--arch", "baseline", "--size", "32", "--epochs", "1"]
        + ["--out", str(out)]
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(record))
    assert [p["fraction"] for p in record["points"]] == [0.25, 0.5, 1.0]
    check = record["backtest"]
    assert check["n_to"] == record["points"][-1]["n_train"] == 2 * check["n_from"]
    assert check["measured"] == pytest.approx(record["points"][-1]["val_accuracy"])
    assert "MLFLOW_TRACKING_URI" not in os.environ, "the environment it found is the one it leaves"
    assert not (workdir / "mlruns").exists(), "its runs went to a throwaway store"


def test_curve_errors_are_one_sentence(workdir):
    assert cli("curve", "--fractions", "1", code=2).output.count("\n") == 1
    assert "no sweep found" in cli("curve", code=2).output


@pytest.mark.real_data
def test_the_curve_on_real_photos(real_data, workdir):
    from catdog.data.prepare import prepare

    for split, n in (("train", 60), ("test", 10)):
        for name in ("cats", "dogs"):
            folder = workdir / "mini" / split / name
            folder.mkdir(parents=True)
            for photo in sorted((real_data / split / name).iterdir())[:n]:
                shutil.copyfile(photo, folder / photo.name)
    root = prepare(workdir / "mini", workdir / "prepared", seed=5).root
    recipe = curve.Recipe("baseline", {}, image_size=48, epochs=2, batch_size=16)
    c = curve.train_fractions(root, recipe, (0.5, 1.0))
    assert [p.fraction for p in c.points] == [0.5, 1.0]
    assert c.points[0].n_train < c.points[1].n_train == c.n_full
    assert c.trend is not None and c.sentence.startswith((curve.HELPS, curve.FLAT))
    for p in c.points:
        run = mlflow.get_run(p.run_id)
        assert p.accuracy == pytest.approx(run.data.metrics["best_val_accuracy"], abs=1e-6)
