"""Sweeps on generated images, read back through MLflow: the run tree, one run per trial,
params and metric histories; sweep files and precedence; resume without duplicates."""

from __future__ import annotations

import json

import mlflow
import pytest

from catdog import sweepfile
from catdog.errors import CatdogError
from catdog.search import sweep

ARCHS = ("baseline", "vgg")


def _cfg(data, **kw):
    base = dict(
        archs=ARCHS, tuner="random", trials=2, epochs=2, image_size=32, batch_size=8, data=str(data)
    )
    base.update(kw)
    return sweepfile.load(None, **base)


def _runs(kind=None, key=None):
    filt = []
    if kind:
        filt.append(f"tags.`catdog.kind` = '{kind}'")
    if key:
        filt.append(f"tags.`catdog.sweep_key` = '{key}'")
    return mlflow.search_runs(
        search_all_experiments=True, filter_string=" and ".join(filt), output_format="list"
    )


# Random in the slow suite CI runs; the other two tuners are heavy (`make test-slow` runs them).
@pytest.mark.slow
@pytest.mark.parametrize(
    "tuner",
    [
        "random",
        pytest.param("bayesian", marks=pytest.mark.heavy),
        pytest.param("hyperband", marks=pytest.mark.heavy),
    ],
)
def test_sweep_run_tree_in_mlflow(tiny_prepared, workdir, tuner):
    result = sweep.run(_cfg(tiny_prepared, tuner=tuner))
    client = mlflow.MlflowClient()
    parents = _runs("sweep", result.key)
    assert [p.info.run_id for p in parents] == [result.parent_run_id]
    archs = _runs("arch", result.key)
    assert sorted(r.data.tags["catdog.arch"] for r in archs) == sorted(ARCHS)
    assert all(r.data.tags["mlflow.parentRunId"] == result.parent_run_id for r in archs)
    trials = _runs("trial", result.key)
    by_arch = {a.info.run_id: a.data.tags["catdog.arch"] for a in archs}
    assert len(trials) == len(ARCHS) * 2, "exactly the budgeted number of trial runs"
    from catdog import models
    from catdog.models import fixed_hyperparameters

    declared = {a: models.get(a).search_space().values for a in ARCHS}
    for t in trials:
        assert t.info.status == "FINISHED"
        assert by_arch[t.data.tags["mlflow.parentRunId"]] == t.data.tags["catdog.arch"]
        assert {"lr", "optimizer", "augment", "arch", "image_size"} <= set(t.data.params)
        own = {
            k: json.loads(v) if k not in ("optimizer", "lr_schedule") else v
            for k, v in t.data.params.items()
            if k in declared[t.data.tags["catdog.arch"]]
        }
        built = models.get(t.data.tags["catdog.arch"]).build(
            fixed_hyperparameters(own), image_size=32
        )
        assert int(t.data.params["param_count"]) == built.count_params(), "this trial's model"
        history = client.get_metric_history(t.info.run_id, "val_accuracy")
        assert len(history) == t.data.metrics["epochs_run"] >= 1
        assert [h.step for h in history] == sorted(h.step for h in history)
        assert len(client.get_metric_history(t.info.run_id, "train_loss")) == len(history)
        rates = [m.value for m in client.get_metric_history(t.info.run_id, "lr")]
        assert len(rates) == len(history), "the rate each epoch trained at"
        if t.data.params["lr_schedule"] == "cosine" and len(rates) > 1:
            assert rates[-1] < rates[0], "the cosine decays"
        artifacts = [a.path for a in client.list_artifacts(t.info.run_id, "plots")]
        assert "plots/learning_curves.png" in artifacts
    for arch_run in archs:
        best = [
            t
            for t in trials
            if t.data.tags.get("catdog.best_trial") == "true"
            and t.data.tags["catdog.arch"] == arch_run.data.tags["catdog.arch"]
        ]
        assert len(best) == 1, "one best trial tagged per architecture"
        assert mlflow.search_logged_models(
            filter_string=f"source_run_id = '{best[0].info.run_id}'",
            experiment_ids=[best[0].info.experiment_id],
            output_format="list",
        ), "the best trial has a model"
        space = json.loads(
            client.download_artifacts(arch_run.info.run_id, "search_space.json", str(workdir))
            and open(workdir / "search_space.json").read()
        )
        assert {"lr", "optimizer"} <= {h["config"]["name"] for h in space["space"]}
    parent_files = [a.path for a in client.list_artifacts(result.parent_run_id)]
    assert {
        "comparison.csv",
        "comparison.png",
        "sweep_config.json",
        "plan.json",
        "anytime.png",
    } <= set(parent_files)
    finals = _runs("final", result.key)
    assert len(finals) == 1 and finals[0].data.tags["mlflow.parentRunId"] == result.parent_run_id
    assert result.final["run_id"] == finals[0].info.run_id
    assert finals[0].data.tags["catdog.source_run_id"] in {t.info.run_id for t in trials}
    assert all(r.info.status == "FINISHED" for r in _runs())


@pytest.mark.slow
@pytest.mark.heavy
def test_rerun_resumes_without_duplicates_and_fresh_starts_over(tiny_prepared, workdir):
    cfg = _cfg(tiny_prepared, archs=("baseline",), trials=2)
    first = sweep.run(cfg)
    again = sweep.run(cfg)
    assert again.parent_run_id == first.parent_run_id
    trials = _runs("trial", first.key)
    assert sorted(t.data.tags["catdog.trial_id"] for t in trials) == ["0", "1"]
    fresh = sweep.run(cfg, fresh=True)
    assert fresh.parent_run_id != first.parent_run_id
    assert len(_runs("trial", first.key)) == 2  # the fresh sweep's own two trials
    assert not [r for r in _runs() if r.info.status == "RUNNING"]


def _optimistic_speeds(monkeypatch):
    """The plan believes every epoch takes 0.1 s and every trial 0.5 s more: the budget then
    holds several trials, and the real, slower ones meet it between trials."""
    from catdog import speed

    monkeypatch.setattr(speed, "measure", lambda *a, **k: (0.1, 0.5))


def test_budget_stops_between_trials(tiny_prepared, workdir, monkeypatch):
    _optimistic_speeds(monkeypatch)
    result = sweep.run(_cfg(tiny_prepared, trials=5, budget="20s", final_fit=False))
    assert result.stopped_early and "budget is used up" in result.stopped_early
    assert len(_runs("trial", result.key)) < 10, "the limit is checked before each new trial"
    archs = _runs("arch", result.key)
    assert sorted(r.data.tags["catdog.arch"] for r in archs) == sorted(ARCHS), (
        "every architecture still gets its turn"
    )
    assert all(r.data.tags.get("catdog.time_limited") == "true" for r in archs)
    assert all(r.info.status == "FINISHED" for r in _runs())


def test_sweep_file_precedence_and_narrowing(tmp_path):
    f = tmp_path / "exp.toml"
    f.write_text(
        'archs = ["vgg"]\ntrials = 3\nepochs = 4\n'
        '[hp]\naugment = 0.0\nlr = {min = 0.0005, max = 0.002, sampling = "log"}\n'
        "[hp.vgg]\nwidth = [16, 32]\n"
    )
    cfg = sweepfile.load(f, epochs=7, trials=None)
    assert cfg.name == "exp" and cfg.archs == ("vgg",)
    assert cfg.epochs == 7, "command line wins over the file"
    assert cfg.trials == 3, "an unset option never overrides the file"
    assert cfg.image_size == 128, "unstated keys keep the defaults"
    import keras_tuner as kt

    from catdog import models

    declared = models.get("vgg").search_space().values
    hp = kt.HyperParameters()
    sweepfile.apply_hp(hp, cfg.hp_for("vgg", declared), declared)
    models.get("vgg").build(hp, image_size=32)
    assert hp.values["augment"] == 0.0
    assert [h for h in hp.space if h.name == "width"][0].values == [16, 32]
    assert 0.0005 <= hp.values["lr"] <= 0.002
    declared_base = models.get("baseline").search_space().values
    assert "width" not in sweepfile.load(f).hp_for("baseline", declared_base)


@pytest.mark.parametrize(
    "text,needle",
    [
        ('tuner = "grid"\n', "unknown tuner"),
        ('archs = ["alexnet"]\n', "known architectures"),
        ("trails = 3\n", "unknown key"),
        ("repeats = 1\n", "at least 2"),
        ("[hp.vgg]\nwidht = [1, 2]\n", "not in this architecture's search space"),
    ],
)
def test_bad_sweep_files_are_one_clear_error(tmp_path, text, needle):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(CatdogError, match=needle):
        cfg = sweepfile.load(f)
        from catdog import models

        for arch in cfg.archs:
            declared = models.get(arch).search_space().values
            import keras_tuner as kt

            sweepfile.apply_hp(kt.HyperParameters(), cfg.hp_for(arch, declared), declared)


def test_shipped_sweep_files_load():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "experiments"
    names = {p.stem for p in root.glob("*.toml")}
    assert {"quick", "default", "gpu"} <= names
    for p in root.glob("*.toml"):
        sweepfile.load(p)


@pytest.mark.slow
@pytest.mark.heavy
def test_repeats_give_mean_std_and_ci_and_resume_without_duplicates(tiny_prepared, workdir):
    from catdog import choose, compare

    cfg = _cfg(tiny_prepared, archs=("baseline", "bn_dropout"), trials=1, repeats=2)
    result = sweep.run(cfg)
    client = mlflow.MlflowClient()
    repeats = _runs("repeat", result.key)
    assert sorted((r.data.tags["catdog.arch"], r.data.tags["catdog.repeat"]) for r in repeats) == [
        ("baseline", "0"),
        ("baseline", "1"),
        ("bn_dropout", "0"),
        ("bn_dropout", "1"),
    ]
    arch_runs = {r.data.tags["catdog.arch"]: r for r in _runs("arch", result.key)}
    for r in repeats:
        assert r.info.status == "FINISHED" and r.data.tags["catdog.fit_verdict"]
        arch = r.data.tags["catdog.arch"]
        assert r.data.tags["mlflow.parentRunId"] == arch_runs[arch].info.run_id
        assert len(client.get_metric_history(r.info.run_id, "val_accuracy")) >= 1
    for arch, run in arch_runs.items():
        m = client.get_run(run.info.run_id).data.metrics
        mine = [
            r.data.metrics["best_val_accuracy"]
            for r in repeats
            if r.data.tags["catdog.arch"] == arch
        ]
        assert m["best_val_accuracy_mean"] == pytest.approx(sum(mine) / 2)
        assert "best_val_accuracy_std" in m and m["repeats"] == 2

    table = choose.table()
    assert table.attrs["ranked_by"] == "mean of repeats"
    assert list(table["repeats"]) == [2, 2]
    assert table.iloc[0]["val_accuracy_mean"] >= table.iloc[1]["val_accuracy_mean"]
    assert (
        table.iloc[0]["ci95_low"]
        <= table.iloc[0]["val_accuracy_mean"]
        <= table.iloc[0]["ci95_high"]
    )
    assert list(table["vs_top"])[0] == "top" and table["vs_top"].iloc[1] in (
        "within noise",
        "behind",
    )
    assert all(v != "-" for v in table["fit_verdict"])
    text = compare.render(table, "table")
    assert "±" in text and "95% CI" in text

    again = sweep.run(cfg)
    assert again.parent_run_id == result.parent_run_id
    assert len(_runs("repeat", result.key)) == 4, "resuming does not repeat the repeats"
    best = [r for r in _runs(key=result.key) if r.data.tags.get("catdog.best_trial") == "true"]
    assert sorted(r.data.tags["catdog.kind"] for r in best) == ["trial", "trial"], (
        "a repeat of the best configuration is never taken for the best trial"
    )


def test_dry_run_prints_the_plan_and_records_nothing(tiny_prepared, workdir, logs):
    from click.testing import CliRunner

    from catdog.cli import main

    result = CliRunner().invoke(
        main,
        [
            "sweep",
            "--data",
            str(tiny_prepared),
            "--arch",
            "baseline",
            "--max-trials",
            "3",
            "--epochs",
            "2",
            "--image-size",
            "32",
            "--budget",
            "10m",
            "--dry-run",
        ],
    )
    assert result.exit_code == 0, (result.output, result.exception)
    assert "dry run" in result.output
    plan_text = "\n".join(r.getMessage() for r in logs.records if "plan:" in r.getMessage())
    assert "baseline" in plan_text and "final fit" in plan_text and "budget 10m00s" in plan_text
    assert not _runs(), "no run is created before the plan is accepted"


@pytest.mark.slow  # a whole sweep, with MLflow's logging: 40 s on 2 cores
def test_a_dry_runs_plan_is_not_resumed_by_the_real_sweep(tiny_prepared, workdir, logs):
    """Nothing ran under a dry run's plan, so the real sweep plans again (on what the machine
    does now); a plan a sweep did start under is resumed."""
    cfg = _cfg(tiny_prepared, archs=("baseline",), trials=1, epochs=1, final_fit=False)

    def plans():  # how each run's plan was announced: "the plan:" or "resumed plan:"
        said = {
            r.getMessage().split(" plan:")[0] for r in logs.records if " plan:\n" in r.getMessage()
        }
        logs.clear()
        return said

    dry = sweep.run(cfg, dry_run=True)
    assert not dry.started and plans() == {"the"}
    real = sweep.run(cfg)
    assert real.started and plans() == {"the"}, "the real sweep measures and plans again"
    sweep.run(cfg)
    assert plans() == {"resumed"}, "a sweep that started under its plan keeps it"


def test_sweep_register_flag_registers_this_sweeps_champion(tiny_prepared, workdir):
    from click.testing import CliRunner

    from catdog.cli import main

    result = CliRunner().invoke(
        main,
        [
            "sweep",
            "--data",
            str(tiny_prepared),
            "--arch",
            "baseline",
            "--max-trials",
            "1",
            "--epochs",
            "1",
            "--image-size",
            "32",
            "--register",
        ],
    )
    assert result.exit_code == 0, (result.output, result.exception)
    final = json.loads(result.stdout)["final_fit"]
    version = mlflow.MlflowClient().get_model_version_by_alias("catdog", "champion")
    assert version.tags["catdog.run_id"] == final["run_id"], "the final fit is what ships"
    assert "registered catdog version 1" in result.stderr
