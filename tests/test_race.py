"""The `best` strategy: a KerasTuner Hyperband race across architectures and image sizes,
planned to the budget, tracked like any sweep, and read back by compare, the final fit and
register."""

from __future__ import annotations

import mlflow
import pytest

from catdog import choose, plan, sweepfile
from catdog.errors import CatdogError
from catdog.search import sweep, tuner
from catdog.search.strategies import best as race

ARCHS = ("baseline", "resnet")
SIZES = [64, 80]


def _cfg(data, **kw):
    base = dict(
        archs=ARCHS,
        tuner="hyperband",
        strategy="best",
        image_sizes=SIZES,
        trials=2,
        epochs=3,
        image_size=64,
        batch_size=8,
        data=str(data),
    )
    base.update(kw)
    return sweepfile.load(None, **base)


def _runs(kind, key):
    return mlflow.search_runs(
        search_all_experiments=True,
        output_format="list",
        filter_string=f"tags.`catdog.kind` = '{kind}' and tags.`catdog.sweep_key` = '{key}'",
    )


@pytest.mark.parametrize(
    "max_epochs,factor", [(3, 3), (9, 3), (24, 3), (27, 3), (40, 3), (32, 4), (10, 2)]
)
def test_bracket_arithmetic_is_keras_tuners(max_epochs, factor):
    import keras_tuner as kt

    oracle = kt.oracles.HyperbandOracle(
        objective=kt.Objective("val_accuracy", "max"), max_epochs=max_epochs, factor=factor
    )
    n = plan.hyperband_brackets(max_epochs, factor)
    assert n == oracle._get_num_brackets()
    for b in range(n):
        assert plan.hyperband_rounds(max_epochs, factor, b) == [
            (oracle._get_size(b, r), oracle._get_epochs(b, r)) for r in range(b + 1)
        ]


SPEEDS = {
    "baseline": {64: (2.0, 10.0), 128: (7.0, 10.0)},
    "resnet": {64: (6.0, 12.0), 128: (21.0, 12.0)},
}


def test_race_plan_fits_its_budget_and_grows_with_it():
    small = plan.make_race_plan(
        SPEEDS, max_epochs=40, factor=3, budget=20 * 60, measured_seconds=60
    )
    big = plan.make_race_plan(SPEEDS, max_epochs=40, factor=3, budget=60 * 60, measured_seconds=60)
    for p in (small, big):
        assert p.total_seconds <= p.budget
        assert p.search_seconds <= p.search_budget
        first = p.brackets[0]
        assert first["bracket"] == plan.hyperband_brackets(p.max_epochs, 3) - 1, (
            "the most exploratory bracket runs first, as in KerasTuner"
        )
        assert first["rounds"][-1][1] == p.max_epochs
    assert small.max_epochs < big.max_epochs <= 40
    assert small.planned_trials >= len(small.brackets[0]["rounds"])
    mean = (2.0 + 7.0 + 6.0 + 21.0) / 4  # costed at the pairs' mean speed
    assert small.final_seconds == pytest.approx(11.0 + small.max_epochs * mean * plan.FINAL_COST)
    unbounded = plan.make_race_plan(SPEEDS, max_epochs=9, factor=3, budget=None)
    assert unbounded.max_epochs == 9 and len(unbounded.brackets) == 3
    again = plan.RacePlan.from_json(small.to_json())
    assert again == small and "bracket" in small.describe() and "128px" in small.describe()


def test_joint_space_scopes_each_family_and_keeps_the_sweep_files_values():
    cfg = sweepfile.load(
        None,
        archs=("baseline", "resnet", "transfer"),
        tuner="hyperband",
        strategy="best",
        image_sizes=[64, 128],
        hp={"lr": 0.001, "resnet": {"width": [16]}},
    )
    joint = race.joint_space(cfg, sweepfile.search_spaces(cfg))
    names = {h.name: h for h in joint.space}
    assert names["arch"].values == ["baseline", "resnet", "transfer"]
    assert names["baseline/image_size"].values == [64, 128]
    assert names["transfer/image_size"].values == [128], "transfer's range starts at 96 px"
    assert type(names["resnet/lr"]).__name__ == "Fixed" and names["resnet/lr"].value == 0.001
    assert names["resnet/width"].values == [16]
    assert "resnet/stages" in names and "baseline/stages" not in names
    assert [c.get_config() for c in names["resnet/stages"].conditions] == [
        {"name": "arch", "values": ["resnet"]}
    ]
    assert tuner.plain(
        {"arch": "resnet", "resnet/lr": 0.1, "baseline/lr": 0.2, "tuner/epochs": 3}
    ) == {"arch": "resnet", "lr": 0.1, "tuner/epochs": 3}


@pytest.mark.parametrize(
    "kw,needle",
    [
        (dict(strategy="fastest"), "unknown strategy"),
        (dict(strategy="best", tuner="random"), "races architectures with Hyperband"),
        (dict(strategy="best", repeats=3), "repeats measure an equal-budget comparison"),
        (
            dict(strategy="compare", image_sizes=[64]),
            "image_sizes is used by the best and focus strategies only",
        ),
        (dict(strategy="best", archs=("transfer",), image_sizes=[64]), "within transfer's range"),
    ],
)
def test_bad_race_settings_are_one_sentence(kw, needle):
    from catdog.search import strategies

    with pytest.raises(CatdogError, match=needle):
        strategies.validate(sweepfile.load(None, **{"tuner": "hyperband", **kw}))


def test_distributed_refuses_a_race_before_starting_anything(tmp_path):
    from catdog.distributed import launch

    f = tmp_path / "race.toml"
    f.write_text('strategy = "best"\ntuner = "hyperband"\narchs = ["baseline"]\n')
    with pytest.raises(CatdogError, match="the best strategy runs on one machine"):
        launch(str(f))


@pytest.mark.slow
@pytest.mark.heavy
def test_race_sweep_is_tracked_compared_and_final_fit_at_the_winners_size(
    tiny_prepared, workdir, recwarn
):
    result = sweep.run(_cfg(tiny_prepared))
    client = mlflow.MlflowClient()
    parent = client.get_run(result.parent_run_id)
    assert parent.data.params["search_strategy"] == "best"
    assert parent.data.params["image_sizes"] == "64,80"
    archs = {r.info.run_id: r.data.tags["catdog.arch"] for r in _runs("arch", result.key)}
    assert sorted(archs.values()) == sorted(ARCHS)
    trials = _runs("trial", result.key)
    # R = 3, factor 3: brackets of 3 x 1 epoch -> 1 x 3, then 2 x 3: 6 trials.
    assert len(trials) == 6 == int(parent.data.metrics["planned_trials"])
    for t in trials:
        assert t.info.status == "FINISHED"
        arch = t.data.params["arch"]
        assert archs[t.data.tags["mlflow.parentRunId"]] == arch == t.data.tags["catdog.arch"]
        assert int(t.data.params["image_size"]) in SIZES
        assert not [k for k in t.data.params if "/" in k and not k.startswith("tuner/")], (
            "the builder's names, as in compare"
        )
    promoted = [t for t in trials if int(t.data.params["tuner/initial_epoch"]) > 0]
    assert len(promoted) == 1, "bracket 1 promotes its best configuration to 3 epochs"
    first = client.get_metric_history(promoted[0].info.run_id, "val_accuracy")
    assert min(m.step for m in first) == 1, "it continues from epoch 1, where it stopped"
    assert not [
        w for w in recwarn if "Skipping variable loading for optimizer" in str(w.message)
    ], "the promoted model continues with its optimizer state"
    table = choose.table(result.parent_run_id)
    assert table.attrs["strategy"] == "best"
    assert set(table["image_size"]) <= set(SIZES)
    final = client.get_run(result.final["run_id"])
    source = client.get_run(final.data.tags["catdog.source_run_id"])
    assert final.data.params["image_size"] == source.data.params["image_size"]
    assert final.data.params["arch"] == table.iloc[0]["arch"]
    assert "test_accuracy" in final.data.metrics
    files = {a.path for a in client.list_artifacts(result.parent_run_id)}
    assert {"plan.json", "anytime.png", "comparison.csv"} <= files
    running = [
        r
        for r in mlflow.search_runs(search_all_experiments=True, output_format="list")
        if r.info.status == "RUNNING"
    ]
    assert not running


def test_a_budget_that_cannot_hold_one_trial_is_refused_naming_one_that_would(
    tiny_prepared, workdir
):
    cfg = _cfg(tiny_prepared, budget="1s", final_fit=False, archs=("baseline",), image_sizes=[64])
    with pytest.raises(
        CatdogError,
        match=r"a budget of 1s cannot hold one trial here .* give "
        r"it at least --budget \d+m",
    ):
        sweep.run(cfg)
    assert not mlflow.search_runs(search_all_experiments=True, output_format="list"), (
        "refused before any run was opened"
    )


def test_race_stops_at_its_budget_cleanly(tiny_prepared, workdir, monkeypatch):
    from catdog import speed

    monkeypatch.setattr(speed, "measure", lambda *a, **k: (0.1, 0.5))  # an optimistic plan
    result = sweep.run(
        _cfg(tiny_prepared, budget="15s", final_fit=False, archs=("baseline",), image_sizes=[64])
    )
    assert result.stopped_early and "race's share" in result.stopped_early
    client = mlflow.MlflowClient()
    parent = client.get_run(result.parent_run_id)
    assert parent.data.tags.get("catdog.time_limited") == "true"
    assert parent.info.status == "FINISHED"
    assert all(r.info.status == "FINISHED" for r in _runs("arch", result.key))
    trials = _runs("trial", result.key)
    assert all(t.info.status == "FINISHED" for t in trials), (
        "the race stopped before a trial, never inside one"
    )


@pytest.mark.slow
def test_a_race_stopped_by_its_budget_resumes_without_duplicates(
    tiny_prepared, workdir, monkeypatch
):
    from catdog import speed

    with monkeypatch.context() as patched:
        patched.setattr(speed, "measure", lambda *a, **k: (0.1, 0.5))  # an optimistic plan
        stopped = sweep.run(_cfg(tiny_prepared, budget="15s", final_fit=False))
    assert stopped.stopped_early and len(_runs("trial", stopped.key)) < 6
    done = sweep.run(_cfg(tiny_prepared, final_fit=False))  # the budget is not in the key
    assert done.parent_run_id == stopped.parent_run_id and not done.stopped_early
    trials = _runs("trial", done.key)
    ids = [t.data.tags["catdog.trial_id"] for t in trials]
    assert len(ids) == len(set(ids)) == 6, "the interrupted trial ran once, with the others"
    again = sweep.run(_cfg(tiny_prepared, final_fit=False))
    assert len(_runs("trial", again.key)) == 6, "a finished race is not run again"
    running = [
        r
        for r in mlflow.search_runs(search_all_experiments=True, output_format="list")
        if r.info.status == "RUNNING"
    ]
    assert not running
