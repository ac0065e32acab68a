"""Out-of-range input is said next to its box and nothing is computed with another value (issue 23, item 4)."""

from __future__ import annotations

import numpy as np
import pytest
from apptest_helpers import errors, ok, wine_page

from ui.inputs import range_problem

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_range_problem_names_the_range_and_the_value():
    assert range_problem(50, 1, 1437, "m") is None
    assert range_problem(99999, 1, 1437, "m") == (
        "m must be 1 to 1437 (whole numbers); you typed 99999. Nothing is computed until it is in range."
    )
    assert "at least 0" in range_problem(-1.0, 0.0, None, "Damping δ", integer=False)
    assert range_problem(0.5, 0.0, None, "Damping δ", integer=False) is None
    assert "whole number" in range_problem(2.5, 0, 10, "Seed")


@pytest.mark.parametrize(
    "key,value,shown",
    [
        ("inf_m", 99999, "1 to 1437"),
        ("inf_m", 0, "1 to 1437"),
        ("inf_seed", -3, "0 to 1e+06"),
        ("inf_damping", -1.0, "at least 0"),
    ],
)
def test_influence_page_says_the_range_and_computes_nothing(app_page, key, value, shown):
    at = app_page("pages/2_Influence.py")
    ok(at.run())
    at.number_input(key=key).set_value(value)
    ok(at.run())
    assert at.number_input(key=key).value == value  # the typed value stays in its box
    assert any(shown in e.value and "you typed" in e.value for e in at.error)
    assert any("Nothing was computed" in i.value for i in at.info)
    assert not any("Top 8 helpful" in m.value for m in at.markdown)


def test_home_refuses_to_train_with_a_width_of_zero(app_page):
    at = app_page("app.py")
    ok(at.run())
    at.number_input(key="form_hidden").set_value(0)
    at.button(key="FormSubmitter:train_form-Train").click()
    ok(at.run())
    assert any("MLP hidden width must be 2 to 512" in e.value for e in at.error)
    assert any("Nothing was trained" in e.value for e in at.error)


def test_budget_floor_is_the_cheapest_configuration_rounded_down():
    from ui.faithfulness import budget_floor

    rows = [{"m": 64, "solve_seconds": 0.0123, "peak_mb": 351.7}, {"m": 32, "solve_seconds": 0.5, "peak_mb": 900.0}]
    assert budget_floor(rows, "m") == 32
    assert budget_floor(rows, "solve_seconds") == pytest.approx(0.012)  # never above what the cheapest needs
    assert budget_floor(rows, "peak_mb") == 350
    assert budget_floor([{"m": float("nan")}], "m") == 1.0


@pytest.mark.parametrize("value", [0.0, -5.0, 31.0])
def test_faithfulness_budget_below_the_cheapest_configuration_is_said(app_page, value):
    """The budget box has no browser-side bound: a value under the study's smallest m (32 in digits_mlp) stays in
    the box, the allowed range is said under it and no ranking is shown; a value in range ranks again."""
    at = app_page("pages/4_Faithfulness.py")
    at.session_state["faith_study"] = "digits_mlp"
    ok(at.run())
    assert at.radio(key="faith_budget").value == "m"
    at.number_input(key="faith_limit").set_value(value)
    ok(at.run())
    assert at.number_input(key="faith_limit").value == value  # what the student typed stays visible
    assert any("at least 32" in e.value and "you typed" in e.value for e in at.error), [e.value for e in at.error]
    assert any("No ranking" in i.value for i in at.info)
    assert not any("Within Hessian sample size" in m.value for m in at.markdown)
    at.number_input(key="faith_limit").set_value(32.0)
    ok(at.run())
    assert not at.error and any("Within Hessian sample size m ≤ 32" in m.value for m in at.markdown)


def test_removal_default_m_fits_a_small_pool_and_a_larger_one_is_said(app_page, wine_run):
    """The default m is the whole pool when it is below 100; an m outside another class's pool stays in its box
    with the allowed range under it (issue 23: never silently replaced), and nothing runs until it is fixed."""
    from ui.state import get_dataset

    at = wine_page(app_page, wine_run, "pages/3_Class_removal.py")
    dataset = get_dataset(wine_run[0].data)
    pool = int(np.sum(dataset.y_train != 0))
    assert pool < 100
    widget = at.number_input(key="rm_m")
    assert widget.value == pool and f"1 to {pool}" in widget.help
    at.selectbox(key="rm_class").set_value(1)  # another class: another pool
    ok(at.run())
    pool1 = int(np.sum(dataset.y_train != 1))
    assert at.number_input(key="rm_m").value == pool
    if pool > pool1:
        assert any(f"1 to {pool1}" in e.value and f"you typed {pool}" in e.value for e in at.error)
        at.number_input(key="rm_m").set_value(pool1)
        ok(at.run())
    at.slider(key="rm_seeds").set_value(1)
    at.multiselect(key="rm_samplers").set_value([])
    at.button(key="rm_run").click()
    ok(at.run())
    assert not errors(at) and at.session_state["rm_results"]["records"][0]["m"] == min(pool, pool1)
