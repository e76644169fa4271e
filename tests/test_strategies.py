"""Strategies are plug-ins: a strategy defined in one small file (tests/strategy_defaults.py: its
plan and what it trains, no wiring) and one registry line runs end to end through the plan, the
search, the comparison, the final fit and the registration, with nothing else in catdog
changed."""

from __future__ import annotations

import json

import pytest

from catdog import compare, sweepfile
from catdog.errors import CatdogError
from catdog.search import strategies
from catdog.search.strategies.base import Strategy
from tests.strategy_defaults import Defaults


@pytest.fixture
def defaults_strategy():
    strategies.register(Defaults)  # the one registry line
    yield strategies.get("defaults")
    strategies.unregister("defaults")


@pytest.mark.slow
def test_a_strategy_in_one_class_runs_plan_search_compare_final_fit_and_register(
    defaults_strategy, tiny_prepared, workdir, logs
):
    from catdog import choose
    from catdog.register import register
    from catdog.search import sweep
    from catdog.tracking import runlog

    cfg = sweepfile.load(
        None,
        archs=("baseline", "resnet"),
        tuner="random",
        trials=3,
        epochs=2,
        image_size=32,
        batch_size=8,
        strategy="defaults",
        data=str(tiny_prepared),
        budget="30m",
    )
    result = sweep.run(cfg)

    parent = runlog.get(result.parent_run_id)
    assert parent.data.params["search_strategy"] == "defaults"
    assert set(result.archs) == {"baseline", "resnet"}
    table = choose.table(result.parent_run_id)
    assert list(table["trials"]) == [1, 1], "one trial per architecture"
    assert table.attrs["strategy"] == "defaults"
    assert result.final is not None and result.final["arch"] == table.iloc[0]["arch"]
    assert json.loads(compare.render(table, "json"))["rows"][0]["arch"] == table.iloc[0]["arch"]
    assert strategies.note("defaults") == Defaults.note

    registered = register(result.parent_run_id)
    assert registered.arch == table.iloc[0]["arch"]
    assert registered.run_id == result.final["run_id"], "the final fit is what ships"
    assert registered.test["accuracy"] == pytest.approx(result.final["test_accuracy"]), (
        "register tests the final fit on the same photos the sweep did"
    )


def test_an_unknown_strategy_is_one_sentence_naming_the_known_ones():
    cfg = sweepfile.load(None, archs=("baseline",), strategy="fastest")
    with pytest.raises(
        CatdogError,
        match=r"unknown strategy 'fastest'; choose one of best, compare, focus$",
    ):
        strategies.validate(cfg)


def test_a_strategy_name_is_registered_once():
    class Again(Strategy):
        name = "compare"

    with pytest.raises(CatdogError, match="registered twice"):
        strategies.register(Again)


@pytest.mark.slow
def test_focus_screens_then_fits_the_winner_long_and_progressively_resized(
    tiny_prepared, workdir, logs
):
    from catdog import choose
    from catdog.search import sweep
    from catdog.tracking import runlog

    cfg = sweepfile.load(
        None,
        archs=("resnet", "xception"),
        tuner="random",
        trials=1,
        epochs=1,
        image_size=64,
        image_sizes=[64, 72],
        batch_size=8,
        strategy="focus",
        data=str(tiny_prepared),
        hp={"width": 16, "lr_schedule": "cosine"},
    )
    result = sweep.run(cfg)
    assert result.final is None, "focus ships its validated long fit, not a train+val refit"
    table = choose.table(result.parent_run_id)
    long_run = runlog.get(result.archs[table.iloc[0]["arch"]]["run_id"])
    assert long_run.data.tags["catdog.trial_id"] == "long"
    assert long_run.data.params["phases"].startswith("4@64px"), "half of 8 epochs at 64 px"
    assert "4@72px" in long_run.data.params["phases"], "the rest at the larger size"
    scores = runlog.history(long_run.info.run_id, "val_accuracy")
    assert [step for step, _ in scores] == list(range(8)), (
        "one history across the phases, every epoch validated"
    )
    best_epoch = max(range(8), key=lambda e: (scores[e][1], -e))
    assert long_run.data.params["image_size"] == ("64" if best_epoch < 4 else "72"), (
        "the model kept is the best epoch's, at the size it was validated at"
    )
    m = long_run.data.metrics
    if m["val_accuracy_tta"] >= m["val_accuracy_plain"]:
        assert long_run.data.tags["catdog.tta"] == "true", "TTA no worse on validation: kept"
    else:  # worse: dropped only beyond chance (focus.tta.keep_tta), which the log line names
        kept = long_run.data.tags["catdog.tta"] == "true"
        assert ("flip TTA kept" if kept else "worse beyond chance") in logs.text
    assert m["best_val_accuracy"] == pytest.approx(m["val_accuracy_plain"], abs=1e-6), (
        "the logged best score is the kept model's own score on validation"
    )
    assert "long fit done" in logs.text
    measured = [r.getMessage() for r in logs.records if "measured:" in r.getMessage()]
    assert not [m for m in measured if "at 72px" in m], (
        "without a budget the long fit's length is epochs: no finish size is measured (under a "
        "budget only the winner is: test_focus.py)"
    )
    import mlflow

    assert not [
        r
        for r in mlflow.search_runs(search_all_experiments=True, output_format="list")
        if r.info.status == "RUNNING"
    ], "the reopened architecture run ends too"


def test_the_long_fits_clock_keeps_to_its_time():
    import time

    import keras
    import numpy as np

    from catdog.search.strategies.focus.checkpoint import Clock

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    start = time.monotonic()
    clock = Clock(0.1, 1.0, 10, start, seconds=1000.0, end=start)
    model.fit(np.zeros((4, 2)), np.zeros((4, 1)), epochs=50, verbose=0, callbacks=[clock])
    assert len(clock.durations) == 1, "it stops once the next epoch would end past its time"
    assert float(model.optimizer.learning_rate) == pytest.approx(0.1, rel=1e-2), (
        "hardly any of its time has passed: the rate is at the cosine's start"
    )
    late = Clock(0.1, 0.5, 10, start - 1000.0, seconds=1000.0, end=None)
    model.fit(np.zeros((4, 2)), np.zeros((4, 1)), epochs=1, verbose=0, callbacks=[late])
    assert float(model.optimizer.learning_rate) == pytest.approx(0.1 * 0.01 * 0.5, rel=1e-2), (
        "at the end of its time the rate is the cosine's floor, times the phase's scale"
    )
