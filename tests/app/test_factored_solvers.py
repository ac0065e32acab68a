"""The app lists K-FAC, EK-FAC and Arnoldi from the solver registry, and both pages run with them."""

from __future__ import annotations

import pytest
from apptest_helpers import errors, ok

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.mark.parametrize("solver", ["ekfac", "arnoldi"])
def test_influence_page_runs_with_factored_solvers(app_page, solver):
    at = ok(app_page("pages/2_Influence.py").run())
    assert {"kfac", "ekfac", "arnoldi"} <= set(at.selectbox(key="inf_solver").options)
    first = at.dataframe[0].value["Spearman"].tolist()
    at.selectbox(key="inf_solver").set_value(solver)
    ok(at.run())
    assert not errors(at)
    assert any(f"The {solver} solver has no iterations" in i.value for i in at.info)
    comparison = at.dataframe[0].value
    assert comparison["Spearman"].between(-1, 1).all() and comparison["Spearman"].tolist() != first


def test_removal_page_runs_with_ekfac(app_page):
    at = ok(app_page("pages/3_Class_removal.py").run())
    assert {"kfac", "ekfac", "arnoldi"} <= set(at.selectbox(key="rm_solver").options)
    at.selectbox(key="rm_solver").set_value("ekfac")
    at.multiselect(key="rm_samplers").set_value([])
    at.slider(key="rm_seeds").set_value(1)
    at.button(key="rm_run").click()
    ok(at.run())
    assert not errors(at)
    records = at.session_state["rm_results"]["records"]
    assert [r["solver"] for r in records] == ["ekfac"] and 0 <= records[0]["best"]["f1"] <= 1
