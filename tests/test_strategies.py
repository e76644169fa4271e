"""Strategies are plug-ins: a strategy defined here, in one class and one registry line, runs end
to end through the plan, the search, the comparison, the final fit and the registration, with
nothing else in catdog changed."""

from __future__ import annotations

import json

import pytest

from catdog import compare, sweepfile
from catdog.errors import CatdogError
from catdog.search import records, strategies
from catdog.search.strategies.base import Strategy


class Defaults(Strategy):
    """One trial per architecture at its builder's defaults: the cheapest honest baseline."""

    name = "defaults"
    note = "one trial per architecture at its defaults: a baseline, not a search"

    def plan(self, cfg, splits_at, spaces, spent):
        from catdog import plan, speed

        splits = splits_at(cfg.image_size)
        speeds = {arch: speed.measure(arch, splits, cfg.image_size, {}, cfg.pretrained,
                                     cfg.batch_size) for arch in cfg.archs}
        return plan.make_plan(speeds, trials=1, epochs=cfg.epochs, budget=cfg.budget_seconds,
                              repeats=0, final_fit=cfg.final_fit, measured_seconds=spent)

    def search(self, ctx, spaces, state_dir):
        import keras_tuner as kt

        from catdog import models
        from catdog.search import tuner as tuning

        results = {}
        for arch in ctx.cfg.archs:
            run_id = records.arch_run(ctx, arch)
            entry = models.get(arch)
            fixed = kt.HyperParameters()
            for name, value in entry.search_space(ctx.cfg.image_size).values.items():
                fixed.Fixed(name, value)
            tuner = tuning.TrackedRandomSearch(
                hypermodel=tuning.ArchHyperModel(entry, ctx.cfg.image_size, False,
                                                 ctx.epochs_for(arch)),
                objective=tuning.objective(), max_trials=1, hyperparameters=fixed,
                tune_new_entries=False, directory=str(state_dir), project_name=arch,
                seed=ctx.cfg.seed)
            tuner.ctx, tuner.arch, tuner.arch_runs = ctx, arch, {arch: run_id}
            tuner.search(ctx.splits.train, validation_data=ctx.splits.val,
                         epochs=ctx.epochs_for(arch), verbose=0)
            best = tuner.oracle.get_best_trials(1)
            results[arch] = records.finish_arch(ctx, best[0] if best else None, "{}", run_id,
                                                arch)
            from catdog.tracking import runlog

            runlog.finish(run_id)
        return results, None


@pytest.fixture
def defaults_strategy():
    strategies.register(Defaults)  # the one registry line
    yield strategies.get("defaults")
    strategies.unregister("defaults")


def test_a_strategy_in_one_class_runs_plan_search_compare_final_fit_and_register(
        defaults_strategy, tiny_prepared, workdir, logs):
    from catdog import choose
    from catdog.register import register
    from catdog.search import sweep
    from catdog.tracking import runlog

    cfg = sweepfile.load(None, archs=("baseline", "resnet"), tuner="random", trials=3,
                         epochs=2, image_size=32, batch_size=8, strategy="defaults",
                         data=str(tiny_prepared), budget="30m")
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
    assert 0.0 <= registered.test["accuracy"] <= 1.0


def test_an_unknown_strategy_is_one_sentence_naming_the_known_ones():
    cfg = sweepfile.load(None, archs=("baseline",), strategy="fastest")
    with pytest.raises(CatdogError, match=r"unknown strategy 'fastest'; choose one of compare, "
                                          r"best"):
        strategies.validate(cfg)


def test_a_strategy_name_is_registered_once():
    class Again(Strategy):
        name = "compare"

    with pytest.raises(CatdogError, match="registered twice"):
        strategies.register(Again)


@pytest.mark.slow
def test_focus_screens_then_fits_the_winner_long_and_progressively_resized(tiny_prepared,
                                                                           workdir, logs):
    from catdog import choose
    from catdog.search import sweep
    from catdog.tracking import runlog

    cfg = sweepfile.load(None, archs=("resnet", "xception"), tuner="random", trials=1,
                         epochs=1, image_size=64, image_sizes=[64, 72], batch_size=8,
                         strategy="focus", data=str(tiny_prepared),
                         hp={"width": 16, "lr_schedule": "cosine"})
    result = sweep.run(cfg)
    assert result.final is None, "focus ships its validated long fit, not a train+val refit"
    table = choose.table(result.parent_run_id)
    long_run = runlog.get(result.archs[table.iloc[0]["arch"]]["run_id"])
    assert long_run.data.tags["catdog.trial_id"] == "long"
    assert long_run.data.params["image_size"] == "72", "it finishes at the larger size"
    assert long_run.data.params["phases"].startswith("4@64px"), "half of 8 epochs at 64 px"
    epochs = [step for step, _ in runlog.history(long_run.info.run_id, "val_accuracy")]
    assert epochs == list(range(8)), "one history across the phases, every epoch validated"
    assert long_run.data.tags["catdog.tta"] in ("true", "false")
    assert {"val_accuracy_plain", "val_accuracy_tta"} <= set(long_run.data.metrics)
    assert "long fit done" in logs.text
    winner = table.iloc[0]["arch"]
    measured = [r.getMessage() for r in logs.records if "measured:" in r.getMessage()]
    assert [m for m in measured if m.startswith(f"[{winner}]") and "at 72px" in m], \
        "the winner is measured at its finish size before its long fit"
    assert not [m for m in measured if "at 72px" in m and not m.startswith(f"[{winner}]")], \
        "and only the winner"
    import mlflow

    assert not [r for r in mlflow.search_runs(search_all_experiments=True, output_format="list")
                if r.info.status == "RUNNING"], "the reopened architecture run ends too"


def test_the_long_fits_clock_keeps_to_its_time():
    import time

    import keras
    import numpy as np

    from catdog.search.longfit import Clock, cosine

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    start = time.monotonic()
    clock = Clock(cosine(0.1, 10), 1.0, 10, start, seconds=1000.0, end=start)
    model.fit(np.zeros((4, 2)), np.zeros((4, 1)), epochs=50, verbose=0, callbacks=[clock])
    assert len(clock.durations) == 1, "it stops once the next epoch would end past its time"
    assert float(model.optimizer.learning_rate) == pytest.approx(0.1, rel=1e-2), \
        "hardly any of its time has passed: the rate is at the cosine's start"
    late = Clock(cosine(0.1, 10), 0.5, 10, start - 1000.0, seconds=1000.0, end=None)
    model.fit(np.zeros((4, 2)), np.zeros((4, 1)), epochs=1, verbose=0, callbacks=[late])
    assert float(model.optimizer.learning_rate) == pytest.approx(0.1 * 0.01 * 0.5, rel=1e-2), \
        "at the end of its time the rate is the cosine's floor, times the phase's scale"
