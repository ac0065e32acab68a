"""Settings survive page switches, reloads and shared links (issue 23, item 3): ui.url_state's encoding and
restore rules, and AppTests of a page switch and of a URL opened in a new session."""

from __future__ import annotations

import pytest
from apptest_helpers import ok

from ui.config import DataConfig, RunConfig, run_from_query, run_to_query, upload_in_query
from ui.url_state import PAGE_SETTINGS, decode, encode, restored

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_values_round_trip_and_bad_text_is_ignored():
    for value, kind in (
        (7, int),
        (0.01, float),
        (True, bool),
        (False, bool),
        ("importance", str),
        (["random", "feature"], list),
    ):
        assert decode(encode(value), kind) == value
    assert decode("seven", int) is None and decode("nan", float) is None and decode("maybe", bool) is None


def test_restore_prefers_the_session_then_its_copy_then_the_url():
    query = {"inf_a": "importance", "inf_m": "400", "inf_b": "no_such_sampler", "inf_seed": "x"}
    out = restored("influence", {"inf_m": 50}, {"inf_seed": 3}, query)
    assert out == {"inf_a": "importance", "inf_seed": 3}  # inf_m kept, bad sampler and bad seed ignored
    assert set(PAGE_SETTINGS["influence"]) >= {"inf_a", "inf_b", "inf_m", "inf_seed", "inf_index"}


def test_an_upload_names_itself_in_the_url():
    run = RunConfig(data=DataConfig(name="npz", npz_digest="ab" * 32, npz_filename="mine.npz"))
    query = run_to_query(run)
    assert query["data"] == "upload" and query["file"] == "mine.npz" and query["sha"] == "ab" * 6
    assert "mine.npz" in upload_in_query(query)
    assert run_from_query(query).data.name == "digits"  # the bytes are not in the URL: default data


def test_influence_settings_survive_a_visit_to_samplers(app_page):
    at = app_page("app.py")
    ok(at.run())
    at.switch_page("pages/2_Influence.py")
    ok(at.run())
    at.selectbox(key="inf_a").set_value("importance")
    at.number_input(key="inf_m").set_value(60)
    ok(at.run())
    at.switch_page("pages/1_Samplers.py")
    ok(at.run())
    at.switch_page("pages/2_Influence.py")
    ok(at.run())
    assert at.selectbox(key="inf_a").value == "importance" and at.number_input(key="inf_m").value == 60
    assert at.query_params["inf_a"] == ["importance"] or at.query_params["inf_a"] == "importance"


def test_a_shared_link_opens_the_same_view(app_page, trained_fast_run):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from ui.config import run_to_query

    at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "pages/2_Influence.py"), default_timeout=300)
    for key, value in {
        **run_to_query(trained_fast_run),
        "inf_a": "feature",
        "inf_m": "70",
        "inf_seed": "2",
        "inf_mode": "by index",
        "inf_index": "9",
    }.items():
        at.query_params[key] = value
    ok(at.run())
    assert at.session_state["run_config"] == trained_fast_run  # the model named by the URL
    assert at.selectbox(key="inf_a").value == "feature" and at.number_input(key="inf_m").value == 70
    assert at.number_input(key="inf_index").value == 9
    assert any("Test point #9" in m.value for m in at.markdown)


def test_choice_is_kept_in_the_url_and_read_back(app_page):
    from ui.config import ModelConfig, RunConfig, run_from_query, run_to_query

    at = app_page("app.py")
    del at.session_state["run_config"]
    at.query_params["data"] = "digits"
    at.query_params["model"] = "logreg"
    at.query_params["epochs"] = "nonsense"  # a malformed value falls back to the default
    ok(at.run())
    run = at.session_state["run_config"]
    assert run.model.arch == "logreg" and run.model.epochs == ModelConfig().epochs
    at.selectbox(key="form_arch").set_value("mlp")
    at.run()  # the hidden width is shown for the MLP only
    at.number_input(key="form_hidden").set_value(8)
    at.number_input(key="form_epochs").set_value(3)
    at.button[0].click()
    ok(at.run())
    assert at.query_params["model"] in ("mlp", ["mlp"]) and at.query_params["hidden"] in ("8", ["8"])
    trained = RunConfig(model=ModelConfig(hidden=8, epochs=3))
    assert run_from_query(run_to_query(trained)) == trained
