"""Budget first: durations, and plans that fit the budget whatever the architectures' speeds."""

from __future__ import annotations

import pytest

from catdog import plan
from catdog.errors import CatdogError


@pytest.mark.parametrize("text, seconds", [("45m", 2700), ("2h", 7200), ("1h30m", 5400),
                                           ("90s", 90), (30, 1800), (0.5, 30), (None, None)])
def test_budgets_are_durations(text, seconds):
    assert plan.parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["an hour", "45", "-5m", "0m", "m", True])
def test_a_budget_that_is_not_a_duration_is_refused(text):
    with pytest.raises(CatdogError, match="budget"):
        plan.parse_budget(text)


SPEEDS = {"fast": (10.0, 8.0), "medium": (30.0, 10.0), "slow": (90.0, 12.0)}


@pytest.mark.parametrize("budget", [600, 2700, 7200, 36000])
def test_a_plan_fits_its_budget(budget):
    p = plan.make_plan(SPEEDS, trials=10, epochs=20, budget=budget, repeats=0,
                       measured_seconds=60)
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
    assert sum(a.trials for a in with_repeats.archs.values()) < \
        sum(a.trials for a in without.archs.values())


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
