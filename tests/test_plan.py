"""Budget first: durations, and plans that fit the budget whatever the architectures' speeds."""

from __future__ import annotations

import pytest

from catdog import plan, speed
from catdog.errors import CatdogError


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("45m", 2700),
        ("2h", 7200),
        ("1h30m", 5400),
        ("90s", 90),
        (30, 1800),
        (0.5, 30),
        (None, None),
    ],
)
def test_budgets_are_durations(text, seconds):
    assert plan.parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["an hour", "45", "-5m", "0m", "m", True])
def test_a_budget_that_is_not_a_duration_is_refused(text):
    with pytest.raises(CatdogError, match="budget"):
        plan.parse_budget(text)


SPEEDS = {"fast": (10.0, 8.0), "medium": (30.0, 10.0), "slow": (90.0, 12.0)}


@pytest.mark.parametrize("budget", [600, 2700, 7200, 36000])
def test_a_plan_fits_its_budget(budget):
    p = plan.make_plan(SPEEDS, trials=10, epochs=20, budget=budget, repeats=0, measured_seconds=60)
    assert p.total_seconds <= budget
    assert all(a.trials >= 1 and a.epochs >= 1 for a in p.archs.values())
    assert p.search_budget == pytest.approx(budget - 60 - p.final_seconds)


def test_a_tight_budget_gives_fewer_trials_and_caps_slow_architectures_epochs():
    p = plan.make_plan(SPEEDS, trials=10, epochs=20, budget=2700, repeats=0)
    fast, slow = p.archs["fast"], p.archs["slow"]
    assert fast.epochs == 20 and 1 <= fast.trials < 10
    # The final fit gets a quarter of the budget (n + 1 shares): slow's final fit must fit it.
    assert slow.epochs < 20
    assert slow.trial_overhead + slow.epochs * slow.seconds_per_epoch * plan.FINAL_COST <= 675
    assert p.final_seconds <= 675


def test_without_a_budget_every_architecture_gets_what_the_file_asks():
    p = plan.make_plan(SPEEDS, trials=4, epochs=12, budget=None, repeats=2)
    assert {(a.trials, a.epochs) for a in p.archs.values()} == {(4, 12)}
    assert p.repeats_seconds == pytest.approx(sum(2 * (o + 12 * s) for s, o in SPEEDS.values()))
    assert "estimated" in p.describe() and "repeats" in p.describe()


def test_repeats_are_paid_for_inside_the_budget():
    without = plan.make_plan(SPEEDS, trials=10, epochs=10, budget=7200, repeats=0)
    with_repeats = plan.make_plan(SPEEDS, trials=10, epochs=10, budget=7200, repeats=3)
    assert with_repeats.total_seconds <= 7200
    assert sum(a.trials for a in with_repeats.archs.values()) < sum(
        a.trials for a in without.archs.values()
    )


def test_a_saved_plan_is_reused_and_an_unreadable_one_replaced(tmp_path):
    made = []

    def make():
        made.append(1)
        return plan.make_plan(SPEEDS, trials=3, epochs=5, budget=900, repeats=0)

    path = tmp_path / "plan.json"
    first, resumed = plan.load_or_make(path, make)
    assert not resumed and path.is_file()
    again, resumed = plan.load_or_make(path, make)
    assert resumed and again == first and len(made) == 1
    path.write_text("{not json")
    _, resumed = plan.load_or_make(path, make)
    assert not resumed and len(made) == 2


# ----------------------------------------------------------- precision = "auto": measured per arch
def _policy_speeds(monkeypatch, bf16_seconds: float):
    """`measure` that reads the dtype policy it is timed under: fp32 10 s an epoch, bf16 as
    given (the real measurement trains a few batches; its choice is what is tested here)."""
    import keras

    seen = []

    def fake(arch, splits, size, values, pretrained, batch_size, seconds=None):
        assert seconds == speed.PRECISION_TIMED_SECONDS, "two precisions: longer readings"
        name = keras.mixed_precision.global_policy().name
        seen.append(name)
        return (bf16_seconds if name == "mixed_bfloat16" else 10.0, 5.0)

    monkeypatch.setattr(speed, "measure", fake)
    return seen


@pytest.mark.parametrize("bf16_seconds, chosen", [(5.0, "bf16"), (9.5, "fp32"), (12.0, "fp32")])
def test_auto_keeps_bf16_only_where_it_trains_faster(monkeypatch, bf16_seconds, chosen):
    import keras

    seen = _policy_speeds(monkeypatch, bf16_seconds)
    per_epoch, overhead, precision = speed.measure_fastest(
        "resnet", None, 96, {}, False, 32, ("fp32", "bf16")
    )
    first = ["float32", "mixed_bfloat16"]
    assert seen == (first + first[::-1] if chosen == "bf16" else first), (
        "both timed, each under its own policy; a bf16 lead checked in the other order"
    )
    assert precision == chosen
    assert per_epoch == (bf16_seconds if chosen == "bf16" else 10.0) and overhead == 5.0
    assert keras.mixed_precision.global_policy().name == "float32", "fp32 again afterwards"


def test_a_bf16_lead_that_comes_from_the_order_of_measuring_is_not_taken(monkeypatch):
    import keras

    readings = iter([20.0, 10.0, 10.0, 10.0])  # fp32 first is slow, then both alike

    def fake(arch, splits, size, values, pretrained, batch_size, seconds=None):
        return (next(readings), 5.0)

    monkeypatch.setattr(speed, "measure", fake)
    per_epoch, _, precision = speed.measure_fastest(
        "resnet", None, 96, {}, False, 32, ("fp32", "bf16")
    )
    assert precision == "fp32" and per_epoch == 10.0
    assert keras.mixed_precision.global_policy().name == "float32"


@pytest.mark.parametrize(
    "readings, chosen",
    [
        ((10.0, 8.0, 8.0, 10.0), "bf16"),  # 1.25x, then 1.25x in the other order
        ((10.0, 8.0, 9.5, 10.0), "fp32"),  # 1.25x, then 1.05x: the lead does not hold
        ((10.0, 9.5), "fp32"),  # 1.05x: below 1.1x, not read again
        ((10.0, 9.0, 8.0, 8.9), "bf16"),  # exactly 1.11x twice
    ],
)
def test_bf16_is_taken_only_when_its_lead_holds_in_both_orders(monkeypatch, readings, chosen):
    import keras

    seen, left = [], list(readings)

    def fake(arch, splits, size, values, pretrained, batch_size, seconds=None):
        seen.append(keras.mixed_precision.global_policy().name)
        return (left.pop(0), 5.0)

    monkeypatch.setattr(speed, "measure", fake)
    per_epoch, _, precision = speed.measure_fastest(
        "xception", None, 96, {}, False, 32, ("fp32", "bf16")
    )
    assert not left, "every reading was taken, and no more"
    assert seen == ["float32", "mixed_bfloat16", "mixed_bfloat16", "float32"][: len(readings)]
    assert precision == chosen
    fp32, bf16 = min(readings[0::3]), min(readings[1:3])
    assert per_epoch == (bf16 if chosen == "bf16" else fp32), "each keeps its faster reading"


def test_one_precision_is_timed_once_the_short_way(monkeypatch):
    calls = []
    monkeypatch.setattr(
        speed, "measure", lambda *a, seconds=None: calls.append(seconds) or (10.0, 5.0)
    )
    assert speed.measure_fastest("resnet", None, 96, {}, False, 32, ("fp32",)) == (
        10.0,
        5.0,
        "fp32",
    )
    assert calls == [None]


def test_cpu_flags_are_read_where_linux_lists_them_and_assumed_absent_elsewhere(monkeypatch):
    import builtins

    from catdog import runtime

    real_open = builtins.open

    def no_proc(path, *args, **kwargs):
        if str(path) == "/proc/cpuinfo":
            raise FileNotFoundError(path)  # macOS, Windows
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_proc)
    assert runtime.cpu_flags() == frozenset()
    assert not runtime.cpu_has_amx() and not runtime.cpu_has_bf16()
    monkeypatch.setattr(runtime, "gpus", lambda: [])
    assert runtime.precision_candidates("auto") == ("fp32",)


def test_auto_times_bf16_only_on_a_cpu_that_has_it(monkeypatch):
    from catdog import runtime

    monkeypatch.setattr(runtime, "gpus", lambda: [])
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx512f"}))
    assert runtime.precision_candidates("auto") == ("fp32",)
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    assert runtime.precision_candidates("auto") == ("fp32",), (
        "AVX512-BF16 without AMX (the AMD EPYC): fp32, untimed"
    )
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx512_bf16", "amx_bf16"}))
    assert runtime.precision_candidates("auto") == ("fp32", "bf16")
    assert runtime.precision_candidates("fp32") == ("fp32",), "an explicit choice is kept"
    monkeypatch.setattr(runtime, "gpus", lambda: ["GPU:0"])
    assert runtime.precision_candidates("auto") == ("fp16",), "tensor cores: fp16, untimed"


def test_a_sweeps_trials_train_and_record_the_precision_the_plan_chose(
    tiny_prepared, workdir, monkeypatch
):
    import mlflow

    from catdog import runtime, sweepfile
    from catdog.search import sweep
    from catdog.search.tuner import ArchHyperModel

    monkeypatch.setattr(runtime, "cpu_has_amx", lambda: True)
    _policy_speeds(monkeypatch, bf16_seconds=0.05)  # bf16 "faster" here: it is chosen
    built = []
    original = ArchHyperModel.build
    monkeypatch.setattr(
        ArchHyperModel, "build", lambda self, hp: built.append(original(self, hp)) or built[-1]
    )
    cfg = sweepfile.load(
        None,
        archs=("baseline",),
        tuner="random",
        trials=1,
        epochs=1,
        image_size=32,
        batch_size=8,
        data=str(tiny_prepared),
        budget="10m",
        final_fit=False,
        precision="auto",
    )
    result = sweep.run(cfg)
    assert built and built[-1].layers[1].dtype_policy.name == "mixed_bfloat16"
    (trial,) = mlflow.search_runs(
        search_all_experiments=True,
        output_format="list",
        filter_string=f"tags.`catdog.kind` = 'trial' and tags.`catdog.sweep_key` = '{result.key}'",
    )
    assert trial.data.params["precision"] == "bf16"
    parent = mlflow.get_run(result.parent_run_id)
    assert parent.data.params["precision"] == "auto", "the sweep's setting, as asked"
    runtime.set_precision("fp32")
