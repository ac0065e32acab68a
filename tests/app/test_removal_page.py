"""The Class removal page (AppTest): Run pressed twice with the same settings, or from two sessions, shows the
cached results (a cache hit crashed with CacheReplayClosureError before), the records a session gets are copies of
the shared cache, and the page's formula is rendered as math."""

from __future__ import annotations

import pytest
from apptest_helpers import errors, ok, progress_bars, run_removal

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_removal_pressed_twice_with_the_same_settings_shows_results(app_page):
    at = ok(app_page("pages/3_Class_removal.py").run())
    run_removal(at)
    first = at.session_state["rm_results"]["records"]
    at.button(key="rm_run").click()  # the same settings again: a cache hit (crashed with CacheReplayClosureError)
    ok(at.run())
    assert not errors(at)
    again = at.session_state["rm_results"]["records"]
    assert [r["sampler"] for r in again] == ["random", "logit"]
    assert [r["best"]["f1"] for r in again] == [r["best"]["f1"] for r in first]
    assert any(m.label == "Reference F1" for m in at.metric) and not progress_bars(at)


def test_removal_same_settings_from_two_sessions(app_page):
    """Two AppTest sessions in one process share the app's caches, as two browser sessions on one server do."""
    one = ok(app_page("pages/3_Class_removal.py").run())
    two = ok(app_page("pages/3_Class_removal.py").run())
    run_removal(one)
    run_removal(two)  # the second session hits what the first computed
    for at in (one, two):
        assert not errors(at)
        assert list(at.dataframe[0].value.sampler) == ["random", "logit"]
    assert one.session_state["rm_results"]["records"] == two.session_state["rm_results"]["records"]


def test_removal_records_are_copies_of_the_shared_cache(trained_fast_run):
    from ui.state import removal_run

    args = (trained_fast_run, 1, "random", 30, 0, "cg", 0.01, False, False)
    calls = []
    first = removal_run(*args, progress=lambda f, msg: calls.append(f))
    first["best"]["f1"] = -1.0  # a caller mutating its record must not change what another session gets
    second = removal_run(*args, progress=lambda f, msg: calls.append("hit"))
    assert second["best"]["f1"] >= 0 and "hit" not in calls  # a hit never calls the (element-updating) callback


def test_formula_is_rendered_as_math(app_page):
    at = ok(app_page("pages/3_Class_removal.py").run())
    text = " ".join(m.value for m in at.markdown)
    assert "Σ_{j in c}" not in text and r"\sum_{j \in c}" in text and "$" in text
    assert at.toggle(key="rm_memory").label == "Peak memory"
