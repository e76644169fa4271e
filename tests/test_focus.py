"""The `focus` strategy's parts, each on its own: the plan, the long fit's schedule and phases,
the weights it keeps, carrying the optimizer across sizes, the finish sizes' measurement under
the deadline, and the sweep's progress that a resume restores. The end-to-end runs (three
classes; kill -9 during the long fit) are in the slow suite."""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pytest

from catdog import models, sweepfile
from catdog.search.progress import SweepProgress
from catdog.search.strategies.focus import finish, finish_sizes, longfit, tta
from catdog.search.strategies.focus.plan import FocusPlan, make_plan
from tests.procs import wait_for

CATDOG = Path(__file__).resolve().parents[1] / "catdog"


def _plan(speeds):
    return FocusPlan(
        {},
        600.0,
        0.0,
        0.0,
        0.0,
        long_speeds={"xception": {str(s): v for s, v in speeds.items()}},
        screen_size=96,
    )


def _measuring(monkeypatch, plan, deadline: float, budget: float, speeds: dict):
    """A long fit's context for `measure_finish_sizes`, with `measure` reading SPEEDS (size ->
    seconds per epoch); the sizes it measured, in order."""
    measured = []
    monkeypatch.setattr(
        longfit,
        "measure",
        lambda cfg, arch, splits, size, values, precision: (
            measured.append(size) or (speeds[size], 1.0, precision)
        ),
    )
    ctx = SimpleNamespace(
        plan=plan,
        deadline=deadline,
        progress=SweepProgress(budget=budget),
        cfg=SimpleNamespace(image_size=96, budget_seconds=budget),
        splits_at=lambda s: None,
        precision=lambda a: "fp32",
    )
    return ctx, measured


def test_the_long_fit_finishes_at_the_largest_size_that_holds_its_epochs():
    plan = _plan({96: 10.0, 128: 20.0, 160: 30.0})
    assert finish.long_schedule(plan, "xception", 96, 1000, False) == (160, 50, 25), (
        "at 160 px half the epochs cost 10 s and half 30 s: 50 epochs, 25 of them at 96 px"
    )
    assert finish.long_schedule(plan, "xception", 96, 500, False) == (128, 33, 16), (
        "160 px would hold 25 < 30 epochs; 128 px holds 33"
    )
    assert finish.long_schedule(plan, "xception", 96, 200, False) == (96, 20, 0), (
        "no larger size holds 30 epochs: it stays at the screen's size"
    )
    assert finish.long_schedule(plan, "xception", 96, 1000, True) == (160, 33, 0), (
        "a pretrained model trains at one size throughout: 1000 s / 30 s at 160 px"
    )


def test_a_fit_short_of_half_at_the_next_size_finishes_there_for_fewer_epochs():
    # The seed-1337 sweep of this release: 40 s at 96 px, 81.4 s measured at 128 px, 1,800 s
    # left. Half and half needs 30 x 60.7 = 1,821 s; it stayed at 96 px for 45 epochs.
    plan = _plan({96: 40.0, 128: 81.4, 160: 130.0})
    size, epochs, early = finish.long_schedule(plan, "xception", 96, 1800, False)
    assert (size, epochs, early) == (128, 30, 16), "30 epochs, the last 14 at 128 px"
    assert early * 40.0 + (epochs - early) * 81.4 <= 1800
    assert finish.long_schedule(plan, "xception", 96, 1900, False) == (128, 31, 16), (
        "where half and half holds, it is kept"
    )
    # Less time: fewer epochs at 128 px, down to MIN_FINISH_EPOCHS, then 96 px throughout.
    lates = [30 - finish.long_schedule(plan, "xception", 96, s, False)[2] for s in (1700, 1600)]
    assert lates == [12, 9]
    assert finish.long_schedule(plan, "xception", 96, 1500, False) == (96, 37, 0), (
        "7 epochs at 128 px is under MIN_FINISH_EPOCHS: it stays at the screen's size"
    )
    assert finish.long_schedule(plan, "xception", 96, 1800, True) == (96, 45, 0), (
        "a pretrained fit has no short finish: one size throughout"
    )


def test_a_short_finish_is_measured_at_the_next_size_only(monkeypatch):
    plan = _plan({96: 40.0, 128: 71.1, 160: 111.1})  # 128 and 160 estimated by pixel count
    # 1,800 s left after the reserve of 60 s
    ctx, measured = _measuring(
        monkeypatch, plan, time.monotonic() + 1860, 3000.0, {128: 81.4, 160: 130.0}
    )
    longfit.measure_finish_sizes(ctx, "xception", {}, pretrained=False)
    assert measured == [128], "128 px read too slow for half and half: 160 px is not measured"


def test_a_larger_size_is_not_measured_when_the_one_below_read_slower_than_its_estimate(
    monkeypatch,
):
    # As in a clean-clone sweep: 2,007 s left, 160 px estimated at 93 s by pixel count; 128 px
    # read 67.6 s against an estimate of 60, so 160 px (read 126 s) could not hold half and half.
    plan = _plan({96: 33.6, 128: 60.0, 160: 93.0})
    ctx, measured = _measuring(
        monkeypatch, plan, time.monotonic() + 2067, 3000.0, {128: 67.6, 160: 126.0}
    )
    longfit.measure_finish_sizes(ctx, "xception", {}, pretrained=False)
    assert measured == [128]
    assert plan.long_speeds["xception"]["160"] == pytest.approx(93.0 * 67.6 / 60.0)
    plan = _plan({96: 33.6, 128: 60.0, 160: 93.0})
    ctx, measured = _measuring(
        monkeypatch, plan, time.monotonic() + 2067, 3000.0, {128: 60.0, 160: 126.0}
    )
    longfit.measure_finish_sizes(ctx, "xception", {}, pretrained=False)
    assert measured == [128, 160], "128 px as estimated: 160 px may still hold its epochs"


def test_flip_tta_is_dropped_only_when_worse_beyond_chance():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 800)
    right = np.column_stack([1 - labels, labels]).astype(float) * 0.8 + 0.1  # every photo right

    def wrong_on(start, stop):
        probs = right.copy()
        probs[start:stop] = probs[start:stop, ::-1]
        return probs

    plain = wrong_on(0, 100)  # 0.875, as this release's long fits score
    keep, figures = tta.keep_tta(labels, plain, wrong_on(10, 116))
    assert keep and (figures["plain"], figures["tta"]) == (0.875, 0.8675), (
        "16 photos right only without TTA, 10 only with it: chance, so TTA stays"
    )
    assert figures["disagreements"] == 26 and figures["p_value"] > 0.3
    keep, figures = tta.keep_tta(labels, plain, wrong_on(0, 130))
    assert not keep and figures["p_value"] < 0.05, "30 photos worse, none better: dropped"
    assert tta.keep_tta(labels, plain, wrong_on(0, 90))[0], "better: kept"


def test_phases_share_the_fits_time_as_their_epochs_cost():
    phases = [longfit.Phase(96, 10, {}), longfit.Phase(128, 10, {})]
    ends = longfit.phase_ends({"96": 10.0, "128": 30.0}, phases, 800.0)
    assert ends == pytest.approx([200.0, 800.0])


def test_the_progress_line_counts_the_later_phases_planned_epochs_not_this_ones_pace():
    # The run that prompted it: "about 39 epochs: 20 at 96px, 19 at 128px" was printed as
    # "epoch 1/~56", the 96 px pace over the whole time.
    phases = [longfit.Phase(96, 20, {}), longfit.Phase(128, 19, {})]
    t0 = time.monotonic()
    schedule = longfit.Schedule("xception", {}, "", 39, phases, 2000.0, [700.0, 2000.0])
    assert longfit._epochs_left(schedule, t0, 0)(34.0) == 20 + 19
    assert longfit._epochs_left(schedule, t0, 0)(69.0) == 10 + 19, "a slower phase: fewer"
    assert longfit._epochs_left(schedule, t0 - 1330.0, 1)(70.0) == 9, "the last phase: its time"
    no_budget = longfit.Schedule("xception", {}, "", 39, phases, None, None)
    assert longfit._epochs_left(no_budget, t0, 0) is None


def test_a_long_fits_hyperparameters_read_back_as_the_values_they_were():
    from catdog import choose

    params = {"lr": "0.00175", "width": "16", "optimizer": "adam", "ema": "0.0", "flip": "True"}
    params |= {"image_size": "128", "seed": "7"}  # run settings, not hyperparameters
    assert choose.parsed_hyperparameters(params) == {
        "lr": 0.00175,
        "width": 16,
        "optimizer": "adam",
        "ema": 0.0,
        "flip": True,
    }


def test_phases_from_scratch_pretrained_and_not():
    entry = models.get("transfer")
    frozen, tuned = longfit.phases_for(entry, {}, 96, 128, 40, 0, pretrained=True)
    assert (frozen.epochs, frozen.overrides, tuned.epochs) == (10, {"fine_tune": 0}, 30)
    assert tuned.overrides == {"fine_tune": longfit.FINE_TUNE_LAYERS}
    assert tuned.lr_scale == longfit.FINE_TUNE_SCALE
    scratch = longfit.phases_for(entry, {}, 96, 128, 40, 20, pretrained=False)
    assert [(p.size, p.epochs, p.overrides) for p in scratch] == [(96, 20, {}), (128, 20, {})], (
        "--no-pretrained: a transfer model gets the from-scratch phases, nothing frozen"
    )


def test_models_whose_weights_fit_one_size_stay_at_the_screens_size():
    cfg = sweepfile.load(
        None,
        archs=("baseline", "xception"),
        image_size=96,
        image_sizes=[96, 128, 160],
        strategy="focus",
    )
    assert finish_sizes(cfg, "baseline") == [], "a Flatten head ties the weights to one size"
    assert finish_sizes(cfg, "xception") == [128, 160]


def test_the_focus_plan_names_its_long_fit_and_reads_old_plans():
    cfg = sweepfile.load(
        None,
        archs=("resnet", "xception"),
        trials=3,
        epochs=6,
        image_size=96,
        image_sizes=[96, 128],
        strategy="focus",
        budget="40m",
    )
    plan = make_plan(
        cfg,
        {"resnet": (20.0, 5.0), "xception": (30.0, 5.0)},
        {"resnet": {"96": 20.0}, "xception": {"96": 30.0}},
        60.0,
    )
    assert plan.after_search_seconds == plan.long_seconds > 0
    assert plan.final_seconds == 0
    assert plan.search_seconds <= (2400 - 60) * 0.25 + 1
    text = plan.describe()
    assert "long fit" in text and "final fit" not in text
    assert plan.search_budget == pytest.approx(2400 - 60 - plan.long_seconds)
    again = FocusPlan.from_json(plan.to_json())
    assert again.long_seconds == plan.long_seconds
    raw = json.loads(plan.to_json())
    raw.pop("long_seconds")
    raw["final_seconds"] = 900.0
    legacy = FocusPlan.from_json(json.dumps(raw))
    assert (legacy.long_seconds, legacy.final_seconds) == (900.0, 0.0), (
        "a plan saved when final_seconds held the long fit still resumes"
    )


def test_best_weights_are_kept_across_phases_with_their_size_and_epoch(tmp_path):
    import keras

    from catdog.search.strategies.focus.checkpoint import BestWeights, Checkpoint

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    checkpoint = Checkpoint(tmp_path)
    best = BestWeights(checkpoint)
    best.set_model(model)
    for epoch, (size, score) in enumerate([(96, 0.6), (96, 0.8), (128, 0.7), (128, 0.75)]):
        best.phase_size = size
        model.layers[0].kernel.assign(np.full((2, 1), float(epoch), dtype="float32"))
        best.on_epoch_end(epoch, {"val_accuracy": score})
    assert best.state() == {"score": pytest.approx(0.8), "epoch": 1, "size": 96}, (
        "a 96 px epoch scored best: its weights, size and epoch are what is kept"
    )
    again = BestWeights(checkpoint, best.state())
    assert again.weights is not None and float(again.weights[0][0, 0]) == 1.0, (
        "a resumed fit reads the best weights back from the checkpoint"
    )


def test_resizing_carries_the_weights_and_the_optimizers_state():
    import keras

    from catdog.search.strategies.focus.checkpoint import carry

    hp = models.fixed_hyperparameters({"width": 16})
    small = models.get("xception").build(hp, image_size=32)
    x, y = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)), np.arange(8) % 2
    small.fit(x, y, epochs=1, verbose=0)
    large = models.get("xception").build(models.fixed_hyperparameters({"width": 16}), image_size=48)
    assert carry(small, large) is True
    assert int(large.optimizer.iterations) == int(small.optimizer.iterations) > 0
    for a, b in zip(small.optimizer.variables, large.optimizer.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    fresh = models.get("xception").build(models.fixed_hyperparameters({"width": 16}), image_size=48)
    assert carry(small, fresh, optimizer=False) is False
    assert int(fresh.optimizer.iterations) == 0


def test_finish_sizes_are_not_measured_when_the_time_left_cannot_hold_them(monkeypatch):
    plan = _plan({96: 10.0, 128: 20.0})
    ctx, measured = _measuring(
        monkeypatch, plan, SweepProgress(budget=100.0).deadline, 100.0, {128: 5.0}
    )
    longfit.measure_finish_sizes(ctx, "xception", {}, pretrained=False)
    assert measured == [], "100 s cannot hold 30 epochs at 128 px: measuring would waste them"
    ctx.deadline = time.monotonic() + 10_000
    longfit.measure_finish_sizes(ctx, "xception", {}, pretrained=False)
    assert measured == [128] and plan.long_speeds["xception"]["128"] == 5.0


def test_progress_saves_and_restores_itself_and_the_budget_goes_on(tmp_path):
    progress = SweepProgress.load(tmp_path, budget=600.0)
    progress.begin_search()
    progress.trial_done(12.0, "0", 3.0)
    progress.trial_done(14.0, "1", 3.5)
    state = progress.get_state()
    assert state["trials_done"] == 2 and state["trial_speeds"] == {"0": 3.0, "1": 3.5}
    again = SweepProgress.load(tmp_path, budget=600.0)
    again.set_state({**again.get_state(), "spent": 400.0})
    assert again.trials_done == 2 and again.speed_of("1") == 3.5
    assert again.mean_trial_seconds() == pytest.approx(13.0)
    assert again.left() == pytest.approx(200.0, abs=1.0), "the budget is the sweep's, not a run's"
    assert again.deadline == pytest.approx(time.monotonic() + 200.0, abs=1.0)
    assert again.searched() >= 0


PROGRESS_FIELDS = {
    "trials_done",
    "trial_seconds",
    "trial_speeds",
    "spent_before",
    "search_began",
    "arch_index",
    "deadline",
    "search_started",
}


def test_only_the_progress_owner_assigns_to_the_sweeps_progress():
    """The sweep's progress has one owner (`catdog/search/progress.py`); everything else asks.
    Any assignment, augmented assignment or mutating call on one of its fields elsewhere fails."""
    offenders = []
    for path in CATDOG.rglob("*.py"):
        if path == CATDOG / "search" / "progress.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("append", "extend", "update", "pop", "clear")
            ):
                targets = [node.func.value]
            for target in targets:
                if isinstance(target, ast.Attribute) and target.attr.lstrip("_") in PROGRESS_FIELDS:
                    offenders.append(f"{path.relative_to(CATDOG.parent)}:{node.lineno}")
    assert not offenders, f"the sweep's progress is written outside its owner: {offenders}"


# --------------------------------------------------------------------------- end to end, slow
@pytest.mark.slow
@pytest.mark.heavy
def test_focus_on_three_classes(tmp_path, workdir, logs):
    from catdog import choose
    from catdog.data.prepare import prepare
    from catdog.search import sweep
    from catdog.tracking import runlog
    from tests.imagegen import write_jpeg

    for c, name in enumerate(("ant", "bee", "wasp")):
        for i in range(14):
            write_jpeg(tmp_path / "raw" / name / f"{i}.jpg", seed=100 * c + i)
    data = prepare(tmp_path / "raw", tmp_path / "prepared").root
    cfg = sweepfile.load(
        None,
        archs=("resnet", "baseline"),
        tuner="random",
        trials=1,
        epochs=1,
        image_size=32,
        image_sizes=[32, 40],
        batch_size=8,
        strategy="focus",
        data=str(data),
        hp={"lr_schedule": "cosine"},
    )
    result = sweep.run(cfg)
    table = choose.table(result.parent_run_id)
    long_run = runlog.get(result.archs[table.iloc[0]["arch"]]["run_id"])
    assert long_run.data.tags["catdog.trial_id"] == "long"
    values = result.archs[table.iloc[0]["arch"]]["hyperparameters"]
    assert values["lr_schedule"] == "cosine" and isinstance(values["lr"], float), "as trained"
    assert "val_auc nan" not in logs.text, "a softmax head has no Keras AUC to print"
    m = long_run.data.metrics
    assert m["best_val_accuracy"] == pytest.approx(m["val_accuracy_plain"], abs=1e-6)
    if table.iloc[0]["arch"] == "baseline":
        assert long_run.data.params["image_size"] == "32", "a Flatten head stays at one size"


SWEEP = """archs = ["resnet", "xception"]
strategy = "focus"
tuner = "random"
trials = 1
epochs = 1
image_size = 32
image_sizes = [32, 40]
batch_size = 4
budget = "150s"

[hp]
width = 16
lr_schedule = "cosine"
whiten = true  # as cpu.toml has it: adapted in the screen's and the long fit's first phase only
"""


def _sweep(workdir, data):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.Popen(
        [sys.executable, "-m", "catdog", "sweep", "exp.toml", "--data", str(data), "--register"],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
def test_kill_9_during_the_long_fit_costs_at_most_an_epoch_and_never_the_budget(
    tiny_prepared, workdir
):
    (workdir / "exp.toml").write_text(SWEEP)
    first = _sweep(workdir, tiny_prepared)
    # Killed once epoch 2 of the long fit is under way (one checkpointed epoch behind it): a
    # machine slow enough to leave the 150 s budget's long fit only a few epochs still gets here.
    seen = wait_for(first, " long] epoch 2/", timeout=400)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
    killed_at = max(
        int(line.split(" long] epoch ")[1].split("/")[0])
        for line in seen
        if " long] epoch " in line
    )
    second = _sweep(workdir, tiny_prepared)
    out = second.communicate(timeout=600)[0]
    assert second.returncode == 0, out[-4000:]
    resumed = [line for line in out.splitlines() if "resuming at epoch" in line]
    assert resumed, out[-4000:]
    at = int(resumed[0].split("resuming at epoch ")[1].split()[0])
    assert killed_at - 1 <= at <= killed_at, (
        f"killed in epoch {killed_at}, resumed at epoch {at}: at most one epoch lost"
    )
    assert "earlier runs of this sweep spent" in out
    assert out.count("] trial 1/1") == 0, "the screen is not run again"
    mlflow.set_tracking_uri(f"sqlite:///{workdir}/mlruns/mlflow.db")
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert not [r for r in runs if r.info.status == "RUNNING"], "no run is left RUNNING"
    parent = next(r for r in runs if r.data.tags.get("catdog.kind") == "sweep")
    assert parent.data.metrics["sweep_seconds"] <= 150 * 1.15, (
        "the sweep's budget clock, over both runs, ends within its budget"
    )
    longs = [r for r in runs if r.data.tags.get("catdog.trial_id") == "long"]
    assert [r.info.status for r in longs] == ["FINISHED"], "one long fit, continued"
    client = mlflow.MlflowClient()
    champions = [
        client.get_model_version_by_alias(m.name, "champion")
        for m in client.search_registered_models()
        if "champion" in m.aliases
    ]
    assert len(champions) == 1 and champions[0].run_id in {r.info.run_id for r in runs}, (
        "one champion is registered"
    )
    from catdog.inference import load_classifier
    from catdog.models.whitening import PatchWhitening

    served = load_classifier(f"models:/{champions[0].name}@champion").model
    (whitening,) = [la for la in served.layers if isinstance(la, PatchWhitening)]
    assert whitening.is_ready, "the champion keeps the filters its long fit was adapted to"
